"""Engines behind one interface: `generate(prompts, decode) -> texts` (raw continuations).

`load_engine` imports the engine's library only when that engine is asked for, so the judge
image never needs transformers' generate path when it runs vLLM, and tests never need vLLM."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from tournament.serving.config import DecodeSettings, EngineSettings, ModelRef


class Engine(Protocol):
    name: str
    tokenizer: object

    def generate(self, prompts: list[str], decode: DecodeSettings) -> list[str]:
        """Return one raw continuation per prompt, in order."""
        ...

    def close(self) -> None: ...


def reset_prefix_cache(engine: Engine) -> bool:
    """Empty the engine's prefix cache (vLLM's KV blocks kept for repeated prompt prefixes), so the
    next batch is timed as a fresh server would answer it; False for an engine without one."""
    reset = getattr(engine, "reset_prefix_cache", None)
    return bool(reset()) if callable(reset) else False


def load_weights(engine: Engine, model_dir: Path) -> None:
    """Sweep-only: put another build's weights (same architecture, same tokenizer) into the
    running engine, so a new recipe is measured without a server start. An engine that cannot
    raises NotImplementedError (the sweep then starts a new server)."""
    swap = getattr(engine, "load_weights", None)
    if not callable(swap):
        raise NotImplementedError(f"the {engine.name} engine cannot swap weights")
    swap(Path(model_dir))


def load_engine(model_dir: Path, model: ModelRef, settings: EngineSettings) -> Engine:
    if settings.engine == "vllm":
        from tournament.serving.engines.vllm_engine import VLLMEngine

        return VLLMEngine(model_dir, model, settings)
    if settings.engine == "transformers":
        from tournament.serving.engines.hf_engine import HFEngine

        return HFEngine(model_dir, model, settings)
    raise ValueError(f"unknown engine {settings.engine!r}")
