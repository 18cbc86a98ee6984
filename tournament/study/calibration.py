"""Local -> judge calibration from the ledger's judge results.

Each judge result pairs what the judge said (accuracy, chars/s, set) with the local numbers of
the submitted winner (its trial's accuracy and chars/s, recorded at `tournament submit`).

- Speed: ``judge = local * ratio``; ratio = geometric mean of judge/local over all results (other
  hardware, other question count, network). Uncertainty as a log-normal spread: the standard
  deviation of log ratios with >= 2 results (inflated by sqrt(1 + 1/n), floored at 0.05), a wide
  prior of 0.5 (a factor of ~1.65) with one.
- Accuracy, per judge set (basic / bonus): ``judge = local + offset`` with 1-2 results (offset =
  mean difference; sd = 0.05 prior with one result, the sample sd inflated by sqrt(1 + 1/n) with
  two, floored at 0.01); with >= 3 results whose local accuracies differ (spread >= 0.02)
  ``judge = a + b * local`` by least squares, sd = residual sd. A set without results borrows the
  other set's fit with double the sd.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

from tournament.judge.rules import judge_set

SPEED_PRIOR_LOG_SD = 0.5
ACC_PRIOR_SD = 0.05


@dataclass
class AccFit:
    n: int
    offset: float = 0.0
    scale: float = 1.0
    sd: float = ACC_PRIOR_SD
    kind: str = "offset"

    def predict(self, local: float) -> tuple[float, float]:
        if self.kind == "linear":
            return self.offset + self.scale * local, self.sd
        return local + self.offset, self.sd


@dataclass
class Calibration:
    n: int
    speed_ratio: float
    speed_log_sd: float
    accuracy: dict[str, AccFit] = field(default_factory=dict)

    def predict(self, local_accuracy: float, local_speed: float, judge_set: str = "basic") -> dict[str, float]:
        s = _norm_set(judge_set)
        fit = self.accuracy.get(s)
        widen = 1.0
        if fit is None and self.accuracy:
            fit, widen = next(iter(self.accuracy.values())), 2.0
        acc, acc_sd = fit.predict(local_accuracy) if fit else (local_accuracy, ACC_PRIOR_SD * 2)
        speed = local_speed * self.speed_ratio
        f = math.exp(2 * self.speed_log_sd)
        return {"accuracy": acc, "accuracy_sd": acc_sd * widen, "accuracy_lo": acc - 2 * acc_sd * widen,
                "chars_per_s": speed, "chars_per_s_lo": speed / f, "chars_per_s_hi": speed * f}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _norm_set(s: str | None) -> str:
    return judge_set(s, "basic")


def _acc_fit(points: list[tuple[float, float]]) -> AccFit:
    n = len(points)
    diffs = [j - l for l, j in points]
    if n >= 3:
        xs = [l for l, _ in points]
        if max(xs) - min(xs) >= 0.02:
            mx, my = statistics.mean(xs), statistics.mean(j for _, j in points)
            sxx = sum((x - mx) ** 2 for x in xs)
            b = sum((x - mx) * (j - my) for x, (_, j) in zip(xs, points)) / sxx
            a = my - b * mx
            resid = [j - (a + b * l) for l, j in points]
            sd = math.sqrt(sum(r * r for r in resid) / (n - 2)) if n > 2 else ACC_PRIOR_SD
            return AccFit(n, offset=a, scale=b, sd=max(sd, 0.01), kind="linear")
    offset = statistics.mean(diffs)
    sd = ACC_PRIOR_SD if n == 1 else max(statistics.stdev(diffs) * math.sqrt(1 + 1 / n), 0.01)
    return AccFit(n, offset=offset, sd=sd)


def fit(results: list[dict[str, Any]]) -> Calibration | None:
    """`results`: dicts with local_accuracy, local_speed, judge_accuracy, judge_speed, set."""
    usable = [r for r in results if r.get("local_speed") and r.get("judge_speed") and r.get("local_accuracy") is not None]
    if not usable:
        return None
    logs = [math.log(r["judge_speed"] / r["local_speed"]) for r in usable]
    n = len(logs)
    ratio = math.exp(statistics.mean(logs))
    log_sd = SPEED_PRIOR_LOG_SD if n == 1 else max(statistics.stdev(logs) * math.sqrt(1 + 1 / n), 0.05)
    acc: dict[str, AccFit] = {}
    for s in ("basic", "bonus"):
        pts = [(r["local_accuracy"], r["judge_accuracy"]) for r in usable
               if _norm_set(r.get("set")) == s and r.get("judge_accuracy") is not None]
        if pts:
            acc[s] = _acc_fit(pts)
    return Calibration(n=n, speed_ratio=ratio, speed_log_sd=log_sd, accuracy=acc)
