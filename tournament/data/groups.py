"""Variant groups: which rows ask the same *base question*.

Training files repeat each question under many templates (``简答：X``, ``只给结论：X``,
``面向评测：直接输出答案，不要解释。问题：X``) and re-phrase it around a term (``简述X。``,
``如何理解X？``) with the same answer. Scoring on any of them after training on another is
scoring on training data, so a split must keep a whole group on one side.

Rules, applied in this order with union-find (each union that joins two groups is counted and
a few examples are kept, so the report says what merged and why):

1. ``question`` — same normalised question (:func:`match_key`).
2. ``template`` — same *core* after stripping affix templates. Templates are discovered from the
   data: a prefix (or suffix) ``T`` is a template when ``T + Q`` is a question of the data for at
   least ``min_template_support`` different questions ``Q`` that are themselves in the data, cut
   at punctuation on either side (so ``malloc`` shared by ``简述cudaMalloc`` and ``简述cuda`` is
   not one). Stacked templates are stripped repeatedly.
3. ``answer`` — same normalised answer (answers of at least ``min_answer_chars`` characters).
4. ``frame`` — same *slot* in a question frame ``P{slot}S`` (``简述{}。``, ``如何理解{}?``). Frames
   are discovered from rows that share an answer: the text around the longest common substring
   of their cores (particles such as ``的`` at its edges go to the frame); a frame (at least two
   characters around the slot) is kept when it is seen with ``min_template_support`` different
   slots.
5. ``near_question`` / ``near_answer`` — character n-gram Jaccard >= ``near_threshold`` between
   cores (with any frame stripped to its slot) or between answers of at least ``min_near_chars``
   characters (exact all-pairs via prefix filtering, see :mod:`neardup`). Short texts are left
   out: ``请用要点说明warp`` and ``请用要点说明warp调度`` are 0.8 similar and ask different things.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from difflib import SequenceMatcher
from typing import Any, Protocol, Sequence

from tournament.data.neardup import jaccard_join, shingles
from tournament.data.normalize import dense_key, match_key, strip_edges

_BOUNDARY = set(".,;:?!\"'()[]<>")
RULE_ORDER = ("question", "template", "answer", "frame", "near_question", "near_answer")


class HasQA(Protocol):
    question: str
    answer: str


@dataclass(frozen=True)
class GroupingRules:
    """Knobs of the grouping; recorded in every manifest."""

    min_template_support: int = 5
    min_core_chars: int = 4
    min_answer_chars: int = 8
    min_slot_chars: int = 2
    near_threshold: float = 0.8
    ngram: int = 3
    min_near_chars: int = 16
    use_templates: bool = True
    use_answers: bool = True
    use_frames: bool = True
    use_near: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Template:
    kind: str  # "prefix", "suffix" or "frame"
    text: str  # normalised; a frame is written "P{}S"
    support: int  # distinct base questions (affixes) or slots (frames) it was seen with
    rows: int = 0  # rows it applied to when grouping


@dataclass
class Grouping:
    groups: list[str]  # group id of each row
    cores: list[str]  # normalised core question of each row (templates stripped)
    templates: list[Template]
    merges: dict[str, int]
    examples: dict[str, list[tuple[str, str]]]
    rules: GroupingRules = field(default_factory=GroupingRules)
    bases: list[str] = field(default_factory=list)  # core, or its slot when a frame matched

    @property
    def n_groups(self) -> int:
        return len(set(self.groups))

    def summary(self, max_examples: int = 3) -> dict[str, Any]:
        sizes = Counter(Counter(self.groups).values())
        return {
            "rows": len(self.groups),
            "groups": self.n_groups,
            "group_sizes": {str(k): v for k, v in sorted(sizes.items())},
            "merges": dict(self.merges),
            "templates": [asdict(t) for t in self.templates],
            "examples": {k: [list(p) for p in v[:max_examples]] for k, v in self.examples.items()},
            "rules": self.rules.to_dict(),
        }


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        root = x
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[x] != root:  # path compression
            self.parent[x], x = root, self.parent[x]
        return root

    def union(self, a: int, b: int) -> bool:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return False
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return True


def discover_affixes(keys: Sequence[str], min_support: int, min_core: int) -> tuple[Counter, Counter]:
    """Prefix/suffix templates: T with T+Q (or Q+T) and Q both questions of the data.

    Only splits at a boundary count: punctuation on either side of the cut ("简答:" + "Q",
    "Q?" + "请简要回答"). Without that rule "简述cuda" + "malloc" would make "malloc" a template
    of the rows about cudaMalloc.
    """
    distinct = set(keys)
    prefixes: Counter[str] = Counter()
    suffixes: Counter[str] = Counter()
    for k in distinct:
        for i in range(1, len(k) - min_core + 1):
            if k[i:] in distinct and (k[i - 1] in _BOUNDARY or k[i] in _BOUNDARY):
                prefixes[k[:i]] += 1
            j = len(k) - i
            if k[:j] in distinct and (k[j - 1] in _BOUNDARY or k[j] in _BOUNDARY):
                suffixes[k[j:]] += 1
    prefixes = Counter({t: c for t, c in prefixes.items() if c >= min_support})
    suffixes = Counter({t: c for t, c in suffixes.items() if c >= min_support})
    return prefixes, suffixes


def strip_templates(key: str, prefixes: Sequence[str], suffixes: Sequence[str], min_core: int) -> str:
    """Strip the longest matching affix templates, repeatedly (templates may be stacked)."""
    changed = True
    while changed:
        changed = False
        for p in prefixes:  # longest first
            if key.startswith(p) and len(key) - len(p) >= min_core:
                key, changed = key[len(p):], True
                break
        for s in suffixes:
            if key.endswith(s) and len(key) - len(s) >= min_core:
                key, changed = key[: len(key) - len(s)], True
                break
    return key


# A slot is a term: the particles a longest common substring tends to swallow ("数据并行性的"
# from "请给出数据并行性的例子" / "请解释数据并行性的含义") belong to the frame.
_PARTICLES = set("的之了是和与及")


def _trim_particles(text: str, lo: int, hi: int, min_slot: int) -> tuple[int, int]:
    while hi - lo > min_slot and text[lo] in _PARTICLES | _BOUNDARY:
        lo += 1
    while hi - lo > min_slot and text[hi - 1] in _PARTICLES | _BOUNDARY:
        hi -= 1
    return lo, hi


def discover_frames(cores: Sequence[str], answer_keys: Sequence[str | None], min_support: int,
                    min_slot: int, max_per_answer: int = 12) -> Counter:
    """Frames P{}S learned from cores that share an answer: the text around their common term."""
    by_answer: dict[str, list[str]] = defaultdict(list)
    for core, akey in zip(cores, answer_keys):
        if akey is not None and core not in by_answer[akey]:
            by_answer[akey].append(core)
    slots: dict[tuple[str, str], set[str]] = defaultdict(set)
    for variants in by_answer.values():
        variants = sorted(variants)[:max_per_answer]
        for x in range(len(variants)):
            for y in range(x + 1, len(variants)):
                a, b = variants[x], variants[y]
                m = SequenceMatcher(None, a, b, autojunk=False).find_longest_match(0, len(a), 0, len(b))
                if m.size < min_slot:
                    continue
                lo, hi = _trim_particles(a, m.a, m.a + m.size, min_slot)
                shift = lo - m.a
                slot = a[lo:hi]
                b_lo, b_hi = m.b + shift, m.b + shift + (hi - lo)
                for frame in ((a[:lo], a[hi:]), (b[:b_lo], b[b_hi:])):
                    if len(frame[0]) + len(frame[1]) >= 2:  # a one-character frame is a typo, not a template
                        slots[frame].add(slot)
    return Counter({f"{p}{{}}{s}": len(v) for (p, s), v in slots.items() if len(v) >= min_support})


def _group_id(key: str) -> str:
    return "g" + hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]


def group_rows(rows: Sequence[HasQA], rules: GroupingRules | None = None) -> Grouping:
    """Assign every row a group id (stable: derived from the group's smallest core)."""
    rules = rules or GroupingRules()
    n = len(rows)
    uf = _UnionFind(n)
    merges: dict[str, int] = {r: 0 for r in RULE_ORDER}
    examples: dict[str, list[tuple[str, str]]] = defaultdict(list)

    def union(i: int, j: int, rule: str) -> None:
        if uf.union(i, j):
            merges[rule] += 1
            if len(examples[rule]) < 5:
                examples[rule].append((rows[i].question, rows[j].question))

    def union_by_key(keys: Sequence[str | None], rule: str) -> None:
        first: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k is None:
                continue
            if k in first:
                union(first[k], i, rule)
            else:
                first[k] = i

    qkeys = [match_key(r.question) for r in rows]
    union_by_key(qkeys, "question")

    dense = [dense_key(r.question) for r in rows]  # edge punctuation kept: templates end in it
    pre, suf = Counter(), Counter()
    if rules.use_templates:
        pre, suf = discover_affixes(dense, rules.min_template_support, rules.min_core_chars)
    pre_sorted = sorted(pre, key=lambda t: (-len(t), t))
    suf_sorted = sorted(suf, key=lambda t: (-len(t), t))
    cores = [strip_edges(strip_templates(k, pre_sorted, suf_sorted, rules.min_core_chars)) for k in dense]
    union_by_key(cores, "template")
    used: Counter[str] = Counter()
    for k in dense:
        for p in pre_sorted:
            if k.startswith(p) and len(k) - len(p) >= rules.min_core_chars:
                used["prefix:" + p] += 1
                break
        for s in suf_sorted:
            if k.endswith(s) and len(k) - len(s) >= rules.min_core_chars:
                used["suffix:" + s] += 1
                break

    akeys: list[str | None] = []
    for r in rows:
        k = match_key(r.answer)
        akeys.append(k if len(k) >= rules.min_answer_chars else None)
    if rules.use_answers:
        union_by_key(akeys, "answer")

    frames: Counter[str] = Counter()
    bases = list(cores)
    if rules.use_frames:
        frames = discover_frames(cores, akeys, rules.min_template_support, rules.min_slot_chars)
        parsed = sorted(((f.split("{}")[0], f.split("{}")[1]) for f in frames), key=lambda ps: (-len(ps[0]) - len(ps[1]), ps))
        slot_first: dict[str, int] = {}
        for i, core in enumerate(cores):
            for p, s in parsed:
                if core.startswith(p) and core.endswith(s) and len(core) - len(p) - len(s) >= rules.min_slot_chars:
                    slot = core[len(p): len(core) - len(s)]
                    if bases[i] == core:  # the longest frame gives the base for near-duplicates
                        bases[i] = slot
                    used[f"frame:{p}{{}}{s}"] += 1
                    if slot in slot_first:
                        union(slot_first[slot], i, "frame")
                    else:
                        slot_first[slot] = i

    if rules.use_near:
        # near-duplicates among distinct cores / answers only: identical ones are merged already
        for rule, texts in (("near_question", bases), ("near_answer", akeys)):
            first: dict[str, int] = {}
            for i, t in enumerate(texts):
                if t is not None and len(t) >= rules.min_near_chars and t not in first:
                    first[t] = i
            uniq = list(first)
            sets = [shingles(t, rules.ngram) for t in uniq]
            for a, b, _ in jaccard_join(sets, threshold=rules.near_threshold):
                union(first[uniq[a]], first[uniq[b]], rule)

    root_key: dict[int, str] = {}
    for i in range(n):
        r = uf.find(i)
        if r not in root_key or cores[i] < root_key[r]:
            root_key[r] = cores[i]
    groups = [_group_id(root_key[uf.find(i)]) for i in range(n)]

    templates = [Template("prefix", t, c, used["prefix:" + t]) for t, c in pre.items()]
    templates += [Template("suffix", t, c, used["suffix:" + t]) for t, c in suf.items()]
    templates += [Template("frame", t, c, used["frame:" + t]) for t, c in frames.items()]
    templates.sort(key=lambda t: (t.kind, -t.support, t.text))
    return Grouping(groups, cores, templates, merges, dict(examples), rules, bases)


def render_summary(console: Any, summary: dict[str, Any], max_templates: int = 12) -> None:
    """A `Grouping.summary()` on a rich console: groups and merges, then the commonest templates."""
    from rich.table import Table

    merges = ", ".join(f"{k} {v}" for k, v in summary["merges"].items() if v)
    console.print(f"[bold]groups[/]: {summary['groups']} from {summary['rows']} rows  (merges: {merges or 'none'})")
    templates = summary["templates"]
    if not templates:
        return
    by_kind: dict[str, int] = {}
    for t in templates:
        by_kind[t["kind"]] = by_kind.get(t["kind"], 0) + 1
    table = Table(title="templates discovered (" + ", ".join(f"{v} {k}" for k, v in by_kind.items()) + ")")
    for col in ("kind", "template (normalised)", "support", "rows"):
        table.add_column(col)
    for t in sorted(templates, key=lambda t: -t["rows"])[:max_templates]:
        table.add_row(t["kind"], t["text"], str(t["support"]), str(t["rows"]))
    console.print(table)
