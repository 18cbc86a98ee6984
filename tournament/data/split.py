"""Leakage-safe train/eval split: whole variant groups go to one side.

Eval comes from (a) given files (the docx samples): every group they touch leaves train; and/or
(b) a seeded fraction of the remaining groups of the sources. Then an independent leakage check
(:mod:`leakage`, always with the default rules) must come back empty, or the build refuses
unless ``allow_leakage``. ``refit`` trains on everything, eval included (for the final winner),
and says so in the manifest. ``speed_pool: N`` holds whole variant groups out of train (the refit
too) for the sweep's judge-sized speed workload (speed_pool.py). Output: ``train.jsonl``,
``eval.jsonl``, ``manifest.json`` (and ``speed_pool.jsonl``), written atomically.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from tournament.data.augment import DEFAULT_TEMPLATES, augment_rows
from tournament.data.groups import Grouping, GroupingRules, group_rows, render_summary
from tournament.data.ingest import QARow, read_qa
from tournament.data.leakage import LeakageReport, check_leakage, render_report
from tournament.data.sets import set_from_name
from tournament.data.speed_pool import hold_out_pool
from tournament.data.store import atomic_dir, write_json
from tournament.files import sha256_file, write_jsonl_atomic
from tournament.paths import project_root

MANIFEST_SCHEMA = 1


class LeakageError(RuntimeError):
    """The split leaks eval into train and ``allow_leakage`` was not given."""

    def __init__(self, report: LeakageReport) -> None:
        self.report = report
        first = report.items[0]
        super().__init__(
            f"{len(report.items)} of {report.n_eval} eval rows leak into train "
            f"(by reason: {report.counts()}); first: {first.question[:60]!r} ~ "
            f"{(first.train_examples or ['?'])[0][:60]!r}. Refusing to write the split; "
            "pass --allow-leakage to write it anyway (recorded in the manifest)."
        )


@dataclass
class SplitResult:
    out: Path | None
    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    manifest: dict[str, Any]
    grouping: Grouping
    leakage: LeakageReport
    pool: list[dict[str, Any]] = field(default_factory=list)  # the speed pool (speed_pool.jsonl)


def _row_ids(rows: Sequence[QARow]) -> list[str]:
    seen: Counter[str] = Counter()
    ids = []
    for r in rows:
        base = f"{r.source}:{r.line}"
        seen[base] += 1
        ids.append(base if seen[base] == 1 else f"{base}#{seen[base]}")
    return ids


def _display_path(path: Path) -> str:
    """Relative to the working directory when inside it, so manifests travel between machines."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _source_record(path: Path, role: str, rows: Sequence[QARow]) -> dict[str, Any]:
    return {
        "path": _display_path(path),
        "name": path.name,
        "role": role,
        "sha256": sha256_file(path),
        "rows": len(rows),
        "format": Counter(r.kind for r in rows).most_common(1)[0][0] if rows else None,
        "set": set_from_name(path),
    }


