"""Candidate YAML files: what to build (base model, prompt, recipe, quantization) and how to serve it.

A candidate is a file, not a folder somebody made by hand: `load_candidate(path)` validates it
(unknown or wrong fields are errors naming the field and the file), `Candidate.config_hash()` is a
stable fingerprint of everything that changes the weights (the dataset enters by its content
hash, not its path), and `tournament.train.build.ensure_built(candidate)` returns a servable HF model directory, training
only when no build with the same hash exists yet (`builds/<id>-<hash12>/model`).

Relative paths inside a candidate (``base.path``, ``base.gguf.file``, ``recipe.dataset``) are read
relative to the current directory (the repository root, where ``tournament`` runs) and, failing
that, relative to the YAML file's folder.

Example::

    id: gemma-3-270m-full
    base: {embedded: gemma-3-270m}
    prompt: {style: plain}
    recipe: {method: full, learning_rate: 5.0e-5, epochs: 2, dataset: data/build/pmpp-docx}
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from tournament.files import sha256_file
from tournament.prompting import PromptSpec

# Bump when the training code changes what a given config produces (invalidates old builds).
# 2: transformers' Trainer (its data order and AdamW weight-decay groups) replaced the hand loop.
BUILD_FORMAT = 2
# Recipe keys that choose how to compute, not what: kept out of the config hash (like the device).
COMPUTE_ONLY = ("liger",)
OFF_BY_DEFAULT = {"group_by_length": False}  # recipe settings that enter the hash only when on
class CandidateError(ValueError):
    """A candidate file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModelScopeRef(_Strict):
    id: str = Field(min_length=3, pattern=r"^[\w.-]+/[\w.-]+$")
    revision: str = "master"


class GGUFRef(_Strict):
    file: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class BaseModelSpec(_Strict):
    """Exactly one of: a ModelScope repo, a local HF directory, a GGUF file, an embedded model."""

    modelscope: ModelScopeRef | None = None
    path: str | None = None
    gguf: GGUFRef | None = None
    embedded: Literal["gemma-3-270m"] | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> "BaseModelSpec":
        given = [k for k in ("modelscope", "path", "gguf", "embedded") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(f"give exactly one of modelscope, path, gguf, embedded (got {given or 'none'})")
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("modelscope", "path", "gguf", "embedded") if getattr(self, k) is not None)

    def describe(self) -> str:
        if self.modelscope:
            return f"modelscope:{self.modelscope.id}@{self.modelscope.revision}"
        if self.path:
            return f"path:{self.path}"
        if self.gguf:
            return f"gguf:{self.gguf.file}"
        return f"embedded:{self.embedded}"


class Recipe(_Strict):
    """How the base model is fine-tuned. `method: none` serves the base model as it is."""

    method: Literal["none", "lora", "full"] = "none"
    # LoRA
    rank: int = Field(16, ge=1)
    alpha: float = Field(32, gt=0)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | Literal["all-linear"] = "all-linear"
    # optimisation
    learning_rate: float = Field(1e-4, gt=0.0)
    epochs: float = Field(1.0, gt=0.0)
    batch_size: int = Field(8, ge=1)
    grad_accum: int = Field(1, ge=1)
    max_length: int = Field(1024, ge=16)
    seed: int = 0
    warmup_ratio: float = Field(0.03, ge=0.0, lt=1.0)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    weight_decay: float = Field(0.0, ge=0.0)
    max_grad_norm: float | None = Field(1.0, gt=0.0)
    gradient_checkpointing: bool = False
    # Liger kernels (GPU only): fused RMSNorm / RoPE / GeGLU (fewer kernel launches), and the fused
    # linear cross-entropy that never holds the logits of the whole vocabulary. auto = with
    # liger-kernel installed and training on CUDA: the layer kernels, the fused loss only when the
    # build would not fit without it; true = all of them; false = none.
    liger: Literal["auto"] | bool = "auto"
    # data: a `tournament data build` folder (train.jsonl + manifest.json) or one jsonl file
    dataset: str | None = None
    packing: bool = False
    # Batches of examples of similar length (transformers' LengthGroupedSampler) instead of random
    # ones: a batch pads to its longest example, and random batches of 16 pad the gemma refit split
    # to 1.47x its tokens, length-grouped ones to 1.01x. Other batches, so other weights: opt-in.
    group_by_length: bool = False
    # Cap answers at this many characters before tokenizing (None = keep whole answers). Short,
    # term-dense answers are what the judge metric rewards; see docs/training.md.
    max_answer_chars: int | None = Field(None, ge=1)
    # What the model learns to write: "{answer}" (default) or e.g. "{question}\n{answer}" (the
    # model restates the question's terms first: echoing alone scores well on the judge metric).
    target_template: str = "{answer}"
    # checkpoints (resume)
    save_steps: int = Field(200, ge=1)
    # dtype of the saved weights: auto = bf16 when trained on a GPU, else the training dtype
    save_dtype: Literal["auto", "bfloat16", "float16", "float32"] = "auto"

    @field_validator("target_template")
    @classmethod
    def _template(cls, v: str) -> str:
        if "{answer}" not in v:
            raise ValueError("must contain {answer}")
        try:
            v.format(question="q", answer="a")
        except (KeyError, IndexError, ValueError) as e:
            raise ValueError(f"only {{question}} and {{answer}} may be used ({e})") from None
        return v

    @model_validator(mode="after")
    def _needs_dataset(self) -> "Recipe":
        if self.method != "none" and not self.dataset:
            raise ValueError(f"method {self.method!r} needs recipe.dataset")
        return self


