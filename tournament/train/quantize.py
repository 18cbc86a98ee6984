"""Checkpoint quantization with llm-compressor (compressed-tensors format, loaded by vLLM).

Two ways a candidate gets quantized (see docs/training.md for the reasoning):

- ``quantization: {method: fp8}`` (mode ``engine``, the default for fp8): nothing happens here. The
  bf16 weights are served with ``LLM(quantization="fp8")``: vLLM quantizes Linear weights to FP8
  per-tensor on load and activations dynamically. No calibration, no extra dependency, the same
  call in vLLM 0.10 and current releases; needs FP8 hardware (Ada/Hopper/Blackwell; Turing/Ampere
  run it weight-only through Marlin).
- ``mode: checkpoint``: this module writes a compressed-tensors checkpoint with llm-compressor:
  fp8 -> scheme ``FP8_DYNAMIC`` (per-channel FP8 weights, dynamic per-token activations; no
  calibration data); gptq -> ``GPTQModifier`` W4A16; awq -> ``AWQModifier`` W4A16 (both calibrated
  on prompt+answer texts of the candidate's dataset). vLLM detects the format from
  ``config.json`` (``quantization_config.quant_method == "compressed-tensors"``).

llm-compressor is not a dependency of tournament (it pins its own torch/transformers); install it
in the training environment with ``pip install llmcompressor``.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

SCHEMES = {"fp8": "FP8_DYNAMIC", "gptq": "W4A16", "awq": "W4A16"}


class QuantizationUnavailable(RuntimeError):
    pass


def _require_llmcompressor():
    try:
        import llmcompressor  # noqa: F401
        from llmcompressor import oneshot
    except ImportError as e:
        raise QuantizationUnavailable(
            "checkpoint quantization needs llm-compressor: `pip install llmcompressor` in the training "
            "environment (or use `quantization: {method: fp8, mode: engine}`, which needs nothing: vLLM "
            f"quantizes on load). Import error: {e}") from None
    return oneshot


def recipe_for(method: str, scheme: str | None = None):
    """The llm-compressor modifier for a method (lm_head stays in bf16, as vLLM expects)."""
    scheme = scheme or SCHEMES[method]
    if method == "fp8":
        from llmcompressor.modifiers.quantization import QuantizationModifier

        return QuantizationModifier(targets="Linear", scheme=scheme, ignore=["lm_head"])
    if method == "gptq":
        from llmcompressor.modifiers.quantization import GPTQModifier

        return GPTQModifier(targets="Linear", scheme=scheme, ignore=["lm_head"])
    if method == "awq":
        from llmcompressor.modifiers.awq import AWQModifier

        return AWQModifier(targets="Linear", scheme=scheme, ignore=["lm_head"])
    raise ValueError(f"unknown quantization method {method!r} (none|fp8|awq|gptq)")


def quantize_model(
    model_dir: Path,
    out_dir: Path,
    method: str,
    *,
    scheme: str | None = None,
    calibration: list[str] | None = None,
    max_seq_length: int = 1024,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """Write a compressed-tensors checkpoint of `model_dir` to `out_dir` and return it."""
    if method not in SCHEMES:
        raise ValueError(f"unknown quantization method {method!r} (fp8|awq|gptq; none needs no call)")
    if method in ("gptq", "awq") and not calibration:
        raise ValueError(f"{method} needs calibration texts (give the candidate a recipe.dataset)")
    oneshot = _require_llmcompressor()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype="auto")
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    recipe = recipe_for(method, scheme)
    kwargs = {}
    if calibration and method != "fp8":
        from datasets import Dataset

        ds = Dataset.from_dict({"text": calibration})
        ds = ds.map(lambda b: tokenizer(b["text"], truncation=True, max_length=max_seq_length,
                                        add_special_tokens=False), batched=True, remove_columns=["text"])
        kwargs = {"dataset": ds, "max_seq_length": max_seq_length, "num_calibration_samples": len(calibration)}
    log(f"quantizing {model_dir} with llm-compressor ({method}, {scheme or SCHEMES[method]})")
    oneshot(model=model, recipe=recipe, **kwargs)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp), save_compressed=True)
    tokenizer.save_pretrained(str(tmp))
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    return out_dir
