"""Normalised keys for matching text (never for training or scoring, which keep the original).

NFKC folds full-width ASCII (``：`` -> ``:``, ``（`` -> ``(``, ``Ａ`` -> ``A``); the table below
folds the CJK punctuation NFKC leaves alone (``。``, ``、``, curly quotes, ...).
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

_PUNCT = str.maketrans({
    "。": ".", "、": ",", "，": ",", "；": ";", "：": ":", "？": "?", "！": "!",
    "“": '"', "”": '"', "‘": "'", "’": "'", "「": '"', "」": '"', "『": '"', "』": '"',
    "【": "[", "】": "]", "《": "<", "》": ">", "〈": "<", "〉": ">",
    "—": "-", "–": "-", "－": "-", "～": "~", "·": ".", "…": "...",
})
_SPACE = re.compile(r"\s+")
_EDGE_PUNCT = ".,;:?!\"'()[]<>-~ "


def normalize_text(text: str) -> str:
    """NFKC + CJK punctuation folded to ASCII + lower case + whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).translate(_PUNCT).lower()
    return _SPACE.sub(" ", folded).strip()


@lru_cache(maxsize=1 << 16)  # grouping asks for the same (long) answers many times
def dense_key(text: str) -> str:
    """:func:`normalize_text` without any whitespace (punctuation kept: templates end in it)."""
    return _SPACE.sub("", normalize_text(text))


def strip_edges(key: str) -> str:
    return key.strip(_EDGE_PUNCT)


@lru_cache(maxsize=1 << 16)
def match_key(text: str) -> str:
    """Key under which two texts count as the same: no whitespace, no edge punctuation."""
    return strip_edges(dense_key(text))
