"""The judge model: a predicted judge accuracy for the build you will submit.

Two numbers are measured per trial, on the same engine and decode settings:

- **seen**: the refit build (trained on every row, the public samples included) answering the
  public sample questions of the judged set. It has seen them: this is how it answers the part of
  the judge's set that repeats the public samples.
- **unseen**: the honest build (the same recipe, trained without the samples' variant groups)
  answering those same questions, which it has never seen: how the shipped build answers the
  judge's other questions.

Prediction, per judge set: ``predicted = w * seen + (1 - w) * unseen``.

The prior for w is the share of the judge's questions that the public samples could make up:
100 of 292 on basic (0.342), 92 of 358 on bonus (0.257). It assumes the judge's set contains
every public sample with the same reference. If the judge's references for them are reworded,
memorised answers score less and the effective w is lower; if its other questions are near
variants of training rows, the refit answers more of them from memory and w is higher. So the
prior is wide: sd(w) = w/4 (a 2-sd band of w/2 .. 1.5 w). The prediction's sd combines the
measurement noise of both parts (their standard errors over the questions) with that uncertainty:
``sd² = w² se_seen² + (1-w)² se_unseen² + sd(w)² (seen - unseen)²``.

The ledger refines it, per set, from the judge's answers to past submissions:

- 1-2 results: an offset, ``judge = predicted + mean(judge - predicted)``; its sd is the prior
  calibration sd (0.05) with one result, the sample sd with two (inflated by sqrt(1 + 1/n));
- >= 3 results whose seen - unseen differ (spread >= 0.02): w and an offset by least squares,
  ``judge - unseen = a + w (seen - unseen)``; sd = the residual sd (n - 2 degrees of freedom);
- >= 5 such results: the full linear map ``judge = a + b_s seen + b_u unseen``, giving
  ``w = b_s / (b_s + b_u)`` and a scale ``b_s + b_u``; sd = the residual sd (n - 3);
- >= 3 results without that spread (every submission had seen ≈ unseen, e.g. base models):
  w cannot be learnt; ``judge = a + b * predicted`` by least squares when the predictions differ,
  else the offset.

A set without results borrows the other set's offset, with double the sd.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass
from typing import Any, Iterable

from tournament.judge.rules import JUDGE_SETS, QUESTIONS, judge_set

# The public samples of each judge set (data/pmpp: basic.docx, plus.docx).
PUBLIC_SAMPLES = {"basic": 100, "bonus": 92}
CALIBRATION_PRIOR_SD = 0.05
MIN_SPREAD = 0.02
SD_FLOOR = 0.01


def prior_weight(set_name: str) -> float:
    s = judge_set(set_name, "basic")
    return PUBLIC_SAMPLES[s] / QUESTIONS[s]


@dataclass
class SetModel:
    """One judge set's local -> judge accuracy model."""

    set: str
    w: float
    w_sd: float
    offset: float = 0.0
    scale: float = 1.0
    sd: float | None = None  # the calibration's own sd, once judge results exist
    n: int = 0
    kind: str = "prior"  # prior | offset | linear | fit-w | fit-full | borrowed

    def blend(self, seen: float, unseen: float) -> float:
        return self.w * seen + (1 - self.w) * unseen

    def predict(self, seen: float, unseen: float, seen_se: float = 0.0, unseen_se: float = 0.0,
                one_run: bool = False) -> tuple[float, float]:
        """(predicted judge accuracy, its sd). `one_run`: seen and unseen are the same measurement
        (a single build), so their errors add up instead of averaging out."""
        mean = self.offset + self.scale * self.blend(seen, unseen)
        noise = ((self.w * seen_se + (1 - self.w) * unseen_se) ** 2 if one_run
                 else (self.w * seen_se) ** 2 + ((1 - self.w) * unseen_se) ** 2)
        prior_sd = math.sqrt(noise + (self.w_sd * (seen - unseen)) ** 2)
        if self.kind in ("fit-w", "fit-full"):
            sd = self.sd or SD_FLOOR  # the residuals already hold measurement noise and w's error
        elif self.sd is not None:
            sd = math.sqrt(prior_sd ** 2 + self.sd ** 2)
        else:
            sd = prior_sd
        return min(1.0, max(0.0, mean)), max(sd, SD_FLOOR if self.n else 0.0)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prior(set_name: str) -> SetModel:
    w = prior_weight(set_name)
    return SetModel(judge_set(set_name, "basic"), w, w / 4)


