"""vLLM engine: offline `vllm.LLM` in-process, one `generate` call per batch.

Only the API shared by vLLM 0.10 (the MetaX judge) and current releases is used (docs/judge.md):
LLM(model, dtype, quantization, gpu_memory_utilization, enforce_eager, max_model_len,
max_num_seqs, max_num_batched_tokens, enable_prefix_caching, kv_cache_dtype, seed,
enable_chunked_prefill, async_scheduling, compilation_config), SamplingParams(temperature, top_p,
top_k, max_tokens, stop, repetition_penalty, frequency_penalty, seed) and token-id prompts. Prompts are tokenized here and
cut from the left to fit max_model_len - max_tokens, so one over-long question cannot fail a whole
batch. `compilation_config` (a dict, only when set) goes through `portable_compilation_config`:
its keys differ between versions (`level` in 0.10, `mode` since 0.11; `cudagraph_mode` since
0.10.2, where 0.10.0/0.10.1 had `use_cudagraph` / `full_cuda_graph`), and vLLM 0.10 drops a key it
does not know without a word, so a key the installed vLLM lacks stops the server here instead.
Every other argument is checked against the installed vLLM's EngineArgs the same way
(`vllm_llm_kwargs`; the settings unset by default are passed only when set).
vLLM has no public shutdown: one engine configuration per process (the sweep starts a new
server for each engine setting). Within one engine configuration the sweep swaps builds of the same
architecture in place (`load_weights`, vLLM's `reload_weights(weights_path=...)`, 0.11 and later):
the judge never calls it."""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path
from typing import Any, Iterable

from tournament.prompting import starts_with_bos
from tournament.serving.config import DecodeSettings, EngineSettings, ModelRef

log = logging.getLogger(__name__)

# CompilationConfig.mode (vLLM >= 0.11) and .level (vLLM 0.10) take the same numbers.
_MODE_NAMES = {"NONE": 0, "NO_COMPILATION": 0, "STOCK_TORCH_COMPILE": 1, "DYNAMO_AS_IS": 1,
               "DYNAMO_TRACE_ONCE": 2, "DYNAMO_ONCE": 2, "VLLM_COMPILE": 3, "PIECEWISE": 3}


def portable_compilation_config(cfg: dict[str, Any], fields: set[str], version: str = "?") -> dict[str, Any]:
    """`cfg` with `mode`/`level` renamed to whichever of the two `fields` (the installed vLLM's
    CompilationConfig fields) holds; a ValueError naming the key and `version` for any other key
    that vLLM lacks. A named mode ("NONE", "VLLM_COMPILE", ...) becomes its number when renamed."""
    out = dict(cfg)
    if "mode" in out and "level" in out:
        raise ValueError("compilation_config: give `mode` or `level`, not both (the same setting: `level` "
                         "in vLLM 0.10, `mode` since 0.11)")
    for given, other in (("mode", "level"), ("level", "mode")):
        if given in out and given not in fields and other in fields:
            v = out.pop(given)
            out[other] = _MODE_NAMES.get(v.upper(), v) if isinstance(v, str) else v
    missing = sorted(k for k in out if k not in fields)
    if missing:
        hint = ""
        if "cudagraph_mode" in missing and {"use_cudagraph", "full_cuda_graph"} & fields:
            hint = " (vLLM before 0.10.2 has use_cudagraph / full_cuda_graph instead of cudagraph_mode)"
        raise ValueError(f"compilation_config: vLLM {version} has no {', '.join(missing)}{hint}; "
                         f"its CompilationConfig takes: {', '.join(sorted(fields))}")
    return out


def argument_fields(cls: type) -> set[str]:
    """The keyword arguments a vLLM config class (EngineArgs, CompilationConfig) takes: its
    dataclass fields (plain dataclasses in vLLM 0.10, pydantic dataclasses in current releases)
    or a pydantic model's fields."""
    if dataclasses.is_dataclass(cls):
        return {f.name for f in dataclasses.fields(cls) if f.init}
    return set(getattr(cls, "model_fields", {}))


compilation_config_fields = argument_fields  # the name the compilation tests know

# EngineSettings passed to vllm.LLM under their own name only when set (None: vLLM's default).
_WHEN_SET = ("quantization", "max_num_batched_tokens", "enable_chunked_prefill", "async_scheduling")


