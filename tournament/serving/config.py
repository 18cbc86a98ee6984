"""What serve.py serves: one `ServeConfig`, read from winner.json and then from the environment.

Every setting is documented once, here (the README links this file). Precedence, lowest first:
1. the defaults below;
2. ``winner.json`` (path from ``TOURNAMENT_WINNER``, default ``winner.json`` beside serve.py;
   ``TOURNAMENT_WINNER=none`` ignores it), its ``serve`` object. The default file may be missing
   (then the defaults, and the log says so); a file named by ``TOURNAMENT_WINNER`` must exist, and a file that is not
   a JSON object with a ``serve`` object stops the server with a message naming it;
3. ``TOURNAMENT_SERVE_CONFIG``: a JSON object deep-merged over the result (experiments, sweeps);
4. single variables for the common cases: ``TOURNAMENT_MODEL_PATH``, ``TOURNAMENT_ENGINE``,
   ``TOURNAMENT_MODE`` (batch|serial), ``TOURNAMENT_MAX_TOKENS``, ``TOURNAMENT_DEVICE``.

Before the engine loads, `check_model_folder` checks the model folder (exists, a folder, holds a
tokenizer). Every start-up problem is one `WinnerFileError` naming the setting, the file or
variable it came from, and the fix; serve.py logs it in one line and exits with code 3.

``TOURNAMENT_SWEEP_MODE=1`` (never set in a judge image) enables ``POST /admin/config``, which lets
a sweep change decode settings and the serving mode of a running server between trials.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from tournament.paths import REPO_ROOT
from tournament.prompting import PromptSpec

log = logging.getLogger("tournament.serve")

# The dtype names both engines take (vLLM's `dtype` choices, plus bf16/fp32 for transformers).
DTYPES = ("auto", "bfloat16", "bf16", "float16", "half", "float32", "fp32", "float")
# A model folder holds one of these when its tokenizer is there (transformers' and vLLM's loaders).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json", "spiece.model")


class ModelRef(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Where the weights are at serve time; relative paths are relative to the winner.json folder.
    path: str = "models/winner"
    # Where download_model.py fetches them from at image build time (public ModelScope repo).
    modelscope_id: str | None = None
    revision: str | None = None
    # A GGUF file inside `path` (transformers dequantizes it on load); None for HF directories.
    gguf_file: str | None = None


class EngineSettings(BaseModel):
    """Engine start-up settings. Changing any of them needs a new server process."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["vllm", "transformers"] = "vllm"
    dtype: str = "auto"
    # vLLM (the subset shared by vLLM 0.10 and current releases; see docs/judge.md). Every one
    # below is a `vllm.LLM` argument of the same name in vLLM 0.10.0 (the MetaX judge) and 0.26;
    # the engine checks them against the installed vLLM's EngineArgs and stops with a message
    # naming the setting and the version when one is missing (vllm_engine.vllm_llm_kwargs).
    quantization: str | None = None  # "fp8": weights quantized to fp8 on load (0.10.0 and 0.26)
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0)
    enforce_eager: bool = False
    max_model_len: int = Field(2048, ge=64)
    # Sequences decoded together. The judge sends 292 (basic) or 358 (bonus) questions in one
    # batch: below that the rest wait for a free slot.
    max_num_seqs: int = Field(256, ge=1)
    # Tokens per engine step (prefill chunks + decodes); None: vLLM's default for the GPU.
    max_num_batched_tokens: int | None = None
    enable_prefix_caching: bool = True
    kv_cache_dtype: str = "auto"  # "fp8": an fp8 KV cache (0.10.0 and 0.26)
    seed: int = 0
    # The batch sizes to capture CUDA graphs for, exactly this list; None: vLLM's default (0.10.0:
    # 1, 2, 4, then every 8 up to min(2 x max_num_seqs, 512); 0.26: every 8 to 256, then every 16).
    # A step of n running sequences replays the smallest captured size >= n (padded) and runs
    # without a graph above the largest, so list the judge's batch (292, 358) AND small sizes:
    # [292, 358] alone pads the last few sequences of a batch to 292. Passed as
    # compilation_config.cudagraph_capture_sizes, the one spelling that means the same in 0.10.0
    # and 0.26 (the engine argument is `cuda_graph_sizes` in 0.10-0.12, where a single value means
    # "every 8 up to it", and `cudagraph_capture_sizes` in 0.26). Sizes above
    # max_num_batched_tokens are refused (0.10.0 fails the capture, 0.26 drops them).
    cudagraph_capture_sizes: list[int] | None = Field(None, min_length=1)
    # Split prompt prefill into chunks scheduled together with decodes; None: vLLM's default (on).
    # Engine argument in 0.10.0 and 0.26, but vLLM 0.10.0's V1 engine always chunks a generating
    # model's prefill and ignores false (`tournament images check` warns); 0.26 honours false.
    enable_chunked_prefill: bool | None = None
    # Schedule step n+1 while step n runs on the GPU; None: vLLM's default (0.10.0: off; 0.26: on
    # where supported). Engine argument since 0.10.0 (experimental there: it runs the engine
    # with the multiprocessing executor).
    async_scheduling: bool | None = None
    # vLLM's torch.compile / CUDA-graph settings, passed as `LLM(compilation_config=...)`; None:
    # vLLM's default (compile with inductor, then capture CUDA graphs). `mode` (0-3, current vLLM)
    # and `level` (vLLM 0.10) are the same setting and renamed to what the installed vLLM has; any
    # other key the installed vLLM lacks stops the server with a message naming it (vllm_engine.py).
    # Example: {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"} (CUDA graphs without the compile).
    compilation_config: dict[str, Any] | None = None
    # transformers
    device: str = "auto"  # auto | cpu | cuda | cuda:N | musa
    batch_size: int = Field(32, ge=1)
    num_threads: int | None = None

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, v: str) -> str:
        if v not in DTYPES:
            raise ValueError(f"dtype {v!r} is not one of {', '.join(DTYPES)}")
        return v

    @model_validator(mode="after")
    def _capture_sizes(self) -> "EngineSettings":
        sizes = self.cudagraph_capture_sizes
        if sizes is None:
            return self
        if any(n < 1 for n in sizes):
            raise ValueError(f"cudagraph_capture_sizes must be batch sizes >= 1, not {sizes}")
        if self.compilation_config and "cudagraph_capture_sizes" in self.compilation_config:
            raise ValueError("give cudagraph_capture_sizes or compilation_config.cudagraph_capture_sizes, not both")
        cap = self.max_num_batched_tokens
        if cap is not None and max(sizes) > cap:
            raise ValueError(f"cudagraph_capture_sizes {max(sizes)} > max_num_batched_tokens {cap}: "
                             "vLLM cannot capture a graph larger than one step")
        return self