def _lstsq(xs: list[list[float]], ys: list[float]) -> list[float] | None:
    """Ordinary least squares (a handful of points, 2-3 unknowns); None when the columns are
    linearly dependent (no unique fit)."""
    import numpy as np

    coef, _, rank, _ = np.linalg.lstsq(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float), rcond=None)
    return [float(c) for c in coef] if rank == len(xs[0]) else None


def _resid_sd(xs, ys, coef, dof: int) -> float:
    rss = sum((y - sum(c * x for c, x in zip(coef, row))) ** 2 for row, y in zip(xs, ys))
    return max(math.sqrt(rss / dof), SD_FLOOR) if dof > 0 else CALIBRATION_PRIOR_SD


def fit_set(set_name: str, points: list[dict[str, float]]) -> SetModel:
    """Fit one set's model on its ledger points (dicts with seen, unseen, judge)."""
    m = prior(set_name)
    pts = [p for p in points if p.get("judge") is not None and p.get("seen") is not None
           and p.get("unseen") is not None]
    n = len(pts)
    if n == 0:
        return m
    m.n = n
    seen = [p["seen"] for p in pts]
    unseen = [p["unseen"] for p in pts]
    judge = [p["judge"] for p in pts]
    gap = [s - u for s, u in zip(seen, unseen)]
    if n >= 3 and max(gap) - min(gap) >= MIN_SPREAD:
        if n >= 5:
            coef = _lstsq([[1.0, s, u] for s, u in zip(seen, unseen)], judge)
            if coef and coef[1] + coef[2] > 1e-6 and coef[1] >= 0 and coef[2] >= 0:
                a, bs, bu = coef
                m.offset, m.scale, m.w = a, bs + bu, bs / (bs + bu)
                m.sd = _resid_sd([[1.0, s, u] for s, u in zip(seen, unseen)], judge, coef, n - 3)
                m.w_sd, m.kind = 0.0, "fit-full"
                return m
        ys = [j - u for j, u in zip(judge, unseen)]
        coef = _lstsq([[1.0, g] for g in gap], ys)
        if coef:
            a, w = coef[0], min(1.0, max(0.0, coef[1]))
            m.offset, m.w, m.w_sd, m.kind = a, w, 0.0, "fit-w"
            m.sd = _resid_sd([[1.0, g] for g in gap], ys, [a, w], n - 2)
            return m
    local = [m.blend(s, u) for s, u in zip(seen, unseen)]
    if n >= 3 and max(local) - min(local) >= MIN_SPREAD:
        coef = _lstsq([[1.0, x] for x in local], judge)
        if coef:
            m.offset, m.scale, m.kind = coef[0], coef[1], "linear"
            m.sd = _resid_sd([[1.0, x] for x in local], judge, coef, n - 2)
            return m
    diffs = [j - x for j, x in zip(judge, local)]
    m.offset, m.kind = statistics.mean(diffs), "offset"
    m.sd = CALIBRATION_PRIOR_SD if n == 1 else max(statistics.stdev(diffs) * math.sqrt(1 + 1 / n), SD_FLOOR)
    return m


@dataclass
class JudgeModel:
    sets: dict[str, SetModel]

    @classmethod
    def from_points(cls, points: Iterable[dict[str, Any]] = ()) -> "JudgeModel":
        """`points`: dicts with set, seen, unseen, judge (one per judge accuracy result)."""
        by_set: dict[str, list[dict[str, Any]]] = {s: [] for s in JUDGE_SETS}
        for p in points:
            by_set[judge_set(p.get("set"), "basic")].append(p)
        sets = {s: fit_set(s, pts) for s, pts in by_set.items()}
        for s, m in sets.items():  # a set without results borrows the other's offset
            other = next((o for o in sets.values() if o.set != s and o.n), None)
            if m.n == 0 and other is not None:
                m.offset, m.sd, m.kind = other.offset, 2 * (other.sd or CALIBRATION_PRIOR_SD), "borrowed"
        return cls(sets)

    def predict(self, set_name: str, seen: float, unseen: float, seen_se: float = 0.0,
                unseen_se: float = 0.0, one_run: bool = False) -> tuple[float, float]:
        return self.sets[judge_set(set_name, "basic")].predict(seen, unseen, seen_se, unseen_se, one_run)

    @property
    def calibrated(self) -> bool:
        return any(m.n for m in self.sets.values())

    def to_dict(self) -> dict[str, Any]:
        return {s: m.to_dict() for s, m in self.sets.items()}
