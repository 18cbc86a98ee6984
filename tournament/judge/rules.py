"""The judge's sets and limits, defined once.

- Two question sets: **basic** (292 questions) and **bonus** (358). The course's public files call
  the bonus set "plus" (`plus.docx`, and a data build's rows say ``"set": "plus"``), so "plus" is
  accepted wherever a set is read and always means bonus.
- Limits: the judge polls ``GET /`` for up to the health limit (MetaX 180 s; Paratera 420 s), then
  all ``POST /predict`` calls together get the predict limit (360 s). The course pass mark is 0.35
  judge accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

JudgeSet = Literal["basic", "bonus"]
JUDGE_SETS: tuple[JudgeSet, ...] = ("basic", "bonus")
_ALIASES = {"basic": "basic", "bonus": "bonus", "plus": "bonus"}
# What a data build writes in a row's "set" for each judge set (the course's file names).
DATA_SET_LABEL = {"basic": "basic", "bonus": "plus"}

QUESTIONS = {"basic": 292, "bonus": 358}
# per hardware track; the Moore Threads track's limit is not known
HEALTH_TIMEOUT = {"metax": 180.0, "paratera": 420.0}
PREDICT_TIMEOUT = 360.0
PASS_MARK = 0.35


def judge_set(name: str | None, default: JudgeSet | None = None) -> JudgeSet | None:
    """Normalise a set name ("basic", "bonus" or "plus") to "basic" / "bonus"; None stays None
    (or `default`). Anything else is a ValueError naming the accepted names."""
    if name is None or name == "":
        return default
    key = str(name).strip().lower()
    if key not in _ALIASES:
        raise ValueError(f"unknown judge set {name!r}: use basic or bonus (plus is accepted for bonus)")
    return _ALIASES[key]  # type: ignore[return-value]


def row_in_set(row_set: str | None, wanted: str) -> bool:
    """Does a data row labelled `row_set` ("basic", "plus", "bonus" or None) belong to `wanted`?"""
    try:
        return row_set is not None and judge_set(row_set) == judge_set(wanted)
    except ValueError:
        return False


def set_from_name(path: str | Path) -> str | None:
    """The set label of a course file from its name: "basic" (basic, 基础) or "plus" (plus, bonus,
    加分), the label a data build writes; None for other files."""
    stem = Path(path).stem.lower()
    if "basic" in stem or "基础" in stem:
        return DATA_SET_LABEL["basic"]
    if "plus" in stem or "bonus" in stem or "加分" in stem:
        return DATA_SET_LABEL["bonus"]
    return None


@dataclass(frozen=True)
class JudgeLimits:
    questions: int
    health_timeout: float
    predict_timeout: float
    pass_mark: float


def limits(judged: str = "basic", hardware: str = "metax") -> JudgeLimits:
    """The limits a submission meets on one judge set and hardware track."""
    judged_set = judge_set(judged, "basic")
    if hardware not in HEALTH_TIMEOUT:
        raise ValueError(f"unknown hardware track {hardware!r}: one of {sorted(HEALTH_TIMEOUT)}")
    return JudgeLimits(QUESTIONS[judged_set], HEALTH_TIMEOUT[hardware], PREDICT_TIMEOUT, PASS_MARK)
