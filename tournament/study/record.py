"""One trial, one record: what a trial measured and how the study judged it.

A trial's numbers travel as Optuna user attributes (``metrics``, ``serve_config``, ``candidate``,
...), written by the sweep (measure.py, sweep.py). `TrialRecord.from_trial` is the one reader:
the board, the plots, the pick and winner.json read its fields. Studies written by older versions
are read here too, and only here (`normalized_metrics`):

- before the judge model a trial measured one build: its ``accuracy`` is seen, unseen and
  predicted accuracy at once, its ``accuracy_stderr`` their error;
- before ``candidate.build`` a trained recipe was measured as its honest build (`build_of`).

`TrialRecord.to_row()` is the row of ``tournament board --json`` (keys are an interface).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

# What winner.json (and the ledger, at submit) keeps of a trial's metrics.
PROVENANCE_KEYS = ("accuracy", "accuracy_stderr", "seen_accuracy", "unseen_accuracy", "seen_accuracy_stderr",
                   "unseen_accuracy_stderr", "predicted_accuracy", "predicted_accuracy_sd", "zh_rougeL",
                   "chars_per_s", "chars_per_s_min", "chars_per_s_max", "chars_per_s_mad", "chars_per_s_score",
                   "predict_seconds", "predict_seconds_scaled", "health_seconds", "n_questions",
                   "speed_n_questions", "speed_distinct", "chars_per_s_cycled", "speed_pool_accuracy")
PER_SET_PREFIXES = ("seen_accuracy_", "unseen_accuracy_", "predicted_accuracy_")
# Every metric a measured trial records beside the record's own fields (measure.py, sweep.py); with
# the per-set ones (``seen_accuracy_basic``, ``zh_rougeL_bonus``, ``n_questions_basic``, ...) these
# are the names an objective's ``metric`` may take.
OTHER_METRICS = ("chars_per_s_std", "n_questions", "speed_pool_accuracy", "answer_chars_mean", "answer_chars_median", "answer_chars_max",
                 "answer_chars_min", "empty_answers", "predict_seconds_total", "two_builds", "cold_start",
                 "cached_speed", "build_seconds", "start_seconds", "overhead_seconds",
                 "overhead_reset_seconds", "overhead_judge_seconds", "prefix_cache_resets",
                 "prefix_cache_resets_early", "prefix_cache_reset_seconds")
PER_SET_METRICS = ("seen_accuracy", "seen_accuracy_stderr", "unseen_accuracy", "unseen_accuracy_stderr",
                   "predicted_accuracy", "predicted_accuracy_sd", "zh_rougeL", "n_questions")
SET_ACCURACY_KEYS = ("seen_accuracy", "unseen_accuracy", "seen_accuracy_stderr", "unseen_accuracy_stderr")


def normalized_metrics(metrics: dict[str, Any] | None) -> dict[str, Any]:
    """A trial's metrics with the judge model's keys filled in for a study from before it (one
    measured build: its accuracy stands for seen, unseen and predicted)."""
    m = dict(metrics or {})
    if m.get("seen_accuracy") is None and m.get("accuracy") is not None:
        m["seen_accuracy"] = m["accuracy"]
        m.setdefault("seen_accuracy_stderr", m.get("accuracy_stderr"))
    if m.get("unseen_accuracy") is None and m.get("seen_accuracy") is not None:
        m["unseen_accuracy"] = m["seen_accuracy"]
        m.setdefault("unseen_accuracy_stderr", m.get("seen_accuracy_stderr", m.get("accuracy_stderr")))
    if m.get("predicted_accuracy") is None and m.get("accuracy") is not None:
        m["predicted_accuracy"] = m["accuracy"]
        m["predicted_accuracy_sd"] = m.get("accuracy_stderr")
    return m


def set_accuracies(metrics: dict[str, Any], judge_sets, track: str) -> dict[str, dict[str, Any]]:
    """Seen/unseen accuracy (and errors) per judge set; a trial that recorded none per set gives
    its overall numbers for `track`."""
    out = {s: {k: metrics.get(f"{k}_{s}") for k in SET_ACCURACY_KEYS}
           for s in judge_sets if metrics.get(f"seen_accuracy_{s}") is not None}
    if not out and metrics.get("seen_accuracy") is not None:
        out[track] = {k: metrics.get(k) for k in SET_ACCURACY_KEYS}
    return out


def provenance_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """What winner.json keeps: the judge model's parts for every measured set, speed with its
    noise, and the limits' numbers."""
    m = normalized_metrics(metrics)
    out = {k: m.get(k) for k in PROVENANCE_KEYS}
    out.update({k: v for k, v in m.items() if k.startswith(PER_SET_PREFIXES)})
    return out


