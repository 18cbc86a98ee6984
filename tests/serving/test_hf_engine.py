"""The transformers engine's decode settings: frequency_penalty with vLLM's semantics."""

from __future__ import annotations

import pytest
import torch

from tournament.serving.config import DecodeSettings, EngineSettings, ModelRef
from tournament.serving.engines.hf_engine import FrequencyPenalty, HFEngine


def test_frequency_penalty_counts_output_tokens_only():
    # prompt = the first 2 columns; output so far: row 0 = 3 9 3, row 1 = 1 1 1
    ids = torch.tensor([[5, 7, 3, 9, 3], [5, 5, 1, 1, 1]])
    scores = torch.zeros(2, 10)
    out = FrequencyPenalty(0.5, prompt_len=2)(ids, scores.clone())
    want = torch.zeros(2, 10)
    want[0, 3], want[0, 9] = -1.0, -0.5  # 3 twice, 9 once; 5 and 7 are prompt-only: untouched
    want[1, 1] = -1.5  # 1 three times; 5 (twice in the prompt) untouched
    assert torch.equal(out, want)
    neg = FrequencyPenalty(-0.25, prompt_len=2)(ids, torch.zeros(2, 10))  # vLLM allows < 0: a bonus
    assert neg[0, 3] == 0.5 and neg[1, 1] == 0.75
    first = FrequencyPenalty(0.5, prompt_len=5)(ids, torch.ones(2, 10))  # nothing generated yet
    assert torch.equal(first, torch.ones(2, 10))


@pytest.fixture(scope="module")
def engine(tiny_model_dir):
    return HFEngine(tiny_model_dir, ModelRef(path=str(tiny_model_dir)),
                    EngineSettings(engine="transformers", device="cpu", batch_size=4, max_model_len=512))


def _output_ids(engine, prompt: str, decode: DecodeSettings) -> list[int]:
    enc = engine.tokenizer([prompt], return_tensors="pt")
    with torch.inference_mode():
        gen = engine.model.generate(**enc, **engine._gen_kwargs(decode, enc["input_ids"].shape[1]))
    return gen[0, enc["input_ids"].shape[1]:].tolist()


def test_engine_applies_frequency_penalty(engine):
    prompts = ["什么是 warp？", "解释 memory coalescing"]
    plain = DecodeSettings(max_tokens=16, stop=[])
    penalised = plain.model_copy(update={"frequency_penalty": 2.0})
    base_ids = _output_ids(engine, prompts[0], plain)
    assert len(set(base_ids)) < len(base_ids)  # the random tiny model repeats itself under greedy
    assert engine.generate(prompts, penalised) != engine.generate(prompts, plain)
    strong = _output_ids(engine, prompts[0], plain.model_copy(update={"frequency_penalty": 1e4}))
    assert len(strong) == len(set(strong))  # a used token is never chosen again
