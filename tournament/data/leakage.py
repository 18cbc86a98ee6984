"""Leakage report: which eval rows the training side has already seen, and how.

An eval row leaks when any of these holds against the train rows:
- ``question``: the same normalised question is in train;
- ``answer``: the same normalised answer (of at least ``min_answer_chars``) is in train;
- ``template``: the same core question once discovered templates are stripped;
- ``near_question`` / ``near_answer``: a train core (frame slot)/answer within the n-gram Jaccard
  threshold, exactly as the grouping compares them;
- ``group``: the same variant group (:func:`tournament.data.groups.group_rows` over train + eval),
  which also covers chains (``A`` shares an answer with ``B``, ``B`` is a template of ``C``).

The standard is the default :class:`GroupingRules` whatever rules a split was built with, so a
split built with looser rules is still checked strictly.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from tournament.data.groups import GroupingRules, HasQA, group_rows
from tournament.data.neardup import jaccard_join, shingles
from tournament.data.normalize import match_key


@dataclass
class LeakItem:
    eval_index: int
    question: str
    reasons: list[str]
    train_examples: list[str] = field(default_factory=list)
    similarity: float | None = None  # best near-duplicate similarity, when that is a reason


@dataclass
class LeakageReport:
    n_train: int
    n_eval: int
    items: list[LeakItem]
    rules: GroupingRules

    @property
    def clean(self) -> bool:
        return not self.items

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = defaultdict(int)
        for item in self.items:
            for r in item.reasons:
                out[r] += 1
        return dict(sorted(out.items()))

    def to_dict(self, max_items: int | None = None) -> dict[str, Any]:
        items = self.items if max_items is None else self.items[:max_items]
        return {
            "clean": self.clean,
            "n_train": self.n_train,
            "n_eval": self.n_eval,
            "leaking_eval_rows": len(self.items),
            "by_reason": self.counts(),
            "items": [asdict(i) for i in items],
            "items_shown": len(items),
            "rules": self.rules.to_dict(),
        }


def check_leakage(train: Sequence[HasQA], eval_rows: Sequence[HasQA],
                  rules: GroupingRules | None = None) -> LeakageReport:
    rules = rules or GroupingRules()
    n_train = len(train)
    rows = list(train) + list(eval_rows)
    grouping = group_rows(rows, rules)
    train_groups: dict[str, list[int]] = defaultdict(list)
    for i in range(n_train):
        train_groups[grouping.groups[i]].append(i)

    train_q = {match_key(r.question): i for i, r in enumerate(train)}
    train_a: dict[str, int] = {}
    for i, r in enumerate(train):
        k = match_key(r.answer)
        if len(k) >= rules.min_answer_chars:
            train_a.setdefault(k, i)
    train_core = {grouping.cores[i]: i for i in range(n_train)}

    reasons: dict[int, dict[str, int]] = defaultdict(dict)  # eval index -> reason -> a train row
    best_sim: dict[int, float] = {}
    for e, row in enumerate(eval_rows):
        gi = n_train + e
        if (k := match_key(row.question)) in train_q:
            reasons[e]["question"] = train_q[k]
        if (k := match_key(row.answer)) in train_a:
            reasons[e]["answer"] = train_a[k]
        if grouping.cores[gi] in train_core:
            reasons[e]["template"] = train_core[grouping.cores[gi]]
        if grouping.groups[gi] in train_groups:
            reasons[e]["group"] = train_groups[grouping.groups[gi]][0]

    if rules.use_near:
        def texts(values: Sequence[str], lo: int, hi: int) -> tuple[list[int], list[frozenset[str]]]:
            first: dict[str, int] = {}  # each distinct text once: templated copies repeat a lot
            for i in range(lo, hi):
                if len(values[i]) >= rules.min_near_chars and values[i] not in first:
                    first[values[i]] = i
            idx = list(first.values())
            return idx, [shingles(values[i], rules.ngram) for i in idx]

        answers = [match_key(r.answer) for r in rows]
        # the texts the grouping compares: frame slots, not "为了评测,请用最短答案说明{kernel}"
        for name, values in (("near_question", grouping.bases), ("near_answer", answers)):
            e_idx, e_sets = texts(values, n_train, len(rows))
            t_idx, t_sets = texts(values, 0, n_train)
            same_text: dict[str, list[int]] = defaultdict(list)  # eval rows sharing a text
            for e in range(n_train, len(rows)):
                same_text[values[e]].append(e - n_train)
            for a, b, sim in jaccard_join(e_sets, t_sets, rules.near_threshold):
                for e in same_text[values[e_idx[a]]]:
                    reasons[e].setdefault(name, t_idx[b])
                    best_sim[e] = max(best_sim.get(e, 0.0), sim)

    items = []
    for e in sorted(reasons):
        train_rows = sorted(set(reasons[e].values()))[:3]
        items.append(LeakItem(
            eval_index=e,
            question=eval_rows[e].question,
            reasons=[r for r in ("question", "answer", "template", "near_question", "near_answer", "group") if r in reasons[e]],
            train_examples=[train[i].question for i in train_rows],
            similarity=round(best_sim[e], 4) if e in best_sim else None,
        ))
    return LeakageReport(n_train, len(eval_rows), items, rules)


def render_report(console: Any, report: dict[str, Any], max_items: int = 10) -> None:
    """A `LeakageReport.to_dict()` on a rich console: clean, or the leaking eval rows and why."""
    from rich.table import Table

    if report["clean"]:
        console.print(f"[green]leakage: none[/] ({report['n_eval']} eval rows checked against {report['n_train']} train rows)")
        return
    console.print(f"[red]leakage: {report['leaking_eval_rows']} of {report['n_eval']} eval rows[/] by reason {report['by_reason']}")
    table = Table()
    for col in ("eval #", "question", "reasons", "train example"):
        table.add_column(col, overflow="fold")
    for item in report["items"][:max_items]:
        table.add_row(str(item["eval_index"]), item["question"][:60], ",".join(item["reasons"]),
                      (item["train_examples"] or [""])[0][:60])
    console.print(table)
