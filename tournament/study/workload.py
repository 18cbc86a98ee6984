"""The speed workload: what the sweep's speed POST holds, sized and shaped like the judge's.

The judge times one POST of its whole set: 292 (basic) or 358 (bonus) questions, which the public
samples (100 / 92) are only part of. The rest are new to the submitted build: it writes its own
answers to them, of its own lengths. So the speed POST is the set's samples plus distinct
questions from a pool no build was trained on (a split's ``speed_pool``, see
tournament/data/speed_pool.py), drawn with a fixed seed and shuffled together, up to the judge's
count: every question distinct, as nothing says the judge's set repeats one.

The samples' answers in that POST are scored (seen accuracy); the pool's are scored too, as a
diagnostic (the shipped build on questions it has not seen). ``cycled`` is the other hypothesis:
the samples repeated up to the same count, where serve.py's dedup makes the repeats free.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence


@dataclass
class SpeedWorkload:
    questions: list[str]
    references: list[str]
    sample_positions: list[int]  # where the set's public samples sit in `questions`
    pool_positions: list[int] = field(default_factory=list)

    @property
    def distinct(self) -> bool:
        return len(set(self.questions)) == len(self.questions)

    def __len__(self) -> int:
        return len(self.questions)


def judge_workload(samples: Sequence[str], sample_refs: Sequence[str], pool: Sequence[tuple[str, str]],
                   size: int, seed: int = 0) -> SpeedWorkload:
    """The set's `samples` plus `size - len(samples)` distinct `pool` questions (seeded draw), in a
    seeded order. A ValueError when the pool cannot fill it with distinct questions."""
    taken = set(samples)
    if len(taken) != len(samples):
        raise ValueError("speed workload: the set's samples repeat a question")
    need = size - len(samples)
    if need < 0:
        raise ValueError(f"speed workload: {len(samples)} samples are more than the {size} questions of the POST")
    rng = random.Random(seed)
    candidates = [(q, a) for q, a in pool if q not in taken]
    candidates = list({q: (q, a) for q, a in candidates}.values())  # one of each question
    if len(candidates) < need:
        raise ValueError(f"speed workload: the pool holds {len(candidates)} distinct questions that are not "
                         f"samples; {need} are needed for a POST of {size} (build the split with a larger "
                         "speed_pool, or set speed.questions lower)")
    drawn = rng.sample(candidates, need)
    items = [(q, r, "sample") for q, r in zip(samples, sample_refs)] + [(q, a, "pool") for q, a in drawn]
    rng.shuffle(items)
    return SpeedWorkload(questions=[q for q, _, _ in items], references=[r for _, r, _ in items],
                         sample_positions=[i for i, (_, _, kind) in enumerate(items) if kind == "sample"],
                         pool_positions=[i for i, (_, _, kind) in enumerate(items) if kind == "pool"])


def cycled(samples: Sequence[str], size: int) -> list[str]:
    """The samples repeated in order up to `size` questions (what cycling the public files gives)."""
    return [samples[i % len(samples)] for i in range(size)]


@dataclass
class SpeedPlan:
    """How the track's speed POST is built: the set's samples plus `pool` questions up to `size`."""

    pool: list[tuple[str, str]]
    size: int
    seed: int = 0
    cycled: bool = True

    def workload(self, samples: Sequence[str], refs: Sequence[str]) -> SpeedWorkload:
        return judge_workload(samples, refs, self.pool, self.size, self.seed)
