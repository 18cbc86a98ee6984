"""Seeded question templates for the train side only (never eval: that would be leakage).

The judge asks plain questions, but the course's training data taught models to expect
instructions such as ``简答：`` in front; adding a few of those to train rows makes a model
robust to both. Each original row gets ``n`` copies under ``n`` different templates, picked
with a seeded generator, so the same seed gives the same rows.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any, Sequence

from tournament.data.normalize import match_key

# "{q}" is the question. Kept short and close to what users type to a course judge.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "简答：{q}",
    "请回答：{q}",
    "问：{q}",
    "请用一句话回答：{q}",
    "只给结论：{q}",
    "面向评测：直接输出答案，不要解释。问题：{q}",
    "{q}（请简要回答）",
    "根据《Programming Massively Parallel Processors》回答：{q}",
)


@dataclass(frozen=True)
class AugmentedRow:
    question: str
    answer: str
    origin: int  # index of the row it was made from
    template: str


def augment_rows(rows: Sequence[Any], n: int, seed: int,
                 templates: Sequence[str] = DEFAULT_TEMPLATES) -> tuple[list[AugmentedRow], dict[str, Any]]:
    """``n`` templated copies of each row (question changed, answer kept) and a manifest record."""
    if n < 0:
        raise ValueError(f"augment count must be >= 0, got {n}")
    for t in templates:
        if t.count("{q}") != 1:
            raise ValueError(f"augmentation template {t!r} must contain '{{q}}' exactly once")
    n = min(n, len(templates))
    out: list[AugmentedRow] = []
    if n:
        for i, row in enumerate(rows):
            # one generator per row, seeded by (seed, question): adding or removing other rows
            # does not change which templates this row gets
            digest = hashlib.sha256(f"{seed}\0{row.question}".encode("utf-8")).hexdigest()
            rng = random.Random(int(digest[:16], 16))
            key = match_key(row.question)
            chosen = rng.sample(list(templates), n)
            for t in chosen:
                question = t.replace("{q}", row.question)
                if match_key(question) == key:
                    continue
                out.append(AugmentedRow(question, row.answer, i, t))
    record = {
        "applied_to": "train",
        "per_row": n,
        "seed": seed,
        "templates": list(templates),
        "rows_added": len(out),
    }
    return out, record
