"""The sweep file (`sweeps/*.yaml`): what a `tournament sweep` searches and how it measures.

Validated with pydantic, so a typo is a clear error naming the field, not a crash mid-sweep.

```yaml
study: demo-cpu                 # Optuna study name (and its MLflow experiment, tournament/<study>)
trials: 6                       # default for --trials: finished trials the study should hold
seed: 0
decode_trials_per_engine: 3     # engine grouping: trials run on one started server (see sweep.py)
speed_repeats: 1                # judge runs per trial for chars/s (median + spread)
candidates:                     # a candidate YAML path, or an inline candidate
  - candidates/gemma-sft-r16.yaml
  - {id: gemma-base, model_path: "embedded:gemma-3-270m", prompt: {style: plain}}
eval:
  path: data/build/pmpp-docx/eval.jsonl   # any file tournament.data.ingest.read_qa reads
  split: data/splits/pmpp-docx.yaml       # optional: built when `path` does not exist yet
  set: basic                              # optional: basic | plus (bonus)
  limit: 16                               # optional: first N questions after the filter
judge:                          # the judge aimed at: 292 q (bonus 358), predict 360 s, pass 0.35
  set: basic                    # the objective's question set: basic | bonus ("plus" = bonus); old name: track
  hardware: metax               # metax (health 180 s) | paratera (420 s) | moore-threads (180 s: none is
                                # published, the strictest known stands in); the `health` constraint's limit
  sets: [basic, bonus]          # the sets measured (default: `set` alone)
  cold_start: false             # true: each server starts with an empty compile cache
speed: {questions: 292, seed: 0}  # the speed POST: the samples + distinct unseen questions (default pool:
                                  # the refit dataset's speed_pool.jsonl), 292 / 358 by default
refit: {dataset: data/build/pmpp-refit, split: data/splits/pmpp-refit.yaml}  # the build you submit
build_workers: 3                # train the builds 3 at a time before the first trial (0: on demand;
                                # auto: as many as the first build's measured peak memory allows)
space:
  candidate: [gemma-base]       # default: every candidate
  prompt:                       # named prompt variants, merged over the candidate's prompt
    zero-shot: {}
    one-shot: {shots: [{question: "...", answer: "..."}]}
  engine:                       # engine settings: a value is fixed, a list is a choice,
    engine: transformers        # {low, high, step?, log?} is a range
    batch_size: [8, 16]
    # vLLM only: compilation_config: {choices: [null, {mode: 0, cudagraph_mode: FULL_DECODE_ONLY}]}
  decode:
    max_tokens: [48, 96]
    repetition_penalty: {choices: [1.0, 1.15]}
    stop: {choices: [[], ["\\n\\n"]]}     # list-valued settings need the explicit `choices` form
  mode: batch
  # A recipe space (study/recipes.py) makes the trained candidates templates; a trial draws:
  # recipe: {method: [lora, full], rank: [8, 16], learning_rate: {log: [5.0e-5, 5.0e-4]}, epochs: [1, 2]}
  # quantization: [none, fp8]   # candidate `quantization:` values
  # base: {small: {path: models/a}, large: {path: models/b}}   # named candidate `base:` values
build_budget: {recipes: 5, minutes: 12, ahead: 2}   # recipe space: new recipes, minutes, draws ahead
enqueue:                        # known-good configurations, run first (Optuna enqueue_trial); with a recipe
  - {candidate: gemma-base, prompt: one-shot, decode: {max_tokens: 96}}   # space also recipe/quantization/base
objectives:                     # optional; default: predicted judge accuracy and chars/s, both maximised
  - {name: accuracy, metric: predicted_accuracy}
  - {name: chars_per_s, metric: chars_per_s}
  - {name: health, metric: health_seconds, direction: minimize}   # a third axis: the front and pick use it
```
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from tournament.judge.rules import PASS_MARK, hardware_track, judge_set, limits
from tournament.paths import project_root
from tournament.prompting import PromptSpec
from tournament.serving.config import DecodeSettings, EngineSettings
from tournament.study.objectives import DEFAULT_OBJECTIVES, Objective
from tournament.study.record import known_metric

EMBEDDED_PREFIX = "embedded:"
ENQUEUE_KEYS = "candidate/prompt/engine/decode/mode/recipe/quantization/base"  # an enqueue entry's keys


class SweepKeyDeprecation(DeprecationWarning):
    """A sweep file key that still works but has a new name."""


# Python hides DeprecationWarnings raised outside __main__; a sweep file's reader should see this one.
warnings.filterwarnings("default", category=SweepKeyDeprecation)


class SweepConfigError(ValueError):
    """A sweep file that cannot be used; the message names the file and the field."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InlineCandidate(_Strict):
    """A candidate given directly by its model directory (tests, the embedded default)."""

    id: str
    # A model directory, or "embedded:gemma-3-270m" (tournament.models.embedded.ensure_gemma()).
    model_path: str
    gguf_file: str | None = None
    prompt: PromptSpec = Field(default_factory=PromptSpec)
    engine: dict[str, Any] = Field(default_factory=dict)  # engine defaults for this candidate
    decode: dict[str, Any] = Field(default_factory=dict)  # decode defaults for this candidate
    modelscope_id: str | None = None
    revision: str | None = None
    base: str | None = None
    recipe: dict[str, Any] = Field(default_factory=dict)


