"""Near-duplicate text by character n-gram Jaccard similarity, exact and fast.

Uses prefix filtering (Chaudhuri et al. 2006; Bayardo et al. 2007): order n-grams from rarest to
most common; two sets with Jaccard >= t must share at least one n-gram among the first
``|A| - ceil(t*|A|) + 1`` n-grams of each. Indexing only those prefixes turns the all-pairs
comparison into a handful of candidates per text, then each candidate is verified exactly.
No hashing tricks, so every reported pair really is above the threshold and none is missed.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Iterable, Sequence

from tournament.data.normalize import match_key

DEFAULT_N = 3
DEFAULT_THRESHOLD = 0.8


def shingles(text: str, n: int = DEFAULT_N) -> frozenset[str]:
    """Character n-grams of the match key (whitespace/punctuation width folded)."""
    key = match_key(text)
    if len(key) <= n:
        return frozenset([key]) if key else frozenset()
    return frozenset(key[i:i + n] for i in range(len(key) - n + 1))


def jaccard(a: frozenset[str] | set[str], b: frozenset[str] | set[str]) -> float:
    if not a or not b:
        return 0.0
    inter = len(a & b)
    return inter / (len(a) + len(b) - inter)


def _prefix_len(size: int, threshold: float) -> int:
    return size - math.ceil(threshold * size) + 1


def jaccard_join(
    left: Sequence[frozenset[str]],
    right: Sequence[frozenset[str]] | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> list[tuple[int, int, float]]:
    """Pairs (i, j, similarity) with Jaccard >= threshold.

    With ``right=None`` a self-join of ``left`` (i < j); otherwise i indexes ``left`` and j
    indexes ``right``. Empty sets never match.
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    self_join = right is None
    other = left if right is None else right
    freq: Counter[str] = Counter()
    for s in left:
        freq.update(s)
    if not self_join:
        for s in other:
            freq.update(s)
    # rarest first; ties broken by the n-gram itself so the order (and the result) is deterministic
    def ordered(s: Iterable[str]) -> list[str]:
        return sorted(s, key=lambda g: (freq[g], g))

    index: dict[str, list[int]] = defaultdict(list)
    for j, s in enumerate(other):
        if s:
            for g in ordered(s)[: _prefix_len(len(s), threshold)]:
                index[g].append(j)

    pairs: list[tuple[int, int, float]] = []
    for i, s in enumerate(left):
        if not s:
            continue
        seen: set[int] = set()
        for g in ordered(s)[: _prefix_len(len(s), threshold)]:
            for j in index.get(g, ()):
                if (self_join and j <= i) or j in seen:
                    continue
                seen.add(j)
                t = other[j]
                # size filter: |B| must lie in [t|A|, |A|/t] before computing the intersection
                if len(t) < threshold * len(s) or len(s) < threshold * len(t):
                    continue
                sim = jaccard(s, t)
                if sim >= threshold:
                    pairs.append((i, j, sim))
    return pairs


class NearIndex:
    """Incremental index for "is this text near any text seen so far?" (teacher dedupe).

    Every n-gram of every added set is indexed. A query needs to probe only
    ``|A| - ceil(t*|A|) + 1`` of its own n-grams (any of them: a set with Jaccard >= t shares
    at least ``t*|A|`` n-grams with A), so it probes its rarest ones and verifies exactly.
    """

    def __init__(self, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.threshold = threshold
        self.sets: list[frozenset[str]] = []
        self.postings: dict[str, list[int]] = defaultdict(list)

    def add(self, s: frozenset[str]) -> int:
        self.sets.append(s)
        for g in s:
            self.postings[g].append(len(self.sets) - 1)
        return len(self.sets) - 1

    def query(self, s: frozenset[str]) -> list[tuple[int, float]]:
        if not s:
            return []
        probe = sorted(s, key=lambda g: (len(self.postings.get(g, ())), g))[: _prefix_len(len(s), self.threshold)]
        seen: set[int] = set()
        hits = []
        for g in probe:
            for j in self.postings.get(g, ()):
                if j in seen:
                    continue
                seen.add(j)
                sim = jaccard(s, self.sets[j])
                if sim >= self.threshold:
                    hits.append((j, sim))
        return hits
