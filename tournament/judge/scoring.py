"""The judge's numbers: accuracy (exact), a diagnostic Chinese-aware RougeL, and characters/s.

`judge_accuracy` reproduces the judge's function line by line (docs/judge.md). Its consequence, which
decides everything: rouge-score's default tokenizer lowercases and keeps only ``[a-z0-9]+`` runs,
so jieba's segmentation is thrown away and every Chinese character is dropped. Only the order of
English words and numbers counts. `zh_rougeL` is for people: it does see Chinese.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from typing import Iterable, Sequence

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def _jieba():
    import warnings

    # jieba's own noise, not ours: invalid escapes in its regexes (SyntaxWarning, a
    # DeprecationWarning before 3.12) and setuptools' pkg_resources deprecation. Only its import.
    with warnings.catch_warnings():
        for category in (SyntaxWarning, DeprecationWarning, UserWarning):
            for message in (r"invalid escape sequence", r".*pkg_resources"):
                warnings.filterwarnings("ignore", message=message, category=category)
        import jieba

    jieba.setLogLevel(logging.WARNING)
    jieba.initialize()  # builds the prefix dict once (~1 s); never inside a timed region
    return jieba


@lru_cache(maxsize=1)
def _scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)


def warm_up() -> None:
    """Load jieba's dictionary and the rouge scorer now (call before anything is timed)."""
    _jieba()
    _scorer()


@lru_cache(maxsize=1 << 16)
def _cut(text: str) -> tuple[str, ...]:
    """jieba.lcut, memoised: references repeat across every trial of a sweep. Anything jieba
    cannot cut (None, a number) raises exactly as jieba.lcut would, unhashables a TypeError.

    Answers repeat in parts: the same build answering at another token cap or engine writes the
    same clauses. jieba itself cuts a text block by block (its ``re_han_default`` splits the text
    at spaces and punctuation, and each block is segmented alone), so the cut of a text is the
    cuts of its blocks in order, each memoised (tests/judge/test_scoring.py checks this against
    jieba.lcut on the book's QA texts)."""
    if not isinstance(text, str):
        return tuple(_jieba().lcut(text))
    return tuple(word for block in _jieba().re_han_default.split(text) if block for word in _cut_block(block))


@lru_cache(maxsize=1 << 18)
def _cut_block(block: str) -> tuple[str, ...]:
    return tuple(_jieba().lcut(block))


def _judge_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """The judge's loop, without the outer try (callers decide what an exception means)."""
    scorer = _scorer()
    predictions = list(predictions)
    if len(predictions) < len(references):
        predictions = predictions + [""] * (len(references) - len(predictions))
    scores: list[float] = []
    for pred, ref in zip(predictions, references):
        p = " ".join(_cut(pred))
        r = " ".join(_cut(ref))
        if not p.strip() or not r.strip():
            scores.append(0.0)
            continue
        scores.append(scorer.score(r, p)["rougeL"].fmeasure)
    return scores


def judge_accuracy(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Mean RougeL-F1 exactly as the judge computes it; any exception gives 0."""
    try:
        scores = _judge_scores(predictions, references)
        return sum(scores) / len(scores)
    except Exception:  # the judge's own behaviour: a broken submission scores 0
        log.warning("judge accuracy raised; scoring 0 as the judge does", exc_info=True)
        return 0.0


def judge_accuracy_and_scores(predictions: Sequence[str], references: Sequence[str]) -> tuple[float, list[float]]:
    """`judge_accuracy` and `judge_scores` in one pass (the common case scores every row once)."""
    try:
        scores = _judge_scores(predictions, references)
        return sum(scores) / len(scores), scores
    except Exception:
        return judge_accuracy(predictions, references), judge_scores(predictions, references)


def judge_scores(predictions: Sequence[str], references: Sequence[str]) -> list[float]:
    """Per-question judge scores (for answer tables); 0 for a row that cannot be scored."""
    out: list[float] = []
    padded = list(predictions) + [""] * max(0, len(references) - len(predictions))
    for pred, ref in zip(padded, references):
        try:
            out.append(_judge_scores([pred], [ref])[0])
        except Exception:
            out.append(0.0)
    return out


def _zh_tokens(text: str) -> list[str]:
    # jieba words with whitespace tokens removed; casefolded so "TILE_WIDTH" == "tile_width".
    return [w.casefold() for w in _cut(str(text)) if w.strip()]


def _lcs_len(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence, bit-parallel (Hyyrö 2004): one big-int step per
    token of `a` instead of a row of len(b) Python steps. A sweep scores every trial's answers,
    and the quadratic loop was most of a decode-only trial's time outside generation."""
    if not a or not b:
        return 0
    match: dict[str, int] = {}
    for j, y in enumerate(b):
        match[y] = match.get(y, 0) | (1 << j)
    full = (1 << len(b)) - 1
    v = full  # zero bits mark the columns where the LCS has grown
    for x in a:
        u = v & match.get(x, 0)
        v = ((v + u) | (v - u)) & full
    return len(b) - v.bit_count()


def zh_rougeL_one(prediction: str, reference: str) -> float:
    p, r = _zh_tokens(prediction), _zh_tokens(reference)
    if not p or not r:
        return 0.0
    lcs = _lcs_len(p, r)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(p), lcs / len(r)
    return 2 * precision * recall / (precision + recall)


def zh_rougeL(predictions: Sequence[str], references: Sequence[str]) -> float:
    """Diagnostic RougeL-F1 over jieba words (sees Chinese). Same padding as the judge."""
    if not references:
        return 0.0
    padded = list(predictions) + [""] * max(0, len(references) - len(predictions))
    return sum(zh_rougeL_one(p, r) for p, r in zip(padded, references)) / len(references)


def chars_per_s(answers: Iterable[object], predict_seconds: float) -> float:
    """The judge's speed: characters of all answers / seconds spent inside POST /predict."""
    total = sum(len(str(a)) for a in answers)
    return total / predict_seconds if predict_seconds > 0 else 0.0


def score_report(answers: Sequence[str], references: Sequence[str]) -> dict[str, float | int]:
    """What `tournament score` reports: judge accuracy, the diagnostic RougeL, and the padding."""
    return {
        "accuracy": judge_accuracy(answers, references),
        "zh_rougeL": zh_rougeL(answers, references),
        "n": len(references),
        "n_predictions": len(answers),
        "padded": max(0, len(references) - len(answers)),
    }


def score_table(report: dict[str, float | int], title: str):
    """`score_report` as a one-row rich table."""
    from rich.table import Table

    table = Table(title=title)
    for k in report:
        table.add_column(k)
    table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in report.values()))
    return table