def build_of(candidate: dict[str, Any]) -> str:
    """Which build a trial served: winner.json's candidate.build; older studies measured the honest
    build of a trained recipe (and the base model as itself)."""
    if candidate.get("build"):
        return candidate["build"]
    method = (candidate.get("recipe") or {}).get("method")
    return "honest" if method and method != "none" else "base"


@dataclass
class TrialRecord:
    trial: int
    state: str = "COMPLETE"
    feasible: bool = False
    pareto: bool = False
    candidate: str | None = None
    build: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    constraints: dict[str, float] = field(default_factory=dict)
    duplicate_of: int | None = None
    seen_accuracy: float | None = None
    unseen_accuracy: float | None = None
    seen_accuracy_stderr: float | None = None
    unseen_accuracy_stderr: float | None = None
    predicted_accuracy: float | None = None
    predicted_accuracy_sd: float | None = None
    accuracy: float | None = None
    accuracy_stderr: float | None = None
    zh_rougeL: float | None = None
    chars_per_s: float | None = None
    chars_per_s_min: float | None = None
    chars_per_s_max: float | None = None
    chars_per_s_mad: float | None = None
    chars_per_s_score: float | None = None
    chars_per_s_rel_spread: float | None = None
    speed_repeats: float | None = None
    # the speed POST: how many questions it held, whether none repeats (the objective's workload),
    # and the other hypothesis' figure (the samples cycled to the same count)
    speed_n_questions: int | None = None
    speed_distinct: bool | None = None
    chars_per_s_cycled: float | None = None
    # predicted judge chars/s (speed_model.py: the ledger's fit, or its prior) with its 2-sd band
    predicted_chars_per_s: float | None = None
    predicted_chars_per_s_lo: float | None = None
    predicted_chars_per_s_hi: float | None = None
    speed_hypothesis: str | None = None
    predict_seconds: float | None = None
    predict_seconds_scaled: float | None = None
    health_seconds: float | None = None
    overhead_ratio: float | None = None
    max_tokens: int | None = None
    mode: str | None = None
    serve_config: dict[str, Any] = field(default_factory=dict)
    fail_reason: str | None = None
    mlflow_run_id: str | None = None
    cache: str | None = None
    # the calibrated judge prediction (ledger), when judge results exist
    predicted: dict[str, Any] | None = None
    # every metric the trial recorded (per judge set too), old studies normalised
    metrics: dict[str, Any] = field(default_factory=dict)
    candidate_info: dict[str, Any] = field(default_factory=dict)
    # a drawn recipe (study/recipes.py): the drawn values, the build's id and hashes, training
    # seconds and peak memory (None where the build did not record them); None for a listed candidate
    recipe: dict[str, Any] | None = None

    @classmethod
    def from_trial(cls, t) -> "TrialRecord":
        """The record of an Optuna FrozenTrial (any version of the sweep wrote it)."""
        from optuna.trial import TrialState

        m = normalized_metrics(t.user_attrs.get("metrics"))
        sc = t.user_attrs.get("serve_config") or {}
        cand = t.user_attrs.get("candidate") or {}
        cons = dict(t.constraints)
        own = {f.name for f in fields(cls)}
        return cls(
            trial=t.number, state=t.state.name,
            feasible=t.state == TrialState.COMPLETE and bool(cons) and all(v <= 0 for v in cons.values()),
            candidate=(cand.get("id") if cand.get("template") else None) or t.params.get("candidate") or cand.get("id"),
            # a trial that stopped before it knew its candidate (drawn ahead, never run) has no build
            build=build_of(cand) if cand else None, params=dict(t.params), recipe=_recipe(t.user_attrs, cand),
            constraints=cons, duplicate_of=t.user_attrs.get("duplicate_of"),
            max_tokens=(sc.get("decode") or {}).get("max_tokens"), mode=sc.get("mode"), serve_config=sc,
            fail_reason=t.user_attrs.get("fail_reason"), mlflow_run_id=t.user_attrs.get("mlflow_run_id"),
            cache=t.user_attrs.get("cache"), metrics=m, candidate_info=dict(cand),
            **{k: v for k, v in m.items() if k in own and k not in _TYPED},
            speed_n_questions=int(m["speed_n_questions"]) if m.get("speed_n_questions") is not None else None,
            speed_distinct=bool(m["speed_distinct"]) if m.get("speed_distinct") is not None else None,
        )

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> "TrialRecord":
        """A record from a board row (``board --json``), unknown keys ignored."""
        own = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in row.items() if k in own})

    def value(self, metric: str) -> float | None:
        """A metric by name: a field of the record, else any metric the trial recorded."""
        v = getattr(self, metric, None) if metric in _FIELD_NAMES else self.metrics.get(metric)
        return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else None

    @property
    def finished(self) -> bool:
        """A measured (not repeated) COMPLETE trial."""
        return self.state == "COMPLETE" and self.duplicate_of is None

    def calibrate(self, calibration, track: str) -> None:
        """The judge's predicted speed (the ledger's speed fit, else its prior) and, with judge
        results, the calibrated predicted accuracy."""
        from tournament.study.speed_model import SpeedModel

        speed = calibration.speed_model if calibration is not None else SpeedModel()
        p = speed.predict(self.chars_per_s, self.chars_per_s_cycled)
        self.predicted_chars_per_s, self.predicted_chars_per_s_lo = p["chars_per_s"], p["chars_per_s_lo"]
        self.predicted_chars_per_s_hi, self.speed_hypothesis = p["chars_per_s_hi"], p["hypothesis"]
        if calibration is None or self.seen_accuracy is None:
            return
        p = calibration.predict(None, self.chars_per_s, track, seen=self.seen_accuracy, unseen=self.unseen_accuracy,
                                seen_se=self.seen_accuracy_stderr or 0.0, unseen_se=self.unseen_accuracy_stderr or 0.0,
                                local_speed_cycled=self.chars_per_s_cycled)
        self.predicted = p
        self.predicted_accuracy, self.predicted_accuracy_sd = p["accuracy"], p["accuracy_sd"]

    def __getitem__(self, key: str) -> Any:
        """Read a field as a board row's key (``record["chars_per_s"]``)."""
        if key not in _ROW_KEYS:
            raise KeyError(key)
        return getattr(self, key)

    def to_row(self) -> dict[str, Any]:
        """The board's JSON row."""
        row = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in _NOT_IN_ROW}
        if self.predicted is None:
            row.pop("predicted")
        return row


