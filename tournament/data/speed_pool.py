"""The speed pool: distinct questions held out of every build, so a build answers them as it will
answer the judge's unseen questions.

The judge's speed is measured on one POST of its whole set (292 basic / 358 bonus questions). Only
the public samples (100 / 92) are known; the rest are new to the submitted model, which writes its
own answers to them, of its own lengths. To measure speed on such a batch, a split can hold out a
pool of variant groups from its training side, the refit included: seeded, whole groups (a
question's templated copies and re-phrasings go together), taken until the pool holds the asked
number of distinct core questions. The pool is written beside the split (``speed_pool.jsonl``,
one row per distinct core question) and checked against the training rows for leakage.

What it costs: those groups are not in the build you submit (about a quarter of the book's own
rows for 266 questions). What it cannot capture: the judge's hidden questions come from the
course's author, the pool from the training file's (the book's glossary and per-topic points):
their answer lengths differ.
"""

from __future__ import annotations

import random
from typing import Sequence


def hold_out_pool(groups: Sequence[str], cores: Sequence[str], candidates: Sequence[int], questions: int,
                  seed: int) -> tuple[set[str], list[int]]:
    """(the held-out groups, one row index per distinct core question of them, in pool order).

    `candidates`: indices of the rows that may join the pool (training rows whose group touches no
    eval row). Groups are taken in a seeded order until `questions` distinct core questions are in;
    a ValueError if the candidates hold fewer."""
    by_group: dict[str, list[int]] = {}
    for i in candidates:
        by_group.setdefault(groups[i], []).append(i)
    order = sorted(by_group)
    random.Random(seed).shuffle(order)
    chosen: set[str] = set()
    picked: list[int] = []
    seen_cores: set[tuple[str, str]] = set()
    for g in order:
        if len(picked) >= questions:
            break
        chosen.add(g)
        for i in by_group[g]:
            key = (g, cores[i])
            if key not in seen_cores:
                seen_cores.add(key)
                picked.append(i)
    if len(picked) < questions:
        raise ValueError(f"speed pool: only {len(picked)} distinct questions in the {len(by_group)} variant groups "
                         f"that no eval row touches; asked for {questions}")
    return chosen, picked