class EvalSpec(_Strict):
    path: str
    split: str | None = None
    set: Literal["basic", "plus", "bonus"] | None = None
    limit: int | None = Field(None, ge=1)
    offset: int = Field(0, ge=0)


class JudgeSpec(_Strict):
    """The judge the sweep aims at: a question set and a hardware track (with their limits)."""

    # The judge set whose predicted accuracy is the objective (basic | bonus; "plus" = bonus).
    set: Literal["basic", "bonus"] = "basic"
    # The hardware track the submission goes to (metax | paratera | moore-threads): its health
    # limit is the `health` constraint's.
    hardware: str = "metax"
    # Judge sets measured per trial (basic, bonus; "plus" = bonus). `set` drives the objective;
    # others are reported. Default: `set` alone.
    sets: list[Literal["basic", "plus", "bonus"]] = Field(default_factory=list)
    questions: int | None = Field(None, ge=1)
    health_timeout: float | None = Field(None, gt=0)
    predict_timeout: float | None = Field(None, gt=0)
    pass_mark: float = Field(PASS_MARK, ge=0, le=1)
    # Local timeout of one judged call (default: the judge's predict limit).
    local_predict_timeout: float | None = Field(None, gt=0)
    # How long a sweep waits for a server to become healthy before the trial FAILs (default 3x
    # the health limit): a slower start is still measured, and is infeasible by its constraint.
    start_timeout: float | None = Field(None, gt=0)
    # Start every server with a new, empty compile cache (VLLM_CACHE_ROOT and the torch inductor /
    # Triton caches, in a folder under the study's, removed when the server stops), so the time to
    # healthy that the `health` constraint checks is the cold start of the judge's fresh container.
    # Off: servers share this machine's cache, and a group started before starts warm (faster than
    # the judge will see). Costs the compile again on every server start (~45 s for gemma-3-270m on
    # an H200); turn it on when `compilation_config` (or anything else that changes the compile)
    # is in the space, or when the health limit is close.
    cold_start: bool = False

    @model_validator(mode="before")
    @classmethod
    def _old_track_key(cls, data: Any, info: ValidationInfo) -> Any:
        """`track` (before judge.set and judge.hardware existed) named the question set."""
        if isinstance(data, dict) and "track" in data:
            data = dict(data)
            old = data.pop("track")
            source = (info.context or {}).get("source", "sweep file")
            warnings.warn(f"{source}: judge.track is deprecated, write judge.set (the question set; "
                          f"judge.hardware names the hardware track)", SweepKeyDeprecation, stacklevel=2)
            if data.get("set") is not None and judge_set(data["set"]) != judge_set(old):
                raise ValueError(f"judge.track ({old}) and judge.set ({data['set']}) differ: keep judge.set alone")
            data.setdefault("set", old)
        return data

    @field_validator("set", mode="before")
    @classmethod
    def _set_name(cls, v: Any) -> Any:
        return judge_set(v) if isinstance(v, str) else v

    @field_validator("hardware", mode="before")
    @classmethod
    def _hardware_name(cls, v: Any) -> Any:
        return hardware_track(v).name if isinstance(v, str) else v

    @model_validator(mode="after")
    def _fill(self) -> "JudgeSpec":
        t = limits(self.set, self.hardware)
        self.questions = self.questions or t.questions
        self.health_timeout = self.health_timeout or t.health_timeout
        self.predict_timeout = self.predict_timeout or t.predict_timeout
        self.local_predict_timeout = self.local_predict_timeout or self.predict_timeout
        self.start_timeout = self.start_timeout or 3 * self.health_timeout
        sets = [judge_set(x) for x in self.sets] or [self.set]
        self.sets = list(dict.fromkeys([self.set] + sets))  # the objective's set first, no repeats
        return self