def build_split(
    sources: Sequence[str | Path],
    eval_files: Sequence[str | Path] = (),
    out: str | Path | None = None,
    *,
    eval_fraction: float | None = None,
    seed: int = 0,
    allow_leakage: bool = False,
    refit: bool = False,
    augment: int = 0,
    augment_templates: Sequence[str] | None = None,
    rules: GroupingRules | None = None,
    name: str | None = None,
    speed_pool: int = 0,
) -> SplitResult:
    """Build a split; write it to ``out`` when given. Raises LeakageError / DataFormatError."""
    rules = rules or GroupingRules()
    if not sources and not eval_files:
        raise ValueError("nothing to split: give at least one --source or --eval file")
    if eval_fraction is not None and not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval fraction must be in [0, 1), got {eval_fraction}")
    if not eval_files and not eval_fraction and not refit:
        raise ValueError("no eval side: give --eval files and/or --eval-fraction (or --refit)")

    eval_paths = [Path(p) for p in eval_files]
    eval_resolved = {p.resolve() for p in eval_paths}
    # a file named on both sides is eval only: never train on what you evaluate with
    source_paths = [Path(p) for p in sources if Path(p).resolve() not in eval_resolved]

    rows: list[QARow] = []
    role: list[str] = []
    set_of: list[str | None] = []
    records = []
    for paths, side in ((source_paths, "train"), (eval_paths, "eval")):
        for p in paths:
            file_rows = read_qa(p)
            records.append(_source_record(p, side, file_rows))
            rows.extend(file_rows)
            role.extend([side] * len(file_rows))
            set_of.extend([set_from_name(p)] * len(file_rows))
    ids = _row_ids(rows)
    grouping = group_rows(rows, rules)
    groups = grouping.groups

    eval_groups = {groups[i] for i in range(len(rows)) if role[i] == "eval"}
    eval_idx = [i for i in range(len(rows)) if role[i] == "eval"]
    held_out: list[str] = []
    if eval_fraction:
        candidates = sorted({groups[i] for i in range(len(rows)) if role[i] == "train"} - eval_groups)
        random.Random(seed).shuffle(candidates)
        k = max(1, math.floor(eval_fraction * len(candidates) + 0.5)) if candidates else 0
        held_out = sorted(candidates[:k])
        held = set(held_out)
        # one row per distinct core question: the 26 templated copies of a question are one test
        by_core: dict[tuple[str, str], int] = {}
        for i in range(len(rows)):
            if role[i] == "train" and groups[i] in held:
                key = (groups[i], grouping.cores[i])
                if key not in by_core:
                    by_core[key] = i
        eval_idx += sorted(by_core.values())
        eval_groups |= held

    pool_groups: set[str] = set()
    pool_idx: list[int] = []
    if speed_pool:  # held out of every build, the refit too: questions no build has seen
        free = [i for i in range(len(rows)) if role[i] == "train" and groups[i] not in eval_groups]
        pool_groups, pool_idx = hold_out_pool(groups, grouping.cores, free, speed_pool, seed)

    if refit:  # everything, eval included, on purpose (but never the speed pool)
        train_idx = [i for i in range(len(rows)) if groups[i] not in pool_groups]
    else:
        train_idx = [i for i in range(len(rows))
                     if role[i] == "train" and groups[i] not in eval_groups and groups[i] not in pool_groups]
    removed = sum(1 for i in range(len(rows)) if role[i] == "train") - sum(1 for i in train_idx if role[i] == "train")

    def as_dict(i: int) -> dict[str, Any]:
        r = rows[i]
        return {"id": ids[i], "question": r.question, "answer": r.answer, "group": groups[i],
                "source": r.source, "set": set_of[i]}

    train = [as_dict(i) for i in train_idx]
    evals = [as_dict(i) for i in eval_idx]
    pool = [as_dict(i) for i in pool_idx]

    aug_record = None
    if augment:
        templates = tuple(augment_templates) if augment_templates else DEFAULT_TEMPLATES
        extra, aug_record = augment_rows([rows[i] for i in train_idx], augment, seed, templates)
        by_origin: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for a in extra:
            base = train[a.origin]
            by_origin[a.origin].append({**base, "id": f"{base['id']}+aug{len(by_origin[a.origin]) + 1}",
                                        "question": a.question, "augmented_from": base["id"],
                                        "template": a.template})
        train = [row for j, base in enumerate(train) for row in (base, *by_origin.get(j, []))]

    report = check_leakage(_Rows(train), _Rows(evals))
    if not report.clean and not allow_leakage and not refit:
        raise LeakageError(report)
    pool_report = check_leakage(_Rows(train), _Rows(pool)) if pool else None
    if pool_report is not None and not pool_report.clean and not allow_leakage:
        raise LeakageError(pool_report)  # the speed pool must be new to every build, the refit too

    n_groups_train = len({r["group"] for r in train})
    manifest: dict[str, Any] = {
        "schema": MANIFEST_SCHEMA,
        "name": name or (Path(out).name if out else None),
        "sources": records,
        "seed": seed,
        "eval_fraction": eval_fraction,
        "refit": refit,
        "allow_leakage": allow_leakage,
        "counts": {
            "source_rows": sum(1 for s in role if s == "train"),
            "eval_file_rows": sum(1 for s in role if s == "eval"),
            "train_rows": len(train),
            "train_rows_before_augmentation": len(train_idx),
            "eval_rows": len(evals),
            "removed_from_train": removed,
            "groups": grouping.n_groups,
            "eval_groups": len(eval_groups),
            "held_out_groups": len(held_out),
            "train_groups": n_groups_train,
            "eval_by_set": dict(Counter(r["set"] or "none" for r in evals)),
            "speed_pool_questions": len(pool),
            "speed_pool_groups": len(pool_groups),
            "speed_pool_rows_removed": sum(1 for i in range(len(rows)) if groups[i] in pool_groups),
        },
        "rules": {
            "grouping": rules.to_dict(),
            "split": ("refit: train = every row, eval included; eval scores from this build are NOT honest"
                      if refit else
                      "every variant group touched by an eval row is removed from train"),
            "eval_from_fraction": "one row per distinct core question of each held-out group",
            "speed_pool": ("whole variant groups no eval row touches, seeded, held out of train (refit too) until "
                           "the pool holds the asked number of distinct core questions; one row per core question"),
            "leakage_standard": "default GroupingRules (question, answer, template, near-duplicate, group)",
        },
        "grouping": grouping.summary(),
        "leakage": report.to_dict(max_items=50),
        "speed_pool_leakage": pool_report.to_dict(max_items=20) if pool_report is not None else None,
        "augmentation": aug_record,
    }

    written = None
    if out is not None:
        def fill(tmp: Path) -> None:
            write_jsonl_atomic(tmp / "train.jsonl", train)
            write_jsonl_atomic(tmp / "eval.jsonl", evals)
            if pool:
                write_jsonl_atomic(tmp / "speed_pool.jsonl", pool)
            write_json(tmp / "manifest.json", manifest)

        written = atomic_dir(out, fill)
    return SplitResult(written, train, evals, manifest, grouping, report, pool)