def vllm_llm_kwargs(settings: EngineSettings, model: str, tokenizer: str | None, engine_fields: Iterable[str],
                    compilation_fields: Iterable[str], version: str = "?") -> dict[str, Any]:
    """The `vllm.LLM(**kwargs)` of `settings`, checked against the installed vLLM's argument names
    (`engine_fields`: its EngineArgs fields; `compilation_fields`: its CompilationConfig fields).
    A setting that vLLM `version` lacks is a ValueError naming the setting and the version: vLLM
    would refuse it with a TypeError far from the setting, or (compilation_config keys in 0.10)
    drop it without a word. Pure: tests call it with the field sets of other versions."""
    engine_fields, compilation_fields = set(engine_fields), set(compilation_fields)
    kwargs: dict[str, Any] = dict(
        model=model, dtype=settings.dtype, gpu_memory_utilization=settings.gpu_memory_utilization,
        enforce_eager=settings.enforce_eager, max_model_len=settings.max_model_len,
        max_num_seqs=settings.max_num_seqs, enable_prefix_caching=settings.enable_prefix_caching,
        kv_cache_dtype=settings.kv_cache_dtype, seed=settings.seed,
    )
    if tokenizer:
        kwargs["tokenizer"] = tokenizer
    for name in _WHEN_SET:
        value = getattr(settings, name)
        if value is not None and value != "":
            kwargs[name] = value
    compilation = dict(settings.compilation_config or {})
    if settings.cudagraph_capture_sizes is not None:
        if "cudagraph_capture_sizes" not in compilation_fields:
            raise ValueError(f"engine.cudagraph_capture_sizes: vLLM {version}'s CompilationConfig has no "
                             "cudagraph_capture_sizes; leave the setting unset (null) for this vLLM")
        compilation["cudagraph_capture_sizes"] = sorted(set(settings.cudagraph_capture_sizes))
    if settings.compilation_config is not None or settings.cudagraph_capture_sizes is not None:
        try:
            kwargs["compilation_config"] = portable_compilation_config(compilation, compilation_fields, version)
        except ValueError as e:
            raise ValueError(f"engine.{e}") from None
    missing = [k for k in kwargs if k not in engine_fields]
    if missing:
        raise ValueError(f"engine.{', engine.'.join(missing)}: vLLM {version} has no such engine argument "
                         f"({', '.join(missing)}); leave the setting unset (null) for this vLLM, or run a vLLM "
                         "that has it (docs/judge.md lists which versions do)")
    return kwargs


class VLLMEngine:
    name = "vllm"

    def __init__(self, model_dir: Path, model: ModelRef, settings: EngineSettings):
        # Offline by construction: the judge's run stage has no network.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("VLLM_NO_USAGE_STATS", "1")
        from vllm import LLM

        self.settings = settings
        import vllm
        from vllm.config import CompilationConfig
        from vllm.engine.arg_utils import EngineArgs

        kwargs = vllm_llm_kwargs(
            settings, str(model_dir / model.gguf_file) if model.gguf_file else str(model_dir),
            str(model_dir) if model.gguf_file else None, argument_fields(EngineArgs),
            argument_fields(CompilationConfig), getattr(vllm, "__version__", "?"))
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()

    def _params(self, decode: DecodeSettings):
        from vllm import SamplingParams

        return SamplingParams(
            temperature=decode.temperature,
            top_p=decode.top_p,
            top_k=decode.top_k if decode.top_k > 0 else -1,
            max_tokens=decode.max_tokens,
            repetition_penalty=decode.repetition_penalty,
            frequency_penalty=decode.frequency_penalty,
            stop=list(decode.stop) or None,  # stop early: saves the tokens we would cut anyway
            seed=decode.seed,
        )

    def _token_prompts(self, prompts: list[str], max_tokens: int) -> list[dict]:
        budget = max(16, self.settings.max_model_len - max_tokens)
        out = []
        for prompt in prompts:
            ids = self.tokenizer.encode(prompt, add_special_tokens=not starts_with_bos(self.tokenizer, prompt))
            out.append({"prompt_token_ids": ids[-budget:]})
        return out

    def generate(self, prompts: list[str], decode: DecodeSettings) -> list[str]:
        outputs = self.llm.generate(self._token_prompts(prompts, decode.max_tokens), self._params(decode), use_tqdm=False)
        return [o.outputs[0].text for o in outputs]

    def reset_prefix_cache(self) -> bool:
        """`LLM.reset_prefix_cache()` (vLLM 0.10 and current): False when there is none to reset."""
        reset = getattr(self.llm, "reset_prefix_cache", None)
        return bool(reset()) if callable(reset) and self.settings.enable_prefix_caching else False

    def load_weights(self, model_dir: Path) -> None:
        """Sweep-only: another build's weights into this engine, in place. vLLM's layer-wise
        reload (`reload_weights` in the worker) loads the checkpoint, re-runs the load-time
        processing (an on-the-fly quantization too) and copies the result into the tensors the
        model already has, so its compiled graphs and CUDA graphs stay valid. The prefix cache
        holds KV blocks the old weights computed: emptied. vLLM 0.10 has no such reload (its
        worker takes no `weights_path`): the error says so and the sweep starts a server instead."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(model_dir)})
        reset = getattr(self.llm, "reset_prefix_cache", None)
        if callable(reset) and self.settings.enable_prefix_caching and not reset():
            raise RuntimeError("the prefix cache could not be emptied after the weights changed")

    def close(self) -> None:
        self.llm = None