def stored_judge_set(judge: dict[str, Any] | None, default: str = "basic") -> str:
    """The question set of a judge section as a study or winner.json stored it: "set", or "track"
    as versions before judge.set wrote it."""
    judge = judge or {}
    return judge.get("set") or judge.get("track") or default


Scalar = Union[None, bool, int, float, str]


class Range(_Strict):
    low: float
    high: float
    step: float | None = None
    log: bool = False
    int: bool | None = None  # default: integer when low/high/step are all integers

    @model_validator(mode="after")
    def _check(self) -> "Range":
        if self.high < self.low:
            raise ValueError(f"range high {self.high} < low {self.low}")
        return self

    def is_int(self) -> bool:
        if self.int is not None:
            return self.int
        vals = [self.low, self.high] + ([self.step] if self.step is not None else [])
        return all(float(v).is_integer() for v in vals)


class Choices(_Strict):
    choices: list[Any] = Field(min_length=1)


def normalize_param(name: str, spec: Any) -> Range | Choices | None:
    """Range / Choices for a searched setting; None for a fixed value."""
    if isinstance(spec, (Range, Choices)):
        return spec
    if isinstance(spec, dict) and "choices" in spec:
        return Choices.model_validate(spec)
    if isinstance(spec, dict) and {"low", "high"} <= set(spec):
        return Range.model_validate(spec)
    if isinstance(spec, dict) and set(spec) == {"log"} and isinstance(spec["log"], list) and len(spec["log"]) == 2:
        return Range(low=spec["log"][0], high=spec["log"][1], log=True)  # shorthand: {log: [low, high]}
    if isinstance(spec, list) and name.rsplit(".", 1)[-1] not in ("stop",):  # a list-valued setting: fixed
        if not spec:
            raise ValueError(f"{name}: an empty list of choices")
        return Choices(choices=spec)
    return None


def encode_choice(v: Any) -> Scalar:
    """Optuna categorical values must be scalars: lists/dicts travel as JSON text."""
    if v is None or isinstance(v, (bool, int, float, str)):
        return v
    return json.dumps(v, sort_keys=True, ensure_ascii=False)


def decode_choice(v: Any, example: Any) -> Any:
    if isinstance(v, str) and not isinstance(example, str):
        return json.loads(v)
    return v


def spec_values(name: str, spec: Any) -> list[Any]:
    """The values to check of a setting: a range's ends, every choice, or the fixed value."""
    p = normalize_param(name, spec)
    if isinstance(p, Range):
        return [int(p.low), int(p.high)] if p.is_int() else [p.low, p.high]
    return p.choices if isinstance(p, Choices) else [spec]