class _Rows(list):
    """Dict rows seen through the attribute interface the grouping uses."""

    def __init__(self, dict_rows: Sequence[dict[str, Any]]) -> None:
        super().__init__(QARow(r["question"], r["answer"], r.get("source", ""), None) for r in dict_rows)


# --------------------------------------------------------------------------------------------
# split definition files (data/splits/*.yaml)

_SPEC_KEYS = {"name", "description", "sources", "eval", "out", "seed", "eval_fraction", "allow_leakage",
              "refit", "augment", "augment_templates", "grouping", "speed_pool"}


def load_split_spec(path: str | Path) -> dict[str, Any]:
    """Read a split YAML into ``build_split`` keyword arguments (paths made absolute).

    Relative paths in the file are relative to the project root above it (the folder with
    ``pyproject.toml``), so ``data/pmpp/basic.docx`` means the same wherever you run from.
    """
    import yaml

    p = Path(path)
    try:
        spec = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{p}: cannot read split definition: {exc}") from exc
    if not isinstance(spec, dict):
        raise ValueError(f"{p}: a split definition is a mapping")
    unknown = set(spec) - _SPEC_KEYS
    if unknown:
        raise ValueError(f"{p}: unknown keys {sorted(unknown)}; expected some of {sorted(_SPEC_KEYS)}")
    root = project_root(p.resolve().parent)

    def resolve(x: str) -> Path:
        q = Path(x)
        return q if q.is_absolute() else root / q

    as_list = lambda v: [v] if isinstance(v, str) else list(v or [])  # noqa: E731
    try:
        rules = GroupingRules(**(spec.get("grouping") or {}))
    except TypeError as exc:
        raise ValueError(f"{p}: bad 'grouping' entry: {exc}") from exc
    return {
        "name": spec.get("name") or p.stem,
        "sources": [resolve(s) for s in as_list(spec.get("sources"))],
        "eval_files": [resolve(s) for s in as_list(spec.get("eval"))],
        "out": resolve(spec.get("out") or f"data/build/{spec.get('name') or p.stem}"),
        "seed": int(spec.get("seed", 0)),
        "eval_fraction": spec.get("eval_fraction"),
        "allow_leakage": bool(spec.get("allow_leakage", False)),
        "refit": bool(spec.get("refit", False)),
        "augment": int(spec.get("augment", 0)),
        "augment_templates": spec.get("augment_templates"),
        "rules": rules,
        "speed_pool": int(spec.get("speed_pool") or 0),
    }


def build_split_from_spec(path: str | Path, **overrides: Any) -> SplitResult:
    """``build_split`` from a split YAML; keyword arguments override the file (``out=None``: no files)."""
    kw = load_split_spec(path)
    kw.update(overrides)
    return build_split(**kw)


def render_manifest(console: Any, manifest: dict[str, Any], out: Path | None) -> None:
    """A split's manifest (written to `out`) on a rich console: sources, grouping, counts, leakage."""
    m, c = manifest, manifest["counts"]
    console.print(f"[bold]split[/] {m['name']} -> {out}")
    for s in m["sources"]:
        console.print(f"  {s['role']:5} {s['path']}  {s['rows']} rows  sha256 {s['sha256'][:12]}…")
    render_summary(console, m["grouping"])
    console.print(
        f"[bold]train[/]: {c['train_rows']} rows in {c['train_groups']} groups "
        f"({c['removed_from_train']} source rows removed as variants of eval)   "
        f"[bold]eval[/]: {c['eval_rows']} rows in {c['eval_groups']} groups {c['eval_by_set']}"
    )
    if m["augmentation"]:
        console.print(f"augmentation: +{m['augmentation']['rows_added']} train rows ({m['augmentation']['per_row']} per row, seed {m['seed']})")
    if m["refit"]:
        console.print("[yellow]refit: train includes eval; scores on this eval set are not honest[/]")
    render_report(console, m["leakage"])
    if m["allow_leakage"] and not m["leakage"]["clean"]:
        console.print("[yellow]written anyway (--allow-leakage, recorded in manifest.json)[/]")
