"""transformers `generate` engine: batched, left padding, CPU or GPU (and torch_musa's "musa").

The engine for tests, CPU-only users and the Moore Threads track (no vLLM there)."""

from __future__ import annotations

import logging
from pathlib import Path

from tournament.machine import pick_device
from tournament.prompting import starts_with_bos
from tournament.serving.config import DecodeSettings, EngineSettings, ModelRef

log = logging.getLogger(__name__)


def _dtype(name: str, device: str):
    import torch

    if name in ("auto", None):
        return torch.float32 if device == "cpu" else torch.bfloat16
    return {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
            "half": torch.float16, "float32": torch.float32, "fp32": torch.float32, "float": torch.float32}[name]


class FrequencyPenalty:
    """vLLM's `frequency_penalty` for transformers' generate (which has none): each token's logit
    drops by penalty x its count in the output so far. Prompt tokens (the first `prompt_len`
    columns: left padding makes that the same for every row) do not count."""

    def __init__(self, penalty: float, prompt_len: int):
        self.penalty, self.prompt_len = penalty, prompt_len

    def __call__(self, input_ids, scores):
        import torch

        out = input_ids[:, self.prompt_len :]
        if out.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, out, torch.ones_like(out, dtype=scores.dtype))
        return scores - self.penalty * counts


class HFEngine:
    name = "transformers"

    def __init__(self, model_dir: Path, model: ModelRef, settings: EngineSettings):
        import torch
        from transformers import AutoTokenizer

        self.settings = settings
        self.device = pick_device(settings.device)
        if settings.num_threads and self.device == "cpu":
            torch.set_num_threads(settings.num_threads)
        kwargs = {"gguf_file": model.gguf_file} if model.gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(str(model_dir), **kwargs)
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
        self.tokenizer.truncation_side = "left"  # an over-long prompt keeps its "答案：" end
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = self._load(model_dir, model)
        self.max_len = settings.max_model_len
        gen_eos = self.model.generation_config.eos_token_id
        eos = set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_ids = sorted(eos)
        torch.manual_seed(settings.seed)

    def _load(self, model_dir: Path, model: ModelRef):
        from transformers import AutoModelForCausalLM

        kwargs = {"gguf_file": model.gguf_file} if model.gguf_file else {}
        loaded = AutoModelForCausalLM.from_pretrained(
            str(model_dir), dtype=_dtype(self.settings.dtype, self.device), **kwargs).to(self.device)
        return loaded.eval()

    def load_weights(self, model_dir: Path) -> None:
        """Sweep-only: another build of the same architecture and tokenizer (the sweep checks
        both) in place of this one; the tokenizer and the settings stay."""
        self.model = self._load(model_dir, ModelRef())

    def _gen_kwargs(self, decode: DecodeSettings, prompt_len: int) -> dict:
        kw = {
            "max_new_tokens": max(1, min(decode.max_tokens, self.max_len - prompt_len)),
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.tokenizer.pad_token_id,
            "repetition_penalty": decode.repetition_penalty,
        }
        if decode.temperature > 0:
            kw.update(do_sample=True, temperature=decode.temperature, top_p=decode.top_p,
                      top_k=decode.top_k if decode.top_k > 0 else 0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        if decode.frequency_penalty:
            from transformers import LogitsProcessorList

            # custom processors run after the repetition penalty and before temperature/top-p, as in vLLM
            kw["logits_processor"] = LogitsProcessorList([FrequencyPenalty(decode.frequency_penalty, prompt_len)])
        return kw

    def generate(self, prompts: list[str], decode: DecodeSettings) -> list[str]:
        import torch

        if decode.seed is not None:
            torch.manual_seed(decode.seed)
        # Longest first keeps padding waste low inside each batch; results go back in order.
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
        out: list[str] = [""] * len(prompts)
        budget = max(16, self.max_len - decode.max_tokens)
        bs = self.settings.batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            enc = self.tokenizer(
                [prompts[i] for i in idx], return_tensors="pt", padding=True,
                truncation=True, max_length=budget, add_special_tokens=not starts_with_bos(self.tokenizer, prompts[idx[0]]),
            ).to(self.device)
            with torch.inference_mode():
                gen = self.model.generate(**enc, **self._gen_kwargs(decode, enc["input_ids"].shape[1]))
            new = gen[:, enc["input_ids"].shape[1] :]
            texts = self.tokenizer.batch_decode(new, skip_special_tokens=True)
            for i, t in zip(idx, texts):
                out[i] = t
        return out

    def close(self) -> None:
        self.model = None

