"""What a trial is scored on (the objectives) and which hard limits it must keep (the constraints).

One declaration drives everything that ranks trials: Optuna's study directions and metric names
(`create_study`, `tell`), the board's Pareto front (n-dimensional), the plots' axes and the pick's
tie-breaks. A sweep file may declare its own list (``objectives:``); the study stores it, and
resuming a study with another list is an error (Optuna's values would mean other things).

Constraints are Optuna's (``trial.set_constraint``, feasible when <= 0), set on every path,
failures included:

- ``accuracy``: pass mark - predicted judge accuracy;
- ``predict_time``: predict seconds scaled to the judge's question count - the predict limit;
- ``health``: seconds until the shipped server's ``GET /`` answered - the health limit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterable, Literal, Sequence

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from tournament.study.record import TrialRecord

CONSTRAINTS = ("accuracy", "predict_time", "health")


class Objective(BaseModel):
    """One axis of the search: the Optuna metric `name`, the record field it reads (`metric`,
    see TrialRecord.value) and whether bigger is better."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    metric: str
    direction: Literal["maximize", "minimize"] = "maximize"
    label: str | None = None  # axis label on the plots (default: the metric)

    @property
    def axis_label(self) -> str:
        return self.label or self.metric

    def better(self, a: float, b: float) -> bool:
        """Is `a` strictly better than `b` on this axis?"""
        return a > b if self.direction == "maximize" else a < b


# The two axes of the judge's ranking: predicted judge accuracy (the pass mark) and chars/s (the
# rank among passing submissions).
DEFAULT_OBJECTIVES: tuple[Objective, ...] = (
    Objective(name="accuracy", metric="predicted_accuracy", label="predicted judge accuracy"),
    Objective(name="chars_per_s", metric="chars_per_s", label="chars/s (judge emulator)"),
)
# Metrics the pick rule already weighs (accuracy bound, noise-aware speed): further objectives
# break its ties.
PICK_RULE_METRICS = {"predicted_accuracy", "accuracy", "chars_per_s", "chars_per_s_score"}


def stored_objectives(stored: Any) -> tuple[Objective, ...]:
    """The objectives a study was created with (its ``objectives`` user attribute); a study from
    before objectives were declared used the defaults."""
    if not stored:
        return DEFAULT_OBJECTIVES
    return tuple(Objective.model_validate(o) for o in stored)


def same_objectives(a: Sequence[Objective], b: Sequence[Objective]) -> bool:
    """Same names, metrics and directions in the same order (labels are cosmetic)."""
    key = [(o.name, o.metric, o.direction) for o in a]
    return key == [(o.name, o.metric, o.direction) for o in b]


def objective_values(record: "TrialRecord", objectives: Sequence[Objective]) -> list[float | None]:
    return [record.value(o.metric) for o in objectives]


def pareto_front(records: Iterable["TrialRecord"], objectives: Sequence[Objective]) -> set[int]:
    """Trial numbers of the non-dominated records over every objective (a record missing a value
    is on no front)."""
    pts = []
    for r in records:
        vals = objective_values(r, objectives)
        if all(v is not None for v in vals):
            pts.append((r.trial, vals))

    def dominates(x: list[float], y: list[float]) -> bool:
        no_worse = all(not o.better(b, a) for o, a, b in zip(objectives, x, y))
        return no_worse and any(o.better(a, b) for o, a, b in zip(objectives, x, y))

    return {n for n, v in pts if not any(dominates(w, v) for _, w in pts)}


def constraint_values(metrics: dict[str, Any] | None, health_seconds: float | None, judge) -> dict[str, float]:
    """The constraints of a measured trial (`metrics`), or of a failed one (None: infeasible on
    every limit; its health is kept when the server started)."""
    if metrics is None:
        return {"accuracy": judge.pass_mark, "predict_time": judge.predict_timeout,
                "health": (health_seconds - judge.health_timeout) if health_seconds is not None
                else judge.health_timeout}
    return {"accuracy": judge.pass_mark - metrics["accuracy"],
            "predict_time": metrics["predict_seconds_scaled"] - judge.predict_timeout,
            "health": (health_seconds or 0.0) - judge.health_timeout}


def violations(cons: dict[str, float]) -> list[str]:
    """The limits a trial breaks, in words and by how much (empty: feasible), for its line."""
    words = {"accuracy": "accuracy {:.3f} under the pass mark", "predict_time": "predict {:.0f} s over the limit",
             "health": "start {:.0f} s over the health limit"}
    return [words.get(k, k + " over by {:g}").format(v) for k, v in cons.items() if v > 0]