class Quantization(_Strict):
    """`engine`: vLLM quantizes bf16 weights on load (`LLM(quantization="fp8")`, no checkpoint
    change; the simplest and what the sweep uses). `checkpoint`: llm-compressor writes a
    compressed-tensors checkpoint (fp8 = FP8_DYNAMIC, no calibration; gptq/awq = W4A16 with
    calibration rows from the dataset). See docs/training.md."""

    method: Literal["none", "fp8", "awq", "gptq"] = "none"
    scheme: str | None = None
    mode: Literal["engine", "checkpoint"] | None = None

    @model_validator(mode="after")
    def _mode(self) -> "Quantization":
        if self.mode is None:
            self.mode = "engine" if self.method in ("none", "fp8") else "checkpoint"
        if self.method in ("awq", "gptq") and self.mode == "engine":
            raise ValueError(f"{self.method} needs mode: checkpoint (vLLM cannot quantize to it on load)")
        return self

    @property
    def needs_checkpoint(self) -> bool:
        return self.method != "none" and self.mode == "checkpoint"


class Publish(_Strict):
    modelscope_id: str = Field(pattern=r"^[\w.-]+/[\w.-]+$")


class ServeHints(_Strict):
    """Defaults for serving this candidate: fields of EngineSettings / DecodeSettings."""

    engine: dict[str, Any] = Field(default_factory=dict)
    decode: dict[str, Any] = Field(default_factory=dict)

    @field_validator("engine")
    @classmethod
    def _engine(cls, v: dict[str, Any]) -> dict[str, Any]:
        from tournament.serving.config import EngineSettings

        EngineSettings.model_validate(v)
        return v

    @field_validator("decode")
    @classmethod
    def _decode(cls, v: dict[str, Any]) -> dict[str, Any]:
        from tournament.serving.config import DecodeSettings

        DecodeSettings.model_validate(v)
        return v


