"""Local -> judge calibration from the ledger's judge results.

Each judge result pairs what the judge said (accuracy and/or chars/s, set) with the local numbers
of the submitted winner, recorded at `tournament submit`: its seen and unseen accuracy per judge
set (see `tournament/study/judge_model.py`) and its chars/s. Older ledger entries hold one local
accuracy; it stands for both seen and unseen.

- Accuracy: the judge model (`judge_model.py`), per judge set: the prior blend of seen and unseen,
  then an offset (1-2 results), a fitted w (>= 3 results), or the full linear map (>= 5).
  A result with an accuracy and no speed feeds it too.
- Speed: ``judge = local * ratio`` (speed_model.py): ratio = geometric mean of judge/local over
  the results that have both, for the local figure of the hypothesis the results support
  (distinct questions, or the samples cycled). Uncertainty as a log-normal spread: the standard
  deviation of log ratios with >= 2 results (inflated by sqrt(1 + 1/n), floored at 0.05), a wide
  prior of 0.5 (a factor of ~1.65) with one; `speed_ratio` is None without one (the board then
  shows speed_model's prior: ratio 1).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tournament.study.judge_model import JudgeModel, SetModel
from tournament.study.speed_model import SpeedModel


@dataclass
class Calibration:
    n: int
    speed_ratio: float | None
    speed_log_sd: float | None
    judge_model: JudgeModel
    speed_model: SpeedModel = field(default_factory=SpeedModel)

    @property
    def accuracy(self) -> dict[str, SetModel]:
        """The calibrated sets (those with judge results)."""
        return {s: m for s, m in self.judge_model.sets.items() if m.n}

    def predict(self, local_accuracy: float | None, local_speed: float | None, judge_set: str = "basic", *,
                seen: float | None = None, unseen: float | None = None, seen_se: float = 0.0,
                unseen_se: float = 0.0, local_speed_cycled: float | None = None) -> dict[str, Any]:
        seen = local_accuracy if seen is None else seen
        unseen = seen if unseen is None else unseen
        acc, sd = self.judge_model.predict(judge_set, seen, unseen, seen_se, unseen_se)
        out: dict[str, Any] = {"accuracy": acc, "accuracy_sd": sd, "accuracy_lo": acc - 2 * sd,
                               "chars_per_s": None, "chars_per_s_lo": None, "chars_per_s_hi": None}
        if self.speed_ratio is not None:
            out.update(self.speed_model.predict(local_speed, local_speed_cycled))
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "speed_ratio": self.speed_ratio, "speed_log_sd": self.speed_log_sd,
                "speed": self.speed_model.to_dict(), "accuracy": self.judge_model.to_dict()}


def fit(results: list[dict[str, Any]]) -> Calibration | None:
    """`results`: dicts with set, judge_accuracy and/or judge_speed, local_speed, and the local
    seen/unseen accuracies (or one local_accuracy for both). None when nothing is usable."""
    speed_pts = [r for r in results if r.get("local_speed") and r.get("judge_speed")]
    acc_pts = []
    for r in results:
        seen = r.get("seen", r.get("local_accuracy"))
        unseen = r.get("unseen", seen)
        if r.get("judge_accuracy") is not None and seen is not None and unseen is not None:
            acc_pts.append({"set": r.get("set"), "seen": seen, "unseen": unseen, "judge": r["judge_accuracy"]})
    if not speed_pts and not acc_pts:
        return None
    speed = SpeedModel.fit(speed_pts)
    chosen = speed.fits.get(speed.hypothesis)
    ratio, log_sd = (chosen.ratio, chosen.log_sd) if chosen else (None, None)
    # n counts the results with a speed; the judge model counts its accuracy points per set
    return Calibration(n=len(speed_pts), speed_ratio=ratio, speed_log_sd=log_sd,
                       judge_model=JudgeModel.from_points(acc_pts), speed_model=speed)


def describe(cal: Calibration) -> str:
    """The calibration in one line (`tournament ledger`): the speed fit and each set's accuracy map."""
    speed = ("no judge speed yet" if cal.speed_ratio is None else
             f"judge chars/s = local ({cal.speed_model.hypothesis}) x {cal.speed_ratio:.3f} (log sd {cal.speed_log_sd:.2f})")
    return (f"calibration ({cal.n} result(s)): {speed}; " + ", ".join(
        f"{k}: {'offset' if f.kind == 'offset' else 'linear'} {f.offset:+.3f}"
        + (f" scale {f.scale:.2f}" if f.kind == "linear" else "") + f" sd {f.sd:.3f}"
        for k, f in cal.accuracy.items()))
