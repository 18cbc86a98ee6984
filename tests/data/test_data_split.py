"""Leakage-safe splits: the shipped pmpp-docx split, refusal on leakage, atomic output, seeds,
refit, augmentation, and the `tournament data` commands."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from tournament.data import cli as data_cli
from tournament.data.groups import GroupingRules
from tournament.data.ingest import DataFormatError
from tournament.data.leakage import check_leakage
from tournament.data.normalize import match_key
from tournament.data.sets import set_from_name
from tournament.data.split import LeakageError, build_split, load_split_spec

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "pmpp"
SPLIT = ROOT / "data" / "splits" / "pmpp-docx.yaml"
LOOSE = GroupingRules(use_templates=False, use_answers=False, use_frames=False, use_near=False)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def cli_app() -> typer.Typer:
    app = typer.Typer()
    app.add_typer(data_cli.app, name="data")

    @app.callback()
    def main() -> None:  # a group, so `data` is a sub-command as in the real CLI
        pass

    return app


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


WORDS = ["warp", "tile", "shared", "global", "atomic", "stream", "kernel", "grid", "block", "thread", "bank", "cache",
         "coalesce", "occupancy", "register", "barrier", "reduction", "scan", "histogram", "stencil"]
HANZI = "并行线程共享内存全局同步原子流核函数网格块寄存器屏障归约扫描直方图模板缓存合并占用率带宽延迟"


def small_corpus(tmp_path: Path) -> tuple[Path, Path]:
    """40 unrelated base questions x (plain + 5 templates) for training; 3 of them as an eval file."""
    import random

    rng = random.Random(0)
    rows = []
    for i in range(40):
        q = "".join(rng.choice(HANZI) for _ in range(8)) + f" {rng.choice(WORDS)} {rng.choice(WORDS)} 是什么？"
        a = "".join(rng.choice(HANZI) for _ in range(20)) + " " + " ".join(rng.sample(WORDS, 4)) + "。"
        rows.append({"question": q, "answer": a})
        rows += [{"question": p + q, "answer": a} for p in ("简答：", "问：", "只给结论：", "请回答：", "要点式回答：")]
    train = write_jsonl(tmp_path / "train_src.jsonl", rows)
    ev = write_jsonl(tmp_path / "basic_eval.jsonl", [rows[0], rows[6 * 7], rows[6 * 13]])
    return train, ev


# ---------------------------------------------------------------- the shipped split

@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    out = tmp_path_factory.mktemp("build") / "pmpp-docx"
    kw = load_split_spec(SPLIT)
    kw["out"] = out
    return build_split(**kw)


def test_shipped_split_is_clean_and_removes_every_docx_variant(shipped):
    m = shipped.manifest
    assert m["leakage"]["clean"] and shipped.leakage.clean
    c = m["counts"]
    assert c["eval_rows"] == 192 and c["eval_by_set"] == {"basic": 100, "plus": 92}
    # 2332 book rows in 107 groups are free of the docx variants; the speed pool (27 groups, 436 rows,
    # 276 questions) leaves every build too
    assert c["source_rows"] == 7370 and c["train_rows"] == 1896 and c["train_groups"] == 80
    assert c["speed_pool_groups"] == 27 and c["speed_pool_rows_removed"] == 436 and c["speed_pool_questions"] == 276
    assert c["groups"] == 299 and c["eval_groups"] == 192
    eval_questions = [match_key(r["question"]) for r in shipped.eval]
    eval_answers = {match_key(r["answer"]) for r in shipped.eval}
    for row in shipped.train:
        key = match_key(row["question"])
        assert not any(q in key for q in eval_questions), row["question"]
        assert match_key(row["answer"]) not in eval_answers
    assert {r["group"] for r in shipped.train}.isdisjoint({r["group"] for r in shipped.eval})


def test_shipped_split_files_and_manifest(shipped):
    out = shipped.out
    assert sorted(p.name for p in out.iterdir()) == ["eval.jsonl", "manifest.json", "speed_pool.jsonl", "train.jsonl"]
    train, ev = read_jsonl(out / "train.jsonl"), read_jsonl(out / "eval.jsonl")
    assert train == shipped.train and ev == shipped.eval
    assert set(ev[0]) == {"id", "question", "answer", "group", "source", "set"}
    assert ev[0]["id"] == "basic.docx:2" and ev[0]["set"] == "basic" and ev[-1]["set"] == "plus"
    assert all(r["set"] is None and r["source"] == "data.jsonl" for r in train)
    m = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    sha = {s["name"]: s["sha256"] for s in m["sources"]}
    assert sha["basic.docx"].startswith("0d8cb4c0") and sha["data.jsonl"].startswith("b6f805de")
    assert m["seed"] == 0 and m["refit"] is False and m["allow_leakage"] is False
    assert m["rules"]["grouping"]["near_threshold"] == 0.8
    assert any(t["text"] == "简答:" and t["support"] == 192 for t in m["grouping"]["templates"])
    assert not any(out.parent.glob(".pmpp-docx.tmp-*"))


def test_read_back_through_ingest_and_check(shipped):
    from tournament.data.ingest import read_qa

    train, ev = read_qa(shipped.out / "train.jsonl"), read_qa(shipped.out / "eval.jsonl")
    assert len(train) == 1896 and len(ev) == 192 and ev[0].meta["set"] == "basic"
    result = CliRunner().invoke(cli_app(), ["data", "check", str(shipped.out / "train.jsonl"), str(shipped.out / "eval.jsonl"), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["clean"] is True


# ---------------------------------------------------------------- refusal on leakage

def test_check_reports_the_raw_data_as_leaking():
    from tournament.data.ingest import read_qa

    report = check_leakage(read_qa(DATA / "data.jsonl"), read_qa(DATA / "basic.docx"))
    assert len(report.items) == 100
    first = report.items[0]
    assert {"question", "template", "group"} <= set(first.reasons)
    result = CliRunner().invoke(cli_app(), ["data", "check", str(DATA / "data.jsonl"), str(DATA / "basic.docx"), "--json"])
    assert result.exit_code == 1
    assert json.loads(result.output)["leaking_eval_rows"] == 100


def test_build_refuses_a_leaking_split_and_writes_nothing(tmp_path):
    train, ev = small_corpus(tmp_path)
    out = tmp_path / "build" / "leaky"
    with pytest.raises(LeakageError) as err:
        build_split([train], [ev], out, rules=LOOSE)  # loose grouping keeps "简答：Q" in train
    assert err.value.report.counts()["template"] == 3
    assert "--allow-leakage" in str(err.value)
    assert not out.exists() and not out.parent.exists()


def test_allow_leakage_writes_and_records_it(tmp_path):
    train, ev = small_corpus(tmp_path)
    result = build_split([train], [ev], tmp_path / "leaky", rules=LOOSE, allow_leakage=True)
    m = json.loads((tmp_path / "leaky" / "manifest.json").read_text(encoding="utf-8"))
    assert m["allow_leakage"] is True and m["leakage"]["clean"] is False
    assert m["leakage"]["leaking_eval_rows"] == 3 and result.manifest["counts"]["train_rows"] == 240 - 3


def test_default_rules_remove_the_whole_group(tmp_path):
    train, ev = small_corpus(tmp_path)
    result = build_split([train], [ev], tmp_path / "ok")
    assert result.leakage.clean
    assert result.manifest["counts"]["train_rows"] == 240 - 3 * 6
    assert {r["set"] for r in result.eval} == {"basic"}  # from the eval file's name


def test_cli_build_refusal_exit_code(tmp_path):
    train, ev = small_corpus(tmp_path)
    runner = CliRunner()
    ok = runner.invoke(cli_app(), ["data", "build", "--source", str(train), "--eval", str(ev), "--out", str(tmp_path / "b"), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.output)["counts"]["train_rows"] == 222
    bad = runner.invoke(cli_app(), ["data", "build", "--source", str(train), "--eval", str(ev), "--out", str(tmp_path / "c"),
                                    "--near-threshold", "0.5", "--json"])
    assert bad.exit_code == 0  # stricter grouping, still clean
    missing = runner.invoke(cli_app(), ["data", "build", "--source", str(tmp_path / "nope.jsonl"), "--eval", str(ev), "--out", str(tmp_path / "d")])
    assert missing.exit_code == 2 and "not found" in missing.output


# ---------------------------------------------------------------- atomic output

def test_bad_input_leaves_no_partial_output_and_keeps_the_old_build(tmp_path):
    train, ev = small_corpus(tmp_path)
    out = tmp_path / "build"
    build_split([train], [ev], out)
    before = (out / "train.jsonl").read_bytes()
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q", "answer": "a"}\n{"question": oops}\n', encoding="utf-8")
    with pytest.raises(DataFormatError, match="broken.jsonl, line 2"):
        build_split([train, broken], [ev], out)
    assert (out / "train.jsonl").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------- seeds, fractions, refit, augmentation

def test_eval_fraction_is_deterministic_under_a_seed(tmp_path):
    train, _ = small_corpus(tmp_path)
    a = build_split([train], out=tmp_path / "a", eval_fraction=0.25, seed=7)
    build_split([train], out=tmp_path / "b", eval_fraction=0.25, seed=7)
    c = build_split([train], out=tmp_path / "c", eval_fraction=0.25, seed=8)
    for name in ("train.jsonl", "eval.jsonl", "manifest.json"):
        a_bytes = (tmp_path / "a" / name).read_bytes()
        if name == "manifest.json":  # differs only by the output folder's name
            a_bytes = a_bytes.replace(b'"name": "a"', b'"name": "b"')
        assert a_bytes == (tmp_path / "b" / name).read_bytes()
    assert a.manifest["counts"]["held_out_groups"] == 10
    assert len(a.eval) == 10  # one row per core question: the 5 templated copies are one test
    assert {r["group"] for r in a.eval} != {r["group"] for r in c.eval}
    assert a.leakage.clean and c.leakage.clean
    assert len(a.train) == 240 - 10 * 6


def test_fraction_split_of_the_shipped_data_is_clean():
    result = build_split([DATA / "data.jsonl"], eval_fraction=0.2, seed=0)
    c = result.manifest["counts"]
    assert result.leakage.clean and c["held_out_groups"] == 60 and c["eval_by_set"] == {"none": c["eval_rows"]}
    assert c["train_rows"] + c["removed_from_train"] == 7370


def test_refit_trains_on_everything_and_says_so(tmp_path):
    train, ev = small_corpus(tmp_path)
    result = build_split([train], [ev], tmp_path / "refit", refit=True)
    m = result.manifest
    assert m["refit"] is True and "NOT honest" in m["rules"]["split"]
    assert len(result.train) == 240 + 3 and not result.leakage.clean


def test_augmentation_is_seeded_train_only_and_recorded(tmp_path):
    train, ev = small_corpus(tmp_path)
    a = build_split([train], [ev], tmp_path / "a", augment=2, seed=1)
    build_split([train], [ev], tmp_path / "b", augment=2, seed=1)
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "b" / "train.jsonl").read_bytes()
    aug = [r for r in a.train if "augmented_from" in r]
    assert len(aug) == a.manifest["augmentation"]["rows_added"] > 0
    assert a.manifest["augmentation"]["per_row"] == 2 and a.manifest["augmentation"]["applied_to"] == "train"
    assert all("augmented_from" not in r for r in a.eval) and a.leakage.clean
    base = {r["id"]: r for r in a.train}
    assert all(r["answer"] == base[r["augmented_from"]]["answer"] for r in aug)
    other = build_split([train], [ev], None, augment=2, seed=2)
    assert [r["question"] for r in other.train] != [r["question"] for r in a.train]


# ---------------------------------------------------------------- small pieces

def test_set_from_name():
    assert set_from_name("data/pmpp/basic.docx") == "basic"
    assert set_from_name("plus.docx") == "plus" and set_from_name("bonus_q.jsonl") == "plus"
    assert set_from_name("data.jsonl") is None


def test_shipped_refit_split_trains_on_every_row():
    """The submission build (docs/training.md): every source row plus the eval rows themselves,
    except the speed pool's, and a manifest that says its eval scores are not honest."""
    kw = load_split_spec(SPLIT.with_name("pmpp-refit.yaml"))
    assert kw["refit"] and kw["out"] == ROOT / "data" / "build" / "pmpp-refit"
    kw["out"] = None
    res = build_split(**kw)
    c = res.manifest["counts"]
    assert res.manifest["refit"] is True
    assert c["source_rows"] == 7370 and c["eval_rows"] == 192 and c["train_rows"] == 7370 + 192 - 436
    train_questions = {match_key(r["question"]) for r in res.train}
    assert all(match_key(r["question"]) in train_questions for r in res.eval)
    assert not any(match_key(r["question"]) in train_questions for r in res.pool)  # new to the refit too


def test_split_spec_paths_are_project_relative():
    kw = load_split_spec(SPLIT)
    assert kw["sources"] == [DATA / "data.jsonl"]
    assert kw["eval_files"] == [DATA / "basic.docx", DATA / "plus.docx"]
    assert kw["out"] == ROOT / "data" / "build" / "pmpp-docx" and kw["name"] == "pmpp-docx"


def test_split_spec_rejects_unknown_keys(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources: [a.jsonl]\nevall: [b.docx]\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unknown keys \\['evall'\\]"):
        load_split_spec(bad)


def test_no_eval_side_is_an_error(tmp_path):
    train, _ = small_corpus(tmp_path)
    with pytest.raises(ValueError, match="no eval side"):
        build_split([train])
