"""The judge's question sets, defined once: basic (292 questions) and bonus (358).

The course's public files call the bonus set "plus" (`plus.docx`), and a data build writes that
label in a row's ``"set"``; "plus" is accepted wherever a set is read and always means bonus.
The registry lives here, under data/, because data builds label their rows with it and nothing
under data/ depends on the judge package; `tournament.judge.rules` re-exports it for the judge's
side.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

JudgeSet = Literal["basic", "bonus"]


@dataclass(frozen=True)
class QuestionSet:
    name: JudgeSet
    aliases: tuple[str, ...]  # other names accepted for it
    questions: int  # how many questions the judge asks of it
    data_label: str  # what a data build writes in a row's "set" (the course's file name)
    file_words: tuple[str, ...]  # words in a course file's name that mark a file of this set


QUESTION_SETS: dict[str, QuestionSet] = {
    "basic": QuestionSet("basic", (), 292, "basic", ("basic", "基础")),
    "bonus": QuestionSet("bonus", ("plus",), 358, "plus", ("plus", "bonus", "加分")),
}
JUDGE_SETS: tuple[JudgeSet, ...] = tuple(s.name for s in QUESTION_SETS.values())
DATA_SET_LABEL = {s.name: s.data_label for s in QUESTION_SETS.values()}
_BY_NAME = {n: s.name for s in QUESTION_SETS.values() for n in (s.name, *s.aliases)}


def judge_set(name: str | None, default: JudgeSet | None = None) -> JudgeSet | None:
    """Normalise a set name ("basic", "bonus" or "plus") to "basic" / "bonus"; None stays None
    (or `default`). Anything else is a ValueError naming the accepted names."""
    if name is None or name == "":
        return default
    key = str(name).strip().lower()
    if key not in _BY_NAME:
        raise ValueError(f"unknown judge set {name!r}: use basic or bonus (plus is accepted for bonus)")
    return _BY_NAME[key]  # type: ignore[return-value]


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
    for s in QUESTION_SETS.values():
        if any(w in stem for w in s.file_words):
            return s.data_label
    return None