class Candidate(_Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=100)
    description: str = ""
    base: BaseModelSpec
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    recipe: Recipe = Field(default_factory=Recipe)
    quantization: Quantization = Field(default_factory=Quantization)
    publish: Publish | None = None
    serve: ServeHints = Field(default_factory=ServeHints)

    _source: Path | None = PrivateAttr(None)

    @field_validator("quantization", mode="before")
    @classmethod
    def _quant_shorthand(cls, v: Any) -> Any:
        return {"method": v} if isinstance(v, str) else v

    # -- paths -------------------------------------------------------------------------------
    @property
    def source(self) -> Path | None:
        return self._source

    def resolve_path(self, p: str | Path) -> Path:
        """A path from this file: absolute as is; else cwd-relative, else YAML-folder-relative."""
        p = Path(os.path.expanduser(str(p)))
        if p.is_absolute() or p.exists() or self._source is None:
            return p
        alt = self._source.parent / p
        return alt if alt.exists() else p

    def dataset_file(self) -> Path | None:
        """The train.jsonl this recipe reads (a data-build folder's train.jsonl, or the file)."""
        if not self.recipe.dataset:
            return None
        p = self.resolve_path(self.recipe.dataset)
        return p / "train.jsonl" if p.is_dir() or not p.suffix else p

    def dataset_fingerprint(self) -> dict[str, Any]:
        """Content hash of the training rows (+ the manifest's hash, recorded, not hashed: a
        manifest may carry a build time, and a rebuild with identical rows must not retrain)."""
        f = self.dataset_file()
        if f is None:
            return {}
        if not f.exists():
            raise CandidateError(f"{self.where()}recipe.dataset: {f} does not exist "
                                 "(run `tournament data build` first, or fix the path)")
        out: dict[str, Any] = {"file": str(f), "sha256": sha256_file(f)}
        manifest = f.parent / "manifest.json"
        if manifest.exists():
            out["manifest_sha256"] = sha256_file(manifest)
        return out

    def where(self) -> str:
        return f"{self._source}: " if self._source else ""

    # -- hashing -----------------------------------------------------------------------------
    def normalized(self) -> dict[str, Any]:
        """What determines the built weights (no id/description/publish/serve hints)."""
        d = self.model_dump(mode="json", include={"base", "prompt", "recipe", "quantization"})
        if self.recipe.method == "none":
            d["recipe"] = {"method": "none"}
        else:
            d["recipe"]["dataset"] = self.dataset_fingerprint().get("sha256")
            for k in COMPUTE_ONLY:
                d["recipe"].pop(k, None)
            for k, off in OFF_BY_DEFAULT.items():  # a setting added later: builds without it keep their hash
                if d["recipe"].get(k) == off:
                    d["recipe"].pop(k)
        if not self.quantization.needs_checkpoint:
            d["quantization"] = {"method": "none"}  # engine-side quantization leaves weights alone
        if self.base.gguf and self.base.gguf.sha256:
            d["base"]["gguf"] = {"sha256": self.base.gguf.sha256}
        d["build_format"] = BUILD_FORMAT
        return d

    def config_hash(self, max_steps: int | None = None) -> str:
        d = self.normalized()
        if max_steps is not None:
            d["max_steps"] = int(max_steps)  # a capped run is not the full build
        blob = json.dumps(d, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def needs_build(self) -> bool:
        return self.recipe.method != "none" or self.quantization.needs_checkpoint

    def build_dir(self, builds_dir: Path = Path("builds"), max_steps: int | None = None) -> Path:
        return Path(builds_dir) / f"{self.id}-{self.config_hash(max_steps)[:12]}"

    def serve_overrides(self, model_path: str | Path) -> dict[str, Any]:
        """A ServeConfig dict serving this candidate from `model_path` (hints + quantization)."""
        engine = dict(self.serve.engine)
        if self.quantization.method == "fp8" and self.quantization.mode == "engine":
            engine.setdefault("quantization", "fp8")
        return {"model": {"path": str(model_path)}, "prompt": self.prompt.model_dump(),
                "engine": engine, "decode": dict(self.serve.decode)}


def _format_errors(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown field (typo?)"
        lines.append(f"  {loc}: {msg}")
    return "\n".join(lines)


def parse_candidate(data: Any, source: Path | None = None) -> Candidate:
    where = f"{source}" if source else "candidate"
    if not isinstance(data, dict):
        raise CandidateError(f"{where}: expected a mapping at the top level, got {type(data).__name__}")
    try:
        cand = Candidate.model_validate(data)
    except ValidationError as e:
        raise CandidateError(f"{where}: invalid candidate\n{_format_errors(e)}") from None
    cand._source = Path(source).resolve() if source else None
    return cand


def load_candidate(path: str | Path) -> Candidate:
    """Read and validate a candidate YAML (or JSON) file."""
    import yaml

    path = Path(path)
    if not path.exists():
        raise CandidateError(f"{path}: no such candidate file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise CandidateError(f"{path}: not valid YAML ({e})") from None
    return parse_candidate(data, path)


def with_dataset(candidate: Candidate, dataset: str | Path) -> Candidate:
    """The same candidate trained on another data build (the refit for a submission). The path is
    taken from the current directory; its content hash enters the config hash (a separate build)."""
    if candidate.recipe.method == "none":
        raise CandidateError(f"--dataset: candidate {candidate.id!r} has recipe.method none (nothing to train)")
    p = Path(os.path.expanduser(str(dataset))).resolve()
    if not p.exists():
        raise CandidateError(f"--dataset: {p} does not exist (run `tournament data build` first)")
    out = candidate.model_copy(update={"recipe": candidate.recipe.model_copy(update={"dataset": str(p)})})
    out._source = candidate._source
    return out
