"""Tiny random-weight causal LMs with a real tokenizer, built locally (no model hub).

Tests, CI and CPU smoke runs need a model that loads through exactly the same code paths as a
real one (HF directory, safetensors, tokenizer with a chat template). A byte-level BPE trained on
a few kilobytes of text and a 2-layer Llama are enough, and build in about a second.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

# Qwen-style chat template (ChatML), so the chat prompt style is exercised too.
CHATML_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

DEFAULT_CORPUS = [
    "问题：什么是数据并行性？\n答案：数据并行性是指将计算围绕数据组织，让多个线程同时处理不同的数据元素。",
    "问题：CUDA kernel 如何计算全局索引？\n答案：i = blockIdx.x * blockDim.x + threadIdx.x。",
    "问题：什么是 shared memory tiling？\n答案：把 tile 从 global memory 载入 shared memory，TILE_WIDTH=16 时减少访存。",
    "The warp is the unit of thread scheduling in an SM; 32 threads execute in SIMD fashion.",
    "Memory coalescing combines accesses of consecutive threads into one DRAM transaction.",
    "卷积 convolution、归约 reduction、前缀和 prefix sum、稀疏矩阵 SpMV、GEMM 与 Triton。",
]

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"]


def build_tokenizer(out_dir: Path, corpus: Iterable[str] = DEFAULT_CORPUS, vocab_size: int = 600):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|pad|>",
        bos_token=None,
        unk_token=None,
    )
    fast.chat_template = CHATML_TEMPLATE
    fast.save_pretrained(str(out_dir))
    return fast


def build_tiny_model(
    out_dir: str | Path,
    *,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    hidden_size: int = 64,
    num_layers: int = 2,
    seed: int = 0,
) -> Path:
    """Write a random-weight Llama-architecture model + tokenizer to `out_dir` and return it."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(out, corpus)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    model.save_pretrained(str(out))
    (out / "tiny.json").write_text(json.dumps({"kind": "tiny-random", "seed": seed}) + "\n")
    return out
