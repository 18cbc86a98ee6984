"""The predicted judge speed: from the local chars/s of the build that ships to the judge's.

Each trial times two POSTs of the judge's size on the shipped build (study/workload.py):

- **distinct**: the set's public samples plus unseen questions, every one different (the judge's
  set as nothing says it repeats);
- **cycled**: the samples repeated up to the same count (serve.py generates a repeated question
  once, so the repeats are free).

They are two hypotheses about the judge's set. Under hypothesis h the judge's speed is
``local_h * r_h``: r_h holds what differs between here and there (the GPU, the network, the
engine's version), the same for every submission.

The rule, from the ledger's judge speed results (each with the submission's local figures):

- none: h = distinct, r = 1, log-sd 0.5 (the judge's GPU is another: a factor of e^0.5 ~ 1.65
  either way at one sd);
- for each h whose local figure every result has: r_h = the geometric mean of judge / local_h;
  its log-sd = the sd of the log ratios (n >= 2, inflated by sqrt(1 + 1/n), floored at 0.05), or
  0.5 with one result;
- h = cycled only when at least two results hold both figures and cycled's log-sd is below half
  of distinct's: the judge's numbers then move with the cycled figure, not the distinct one.
  Otherwise distinct (the prior: nothing says the judge repeats a question).

A prediction is ``local_h * r_h`` with the band ``exp(+-2 log-sd)``; a trial without a cycled
figure is predicted from its distinct figure with the distinct fit.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

SPEED_PRIOR_LOG_SD = 0.5
LOG_SD_FLOOR = 0.05
CYCLED_MUST_BE_TIGHTER = 0.5  # cycled's log-sd must be below this share of distinct's to be chosen


@dataclass
class SpeedFit:
    ratio: float
    log_sd: float
    n: int


@dataclass
class SpeedModel:
    hypothesis: str = "distinct"
    fits: dict[str, SpeedFit] = field(default_factory=dict)  # per hypothesis, from the judge's results

    @property
    def n(self) -> int:
        return max((f.n for f in self.fits.values()), default=0)

    def fit_for(self, hypothesis: str) -> SpeedFit:
        return self.fits.get(hypothesis) or SpeedFit(1.0, SPEED_PRIOR_LOG_SD, 0)

    def predict(self, distinct: float | None, cycled: float | None = None) -> dict[str, Any]:
        """Predicted judge chars/s with its 2-sd band, from a trial's local distinct and cycled figures."""
        h = self.hypothesis if (self.hypothesis == "distinct" or cycled) else "distinct"
        local = cycled if h == "cycled" else distinct
        if not local:
            return {"chars_per_s": None, "chars_per_s_lo": None, "chars_per_s_hi": None, "hypothesis": None}
        f = self.fit_for(h)
        speed = local * f.ratio
        band = math.exp(2 * f.log_sd)
        return {"chars_per_s": speed, "chars_per_s_lo": speed / band, "chars_per_s_hi": speed * band,
                "hypothesis": h}

    def to_dict(self) -> dict[str, Any]:
        return {"hypothesis": self.hypothesis, "n": self.n, "fits": {h: asdict(f) for h, f in self.fits.items()}}

    @classmethod
    def fit(cls, points: Sequence[dict[str, Any]]) -> "SpeedModel":
        """`points`: dicts with judge_speed and local_speed (distinct), local_speed_cycled when known."""
        fits: dict[str, SpeedFit] = {}
        for h, key in (("distinct", "local_speed"), ("cycled", "local_speed_cycled")):
            pts = [p for p in points if p.get("judge_speed") and p.get(key)]
            if pts:
                fits[h] = _fit([math.log(p["judge_speed"] / p[key]) for p in pts])
        both = [p for p in points if p.get("judge_speed") and p.get("local_speed") and p.get("local_speed_cycled")]
        hypothesis = "distinct"
        if len(both) >= 2 and "cycled" in fits and "distinct" in fits:
            d = _fit([math.log(p["judge_speed"] / p["local_speed"]) for p in both]).log_sd
            c = _fit([math.log(p["judge_speed"] / p["local_speed_cycled"]) for p in both]).log_sd
            if c < CYCLED_MUST_BE_TIGHTER * d:
                hypothesis = "cycled"
        return cls(hypothesis, fits)


def _fit(logs: list[float]) -> SpeedFit:
    n = len(logs)
    sd = SPEED_PRIOR_LOG_SD if n == 1 else max(statistics.stdev(logs) * math.sqrt(1 + 1 / n), LOG_SD_FLOOR)
    return SpeedFit(math.exp(statistics.mean(logs)), sd, n)