class SearchSpace(_Strict):
    candidate: list[str] | None = None
    prompt: dict[str, dict[str, Any]] | None = None
    engine: dict[str, Any] = Field(default_factory=dict)
    decode: dict[str, Any] = Field(default_factory=dict)
    mode: Any = "batch"
    # The recipe space (study/recipes.py): the trained candidates become templates; a trial draws
    # recipe fields, a candidate `quantization:` value and a named candidate `base:`.
    recipe: dict[str, Any] = Field(default_factory=dict)
    quantization: Any = None
    base: dict[str, dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _recipe_space(self) -> "SearchSpace":
        from tournament.candidates import BaseModelSpec, Quantization, Recipe

        searchable = sorted(set(Recipe.model_fields) - {"dataset"})
        if set(self.recipe) - set(searchable):
            raise ValueError(f"recipe: unknown or fixed field(s) {sorted(set(self.recipe) - set(searchable))}; "
                             f"searchable: {searchable}")
        checks = [(Recipe, f"recipe.{k}", {k: x, "dataset": "-"}) for k, spec in self.recipe.items()
                  for x in spec_values(f"recipe.{k}", spec)]
        checks += [(Quantization, "quantization", {"method": q} if isinstance(q, str) else q)
                   for q in ([] if self.quantization is None else spec_values("quantization", self.quantization))]
        checks += [(BaseModelSpec, f"base.{name}", b) for name, b in (self.base or {}).items()]
        for model, name, value in checks:
            try:
                model.model_validate(value)
            except ValidationError as e:
                raise ValueError(f"{name}: {value!r} is invalid: {e.errors()[0]['msg']}") from None
        if self.base == {}:
            raise ValueError("base: give at least one named base model")
        return self

    @property
    def draws_recipes(self) -> bool:
        """Does a trial draw its recipe (then the candidates are templates)?"""
        return bool(self.recipe) or self.quantization is not None or self.base is not None

    @field_validator("engine", "decode")
    @classmethod
    def _known_keys(cls, v: dict[str, Any], info) -> dict[str, Any]:
        model = EngineSettings if info.field_name == "engine" else DecodeSettings
        bad = sorted(set(v) - set(model.model_fields))
        if bad:
            raise ValueError(f"unknown {info.field_name} setting(s) {bad}; known: {sorted(model.model_fields)}")
        return v

    @field_validator("prompt")
    @classmethod
    def _prompt_variants(cls, v: dict[str, dict[str, Any]] | None) -> dict[str, dict[str, Any]] | None:
        if v is not None:
            if not v:
                raise ValueError("prompt: give at least one named variant (e.g. `default: {}`)")
            for name, over in v.items():
                bad = sorted(set(over or {}) - set(PromptSpec.model_fields))
                if bad:
                    raise ValueError(f"prompt variant {name!r}: unknown field(s) {bad}")
        return v

    @field_validator("mode")
    @classmethod
    def _mode(cls, v: Any) -> Any:
        vals = v if isinstance(v, list) else (v.get("choices") if isinstance(v, dict) else [v])
        for m in vals or []:
            if m not in ("batch", "serial"):
                raise ValueError(f"mode must be batch or serial, not {m!r}")
        return v

    def params(self, section: str) -> dict[str, Any]:
        return {"engine": self.engine, "decode": self.decode}[section]


class SpeedSpec(_Strict):
    """The speed POST (study/workload.py): the track's public samples plus distinct questions from
    a pool no build was trained on, up to the judge's count."""

    # A QA file of questions no build has seen. Default: the refit dataset's speed_pool.jsonl (the
    # split's ``speed_pool``). None there (an untrained model, a test): the POST is the set's eval
    # questions alone, and the board says how many it held.
    pool: str | None = None
    # Questions in the POST (default: the judge's count for the track's set, 292 / 358). The CPU
    # demo uses fewer.
    questions: int | None = Field(None, ge=1)
    seed: int = 0
    # Also time one POST of the samples cycled up to the same count (serve.py's dedup makes the
    # repeats free): the other hypothesis about the judge's set, checked against the ledger.
    cycled: bool = True


class RefitSpec(_Strict):
    """The build you submit: every trained candidate's recipe, trained once more on every row.

    The sweep measures it (seen accuracy, speed) next to the honest build (unseen accuracy); see
    tournament/study/judge_model.py. ``enabled: false`` measures the honest build alone."""

    enabled: bool = True
    dataset: str = "data/build/pmpp-refit"  # a data build (train.jsonl) with every row
    split: str | None = "data/splits/pmpp-refit.yaml"  # built when the dataset is missing


class BuildBudget(_Strict):
    """How much a sweep may train for drawn recipes (study/recipes.py): new recipes built (each
    its refit and honest build), and/or minutes of training. Spent: trials draw among built ones.
    `ahead`: a recipe that must train takes this many draws along, after the queued trials (draw_ahead.py)."""
    recipes: int | None = Field(None, ge=0)
    minutes: float | None = Field(None, ge=0)
    ahead: int = Field(0, ge=0)


class SweepConfig(_Strict):
    study: str = "tournament"
    trials: int = Field(20, ge=1)
    seed: int = 0
    decode_trials_per_engine: int = Field(3, ge=1)
    speed_repeats: int = Field(1, ge=1)
    candidates: list[Union[str, InlineCandidate]] = Field(min_length=1)
    eval: EvalSpec
    judge: JudgeSpec = Field(default_factory=JudgeSpec)
    space: SearchSpace = Field(default_factory=SearchSpace)
    enqueue: list[dict[str, Any]] = Field(default_factory=list)
    refit: RefitSpec = Field(default_factory=RefitSpec)
    speed: SpeedSpec = Field(default_factory=SpeedSpec)
    # Draws in a row of an already measured configuration before the sweep stops (exhausted).
    max_repeat_draws: int = Field(25, ge=1)
    # Start a trained recipe's two servers (refit, honest) at once. Off by default: two vLLM engines
    # profiling GPU memory at the same moment count each other's allocations (see study/servers.py).
    start_builds_together: bool = False
    # Build every trained build before the first trial, this many training processes at a time
    # (0: each when a trial first needs it). With a recipe space, this many builds of the drawn
    # recipes train at once. `auto`: the first build alone, then as many side by side as the
    # measured peaks of earlier builds and the GPU's free memory allow (train/memory.py).
    build_workers: Annotated[int, Field(ge=0)] | Literal["auto"] = 0
    # A new build of the running build's architecture and tokenizer on the same engine settings
    # (a drawn recipe) is swapped into the running servers, not started anew (study/weight_swap.py).
    swap_weights: bool = True
    # What the sweep optimises (objectives.py): each an Optuna objective over a trial metric. The
    # default is the judge's ranking: predicted judge accuracy, then chars/s.
    objectives: list[Objective] = Field(default_factory=lambda: list(DEFAULT_OBJECTIVES), min_length=1)
    build_budget: BuildBudget = Field(default_factory=BuildBudget)
    # Folder that relative paths in this file start from (set by load_sweep_config).
    base_dir: str = "."

    @model_validator(mode="after")
    def _check(self) -> "SweepConfig":
        # Every searched/fixed value must make a valid EngineSettings/DecodeSettings: check the
        # extremes now, not at trial 17.
        for section, model in (("engine", EngineSettings), ("decode", DecodeSettings)):
            for name, spec in self.space.params(section).items():
                for v in spec_values(f"{section}.{name}", spec):
                    try:
                        model.model_validate({name: v})
                    except ValidationError as e:
                        raise ValueError(f"space.{section}.{name}: value {v!r} is invalid: {e.errors()[0]['msg']}")
        names = [o.name for o in self.objectives]
        if len(set(names)) != len(names):
            raise ValueError(f"objectives: two share a name ({names})")
        if len(self.objectives) < 2:
            raise ValueError("objectives: give at least two (the board's front and the plots have two axes)")
        unknown = [o.metric for o in self.objectives if not known_metric(o.metric)]
        if unknown:
            raise ValueError(f"objectives: unknown metric(s) {unknown} (tournament/study/record.py lists them)")
        hw, engine = hardware_track(self.judge.hardware), self.space.engine.get("engine")
        searched = normalize_param("engine.engine", engine)
        if not hw.vllm and "vllm" in (searched.choices if isinstance(searched, Choices) else [engine]):
            raise ValueError(f"judge.hardware {hw.name}: {hw.hardware} has no vLLM (its image serves with "
                             f"transformers); take vllm out of space.engine.engine")
        for i, e in enumerate(self.enqueue):
            bad = sorted(set(e) - set(ENQUEUE_KEYS.split("/")))
            if bad:
                raise ValueError(f"enqueue[{i}]: unknown key(s) {bad}; use {ENQUEUE_KEYS}")
        return self

    # -- helpers ----------------------------------------------------------------------------
    def resolve_path(self, p: str) -> Path:
        return path if (path := Path(p).expanduser()).is_absolute() else (Path(self.base_dir) / path)

    def fingerprint(self) -> str:
        doc = self.model_dump(exclude={"base_dir", "trials"})
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


# Settings renamed since a study could have stored them: {section: {old key: new key}}.
RENAMED_KEYS = {"judge": {"track": "set"}}


def config_changes(stored: Any, current: Any, path: str = "") -> list[str]:
    """The settings (dotted paths) where `current` differs from the `stored` sweep config of a
    study. A key the stored one lacks is a setting added by a later tournament version, at its
    default then: not a change; a key stored under its old name (`RENAMED_KEYS`) is compared
    under its new one. `trials` (the target) and `base_dir` (where the file lies) are not
    settings of the trials."""
    if isinstance(stored, dict) and isinstance(current, dict):
        for old, new in RENAMED_KEYS.get(path, {}).items():
            if old in stored and new not in stored:
                stored = {(new if k == old else k): v for k, v in stored.items()}
        out: list[str] = []
        for k in sorted(set(stored) | set(current)):
            sub = f"{path}.{k}" if path else str(k)
            if sub in ("trials", "base_dir") or k not in stored:
                continue
            if k not in current:
                out.append(sub)
            else:
                out += config_changes(stored[k], current[k], sub)
        return out
    return [] if stored == current else [path or "(the whole file)"]


def load_sweep_config(path: str | Path) -> SweepConfig:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise SweepConfigError(f"sweep file {p} not found")
    try:
        raw = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise SweepConfigError(f"{p}: not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise SweepConfigError(f"{p}: expected a mapping at the top level")
    # Relative paths in a sweep file are relative to the project root holding it (like data/splits).
    raw.setdefault("base_dir", str(project_root(p.resolve().parent)))
    return parse_sweep_config(raw, source=str(p))


def parse_sweep_config(raw: dict[str, Any], source: str = "<sweep>") -> SweepConfig:
    try:
        return SweepConfig.model_validate(raw, context={"source": source})
    except ValidationError as e:
        lines = []
        for err in e.errors():
            loc = ".".join(str(x) for x in err["loc"]) or "(top)"
            lines.append(f"  {loc}: {err['msg']}")
        raise SweepConfigError(f"{source}: invalid sweep file\n" + "\n".join(lines)) from None
