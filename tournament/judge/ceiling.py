"""What max_tokens costs a model that knows the answers: the judge accuracy of the references
themselves, cut at N tokens of the served model's tokenizer.

The honest held-out sweep favours short answers (every extra English token costs precision), but
the judge's sets repeat the public samples, which a refit model has memorised: an answer cut at
max_tokens loses what comes after. The ceiling says which caps are safe for a set.
"""

from __future__ import annotations

from typing import Any, Sequence


def token_ids(references: Sequence[str], tokenizer: Any) -> list[list[int]]:
    """Each reference as the served tokenizer's ids (no special tokens): tokenized once, then cut."""
    return [list(tokenizer(str(r), add_special_tokens=False)["input_ids"]) for r in references]


def answer_ceiling(references: Sequence[str], ids: Sequence[Sequence[int]], tokenizer: Any,
                   caps: Sequence[int]) -> list[dict[str, Any]]:
    """For each cap: judge accuracy of the references (`ids` from `token_ids`) cut at `cap` tokens
    against themselves, and how many references are longer than the cap."""
    from tournament.judge.scoring import judge_accuracy

    refs = [str(r) for r in references]
    rows = []
    for cap in caps:
        cut = [tokenizer.decode(x[:cap], skip_special_tokens=True) for x in ids]
        rows.append({"max_tokens": int(cap), "accuracy": judge_accuracy(cut, refs),
                     "answers_cut": sum(len(x) > cap for x in ids), "n": len(refs)})
    return rows


def quantiles(counts: Sequence[int]) -> dict[str, int]:
    s = sorted(counts)
    if not s:
        return {}
    at = lambda p: s[min(len(s) - 1, int(p * len(s)))]  # noqa: E731
    return {"p50": at(0.5), "p90": at(0.9), "max": s[-1]}


def render(console: Any, source: Any, n: int, tokens: dict[str, int], rows: Sequence[dict[str, Any]]) -> None:
    """The references' token lengths, then one table row per cap (`answer_ceiling`'s rows)."""
    from rich.table import Table

    console.print(f"{source}: {n} references; tokens p50 {tokens.get('p50')}, p90 {tokens.get('p90')}, "
                  f"max {tokens.get('max')}")
    table = Table()
    for col in ("max_tokens", "ceiling (judge acc.)", "answers cut"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(str(r["max_tokens"]), f"{r['accuracy']:.3f}", f"{r['answers_cut']}/{r['n']}")
    console.print(table)