def _recipe(attrs: dict[str, Any], cand: dict[str, Any]) -> dict[str, Any] | None:
    """The trial's drawn recipe: as its build recorded it, else as the draw named it (a trial that
    failed before its build, or answered from the cache)."""
    if attrs.get("recipe"):
        return dict(attrs["recipe"])
    if cand.get("template"):
        return {"id": cand.get("id"), "template": cand["template"], "drawn": cand.get("drawn"),
                "config_hash": cand.get("config_hash"), "honest_config_hash": cand.get("honest_config_hash"),
                "train_seconds": None, "peak_memory_gib": None}
    return None


def known_metric(name: str) -> bool:
    """Can an objective read this metric from every measured trial?"""
    if name in _FIELD_NAMES or name in OTHER_METRICS:
        return True
    return any(name == f"{k}_{s}" for k in PER_SET_METRICS for s in ("basic", "bonus"))


# the record's numeric fields: what `value` reads from the record itself (annotations are strings here)
_FIELD_NAMES = {f.name for f in fields(TrialRecord) if f.type in ("float | None", "int | None")}
_NOT_IN_ROW = {"metrics", "candidate_info"}
_TYPED = {"metrics", "trial", "state", "speed_n_questions", "speed_distinct"}  # set apart in from_trial
_ROW_KEYS = {f.name for f in fields(TrialRecord)} - _NOT_IN_ROW