class DecodeSettings(BaseModel):
    """Per-request decode settings. A sweep may change these without restarting the engine."""

    model_config = ConfigDict(extra="forbid")

    max_tokens: int = Field(256, ge=1)
    temperature: float = Field(0.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = -1  # -1 = off (vLLM's convention; mapped to 0 for transformers)
    repetition_penalty: float = Field(1.0, gt=0.0)
    frequency_penalty: float = 0.0  # vLLM semantics; the transformers engine applies it too (FrequencyPenalty)
    stop: list[str] = Field(default_factory=list)  # added to the prompt template's stop list
    seed: int | None = 0


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: ModelRef = Field(default_factory=ModelRef)
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    engine: EngineSettings = Field(default_factory=EngineSettings)
    decode: DecodeSettings = Field(default_factory=DecodeSettings)
    # What GET / announces: "batch" -> the judge sends one POST with every question.
    mode: Literal["batch", "serial"] = "batch"
    # Generate identical prompts of one batch once (exact under greedy decoding).
    dedup: bool = True
    warmup: bool = True
    # Request limits: beyond these the server answers 413 instead of trying.
    max_batch: int = Field(4096, ge=1)
    max_prompt_chars: int = Field(20000, ge=1)
    # Seconds a POST may take to deliver its body; then 408 and the connection closes (a client
    # that declares a Content-Length and sends less would otherwise hold it open for ever).
    body_timeout_s: float = Field(30.0, gt=0)

    def effective_decode(self) -> DecodeSettings:
        """The decode settings the engine gets: stop strings of the prompt template, then the
        decode's own, each once (answers are cut at the same ones)."""
        stops = list(dict.fromkeys([*self.prompt.stop, *self.decode.stop]))
        return self.decode.model_copy(update={"stop": stops})

    def resolved_model_path(self, base: Path | None = None) -> Path:
        p = Path(self.model.path)
        if not p.is_absolute():
            p = (base or REPO_ROOT) / p
        return p


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class WinnerFileError(ValueError):
    """winner.json (or TOURNAMENT_SERVE_CONFIG) cannot be served; the message names the file and the fix."""


_FIX = "run `tournament pick` again, or set TOURNAMENT_WINNER to a good winner.json"


def winner_path(env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get("TOURNAMENT_WINNER") or REPO_ROOT / "winner.json")


def read_winner_serve(path: Path) -> dict[str, Any]:
    """The ``serve`` object of a winner.json, or a WinnerFileError saying what is wrong and the fix."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise WinnerFileError(f"{path} is not UTF-8 text (bad byte at offset {e.start}); {_FIX}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise WinnerFileError(f"{path} is not valid JSON ({e}); fix it or {_FIX}") from None
    except (RecursionError, ValueError) as e:  # nested too deeply; a number of over 4300 digits
        raise WinnerFileError(f"{path} cannot be parsed ({type(e).__name__}: nested too deeply or a number "
                              f"too large); {_FIX}") from None
    if not isinstance(doc, dict):
        raise WinnerFileError(f'{path} holds a JSON {type(doc).__name__}, not an object with a "serve" object; {_FIX}')
    serve = doc.get("serve")
    if not isinstance(serve, dict):
        found = "no \"serve\" key" if "serve" not in doc else f'"serve" is {json.dumps(serve)[:40]}'
        raise WinnerFileError(f'{path} has no "serve" object ({found}); {_FIX}')
    return serve


def load_serve_config(env: dict[str, str] | None = None) -> tuple[ServeConfig, Path]:
    """Build the effective config; returns it and the folder relative model paths start from.

    A missing default winner.json means the defaults; a winner.json named by TOURNAMENT_WINNER
    must exist (a typo must not silently serve the defaults)."""
    env = dict(os.environ if env is None else env)
    raw: dict[str, Any] = {}
    base = REPO_ROOT
    wp = winner_path(env)
    named = env.get("TOURNAMENT_WINNER")
    source = "the defaults"
    if named != "none":
        if wp.is_dir():
            raise WinnerFileError(f"TOURNAMENT_WINNER={named or wp}: is a folder, not a winner.json file; set it to "
                                  f"the file itself (e.g. {wp / 'winner.json'}) or write one with `tournament pick`")
        if wp.exists():
            try:
                raw, base, source = dict(read_winner_serve(wp)), wp.resolve().parent, str(wp)
            except OSError as e:
                raise WinnerFileError(f"{wp} cannot be read ({e.strerror}); make it readable by the server, "
                                      f"or {_FIX}") from None
        elif named:
            raise WinnerFileError(f"TOURNAMENT_WINNER={named}: no such file; write it with `tournament pick`, "
                                  "or set TOURNAMENT_WINNER=none to serve TOURNAMENT_SERVE_CONFIG alone")
        else:
            log.warning("no winner.json at %s (TOURNAMENT_WINNER unset): serving the built-in defaults plus any "
                        "TOURNAMENT_* variables; write one with `tournament pick`", wp)
    if env.get("TOURNAMENT_SERVE_CONFIG"):
        try:
            over = json.loads(env["TOURNAMENT_SERVE_CONFIG"])
        except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
            raise WinnerFileError(f"TOURNAMENT_SERVE_CONFIG is not valid JSON ({type(e).__name__}: {str(e)[:200]}); "
                                  "fix it or unset it") from None
        if not isinstance(over, dict):
            raise WinnerFileError("TOURNAMENT_SERVE_CONFIG must be a JSON object (a ServeConfig)")
        raw = deep_merge(raw, over)
    singles = {
        "TOURNAMENT_MODEL_PATH": ("model", "path", str),
        "TOURNAMENT_ENGINE": ("engine", "engine", str),
        "TOURNAMENT_DEVICE": ("engine", "device", str),
        "TOURNAMENT_MAX_TOKENS": ("decode", "max_tokens", int),
    }
    for var, (section, key, cast) in singles.items():
        if env.get(var):
            raw.setdefault(section, {})
            try:
                raw[section] = {**raw[section], key: cast(env[var])}
            except ValueError:
                raise WinnerFileError(f"{var}={env[var]!r} is not a whole number ({section}.{key}); set it to "
                                      "one, e.g. 256, or unset it") from None
    if env.get("TOURNAMENT_MODE"):
        raw["mode"] = env["TOURNAMENT_MODE"]
    try:
        return ServeConfig.model_validate(raw), base
    except ValidationError as e:
        def one(err) -> str:
            loc = [str(x) for x in err["loc"]]
            origin = setting_source(loc[0], loc[1], env) if len(loc) > 1 else source
            return f"serve.{'.'.join(loc)}: {err['msg']} (from {origin})"

        where = "; ".join(one(err) for err in e.errors()[:3])
        raise WinnerFileError(f"the serve config from {source} (plus any TOURNAMENT_* overrides) is invalid: "
                              f"{where}; {_FIX}") from None


def setting_source(section: str, key: str, env: dict[str, str] | None = None) -> str:
    """Where the effective `section.key` came from, for a message that says what to fix."""
    env = os.environ if env is None else env
    var = {("model", "path"): "TOURNAMENT_MODEL_PATH", ("engine", "engine"): "TOURNAMENT_ENGINE",
           ("engine", "device"): "TOURNAMENT_DEVICE", ("decode", "max_tokens"): "TOURNAMENT_MAX_TOKENS"}.get((section, key))
    if var and env.get(var):
        return f"the variable {var}"
    try:
        if key in (json.loads(env.get("TOURNAMENT_SERVE_CONFIG") or "{}").get(section) or {}):
            return "the variable TOURNAMENT_SERVE_CONFIG"
    except (ValueError, AttributeError):
        pass
    wp = winner_path(env)
    if env.get("TOURNAMENT_WINNER") != "none" and wp.is_file():
        return str(wp)
    return "the built-in default (no winner.json)"


def check_model_folder(cfg: ServeConfig, base: Path | None = None, env: dict[str, str] | None = None) -> Path:
    """The model folder the server loads, or a WinnerFileError naming `serve.model.path`, where it
    came from and the fix: no such folder, a file, or a folder without a tokenizer."""
    path = cfg.resolved_model_path(base)
    where = f"serve.model.path={cfg.model.path!r} (from {setting_source('model', 'path', env)})"
    if not path.exists():
        raise WinnerFileError(f"{where}: {path} does not exist; fetch the weights (python download_model.py) or "
                              "point model.path / TOURNAMENT_MODEL_PATH at a model folder")
    if cfg.model.gguf_file:
        if not (path / cfg.model.gguf_file).is_file():
            raise WinnerFileError(f"{where}: {path} has no GGUF file {cfg.model.gguf_file!r} (serve.model.gguf_file); "
                                  "fix the file name or fetch the weights again")
        return path  # a GGUF file carries its tokenizer
    if not path.is_dir():
        raise WinnerFileError(f"{where}: {path} is a file, not a model folder; point it at the folder that holds "
                              "config.json (or set serve.model.gguf_file for a GGUF file)")
    if not any((path / f).is_file() for f in TOKENIZER_FILES):
        raise WinnerFileError(f"{where}: {path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}); copy the "
                              "base model's tokenizer files into it (a merged build must carry them)")
    return path


def sweep_mode_enabled(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    return env.get("TOURNAMENT_SWEEP_MODE", "") in {"1", "true", "yes"}
