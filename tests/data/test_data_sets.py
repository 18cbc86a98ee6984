"""The judge's question sets as data names them (tournament/data/sets.py), and the rule that keeps
data/ below the judge: nothing under tournament/data/ imports tournament.judge."""

from __future__ import annotations

import ast

import pytest

from tournament.data.sets import DATA_SET_LABEL, JUDGE_SETS, QUESTION_SETS, judge_set, row_in_set, set_from_name
from tournament.paths import REPO_ROOT


def _imported_modules(tree: ast.Module) -> list[str]:
    """Every module an import names, those inside functions included (`from a import b` gives
    both a and a.b: b may be a module)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


def test_nothing_under_data_imports_the_judge():
    files = sorted((REPO_ROOT / "tournament" / "data").rglob("*.py"))
    assert files
    bad = {f.relative_to(REPO_ROOT).as_posix(): m for f in files
           for m in _imported_modules(ast.parse(f.read_text(encoding="utf-8")))
           if m == "tournament.judge" or m.startswith("tournament.judge.")}
    assert not bad, f"tournament/data/ must not import tournament.judge (judge/ imports data/): {bad}"


def test_the_import_check_sees_imports_inside_functions():
    tree = ast.parse("def f():\n    from tournament.judge.rules import limits\n\nfrom tournament import judge\n")
    assert {"tournament.judge.rules", "tournament.judge"} <= set(_imported_modules(tree))


def test_set_registry():
    assert JUDGE_SETS == ("basic", "bonus")
    assert {s: QUESTION_SETS[s].questions for s in JUDGE_SETS} == {"basic": 292, "bonus": 358}
    assert DATA_SET_LABEL == {"basic": "basic", "bonus": "plus"}
    assert judge_set("plus") == judge_set(" Bonus ") == "bonus" and judge_set(None, "basic") == "basic"
    with pytest.raises(ValueError, match="use basic or bonus"):
        judge_set("extra")
    assert row_in_set("plus", "bonus") and not row_in_set("basic", "plus") and not row_in_set("odd", "basic")
    assert set_from_name("data/pmpp/基础题.docx") == "basic" and set_from_name("加分题.docx") == "plus"


def test_the_judge_rules_re_export_the_same_sets():
    from tournament.judge import rules

    assert rules.judge_set is judge_set and rules.set_from_name is set_from_name and rules.row_in_set is row_in_set
    assert rules.QUESTIONS == {"basic": 292, "bonus": 358} and rules.DATA_SET_LABEL is DATA_SET_LABEL
