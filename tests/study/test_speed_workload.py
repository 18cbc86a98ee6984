"""Speed as the judge measures it: one POST of the judge's count of distinct questions (the set's
samples plus questions no build saw), reproducible for a seed; the speed pool held out of every
build; the cycled figure beside it; the predicted judge speed from a synthetic ledger."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tournament.cli import app
from tournament.paths import REPO_ROOT
from tournament.study.speed_model import SpeedModel
from tournament.study.workload import cycled, judge_workload

runner = CliRunner()
POOL = [(f"第{i}题：kernel {i} 的 tile 大小为什么影响 occupancy？", f"answer {i}") for i in range(400)]


def test_the_workload_is_the_samples_plus_distinct_pool_questions_for_a_seed():
    samples = [f"sample {i}" for i in range(100)]
    refs = [f"ref {i}" for i in range(100)]
    pool = POOL + [("sample 3", "a sample again"), (POOL[0][0], "the same question twice")]
    w = judge_workload(samples, refs, pool, 292, seed=0)
    assert len(w) == 292 and w.distinct and set(samples) <= set(w.questions)
    assert sorted(w.sample_positions + w.pool_positions) == list(range(292))
    assert [w.questions[i] for i in w.sample_positions] == [q for q in w.questions if q.startswith("sample")]
    assert all(w.references[i] == f"ref {w.questions[i].split()[1]}" for i in w.sample_positions)
    again = judge_workload(samples, refs, pool, 292, seed=0)
    assert again.questions == w.questions  # reproducible
    assert judge_workload(samples, refs, pool, 292, seed=1).questions != w.questions
    assert len(judge_workload(samples[:92], refs[:92], pool, 358).questions) == 358
    with pytest.raises(ValueError, match="pool holds 400 distinct"):
        judge_workload(samples, refs, POOL, 600)
    assert cycled(["a", "b", "c"], 7) == ["a", "b", "c", "a", "b", "c", "a"]


@pytest.fixture(scope="module")
def pmpp_splits():
    from tournament.data.split import build_split_from_spec

    return {name: build_split_from_spec(REPO_ROOT / "data" / "splits" / f"{name}.yaml", out=None)
            for name in ("pmpp-docx", "pmpp-refit")}


def test_the_speed_pool_is_held_out_of_every_build_and_fills_both_judge_posts(pmpp_splits):
    refit, honest = pmpp_splits["pmpp-refit"], pmpp_splits["pmpp-docx"]
    pools = {name: {(r["group"], r["question"]) for r in split_pool(s)} for name, s in pmpp_splits.items()}
    assert pools["pmpp-refit"] == pools["pmpp-docx"]  # the same groups leave both builds
    pool_groups = {g for g, _ in pools["pmpp-refit"]}
    for split in (refit, honest):
        assert not pool_groups & {r["group"] for r in split.train}  # no build, the refit included, saw them
    assert refit.manifest["counts"]["speed_pool_questions"] >= 266
    pool = [(r["question"], r["answer"]) for r in split_pool(refit)]
    for judged, size in (("basic", 292), ("plus", 358)):
        samples = [r for r in refit.eval if r["set"] == judged]
        w = judge_workload([r["question"] for r in samples], [r["answer"] for r in samples], pool, size)
        assert len(w) == size and w.distinct


def split_pool(split):
    """The pool rows a split writes (speed_pool.jsonl)."""
    assert split.manifest["counts"]["speed_pool_groups"] > 0 and split.pool
    return split.pool


def _sweep(tmp_path: Path, model: Path, qa: Path, pool: Path, track: str) -> Path:
    doc = {
        "study": f"speed-{track}", "trials": 2, "decode_trials_per_engine": 2,
        "candidates": [{"id": "tiny", "model_path": str(model),
                        "engine": {"engine": "transformers", "device": "cpu", "batch_size": 64}}],
        "eval": {"path": str(qa)},
        "judge": {"set": track, "pass_mark": 0.0, "health_timeout": 120},
        "speed": {"pool": str(pool), "seed": 7},
        "space": {"decode": {"max_tokens": [2, 3]}},
    }
    p = tmp_path / f"{track}.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return p


@pytest.mark.parametrize("track, size", [("basic", 292), ("bonus", 358)])
def test_the_sweep_times_one_post_of_the_judges_count_of_distinct_questions(tmp_path, tiny_model_dir, runs_dir,
                                                                           track, size):
    from tests.conftest import TINY_QA

    qa = tmp_path / "eval.jsonl"
    label = "basic" if track == "basic" else "plus"
    qa.write_text("".join(json.dumps({"question": q, "answer": a, "set": label}, ensure_ascii=False) + "\n"
                          for q, a in TINY_QA), encoding="utf-8")
    pool = tmp_path / "pool.jsonl"
    pool.write_text("".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n" for q, a in POOL),
                    encoding="utf-8")
    cfg = _sweep(tmp_path, tiny_model_dir, qa, pool, track)
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--no-track"])
    assert r.exit_code == 0, r.output
    posts = sorted((runs_dir / "studies" / f"speed-{track}" / "trials").glob("*/speed_post.jsonl"))
    assert len(posts) == 2
    sent = [[json.loads(line)["question"] for line in p.read_text(encoding="utf-8").splitlines()] for p in posts]
    for questions in sent:
        assert len(questions) == size and len(set(questions)) == size  # one POST, every question distinct
        assert {q for q, _ in TINY_QA} <= set(questions)  # the set's samples are in it
    assert sent[0] == sent[1]  # the same POST for every trial of the seed
    # `tournament speed-post` writes exactly the POST the sweep timed
    written = tmp_path / "post.jsonl"
    r = runner.invoke(app, ["speed-post", "--config", str(cfg), "--out", str(written)])
    assert r.exit_code == 0 and f"{size} questions" in r.output, r.output
    assert [json.loads(line)["question"] for line in written.read_text(encoding="utf-8").splitlines()] == sent[0]
    # every judged POST of a trial (seen/speed, cycled) found an empty prefix cache, as a fresh server
    log = " ".join(p.read_text(encoding="utf-8", errors="replace")
                   for p in (runs_dir / "studies" / f"speed-{track}" / "servers").glob("*ship*.log"))
    # two trials on one server, each: the speed POST (1 repeat) and the cycled POST
    assert log.count("prefix cache emptied for a timed POST") == 4
    out = runner.invoke(app, ["board", "--runs-dir", str(runs_dir), "--study", f"speed-{track}", "--json",
                              "--no-plots", "--ledger", str(tmp_path / "none.json")])
    rows = [row for row in json.loads(out.stdout)["trials"] if row["state"] == "COMPLETE"]
    assert rows and all(row["speed_n_questions"] == size and row["speed_distinct"] is True for row in rows)
    assert all(row["chars_per_s_cycled"] > 0 and row["chars_per_s"] > 0 for row in rows)
    # no judge result yet: the prior (ratio 1, log-sd 0.5) on the distinct figure
    assert all(row["predicted_chars_per_s"] == pytest.approx(row["chars_per_s"]) for row in rows)
    assert all(row["predicted_chars_per_s_hi"] == pytest.approx(row["chars_per_s"] * math.e) for row in rows)


def _pts(judge_over_distinct=None, judge_over_cycled=None, n=3):
    """Synthetic judge results: local distinct and cycled figures that move apart, and a judge that
    follows one of them (times a constant) and not the other."""
    pts = []
    for i in range(n):
        distinct, cycled_ = 10000 + 3000 * i, 40000 - 9000 * i
        judge = distinct * judge_over_distinct if judge_over_distinct else cycled_ * judge_over_cycled
        pts.append({"local_speed": distinct, "local_speed_cycled": cycled_, "judge_speed": judge})
    return pts


def test_the_speed_prediction_follows_the_documented_rule_on_synthetic_ledgers():
    prior = SpeedModel.fit([])
    assert prior.hypothesis == "distinct" and prior.n == 0
    p = prior.predict(20000, 50000)
    assert p["chars_per_s"] == 20000 and p["chars_per_s_hi"] == pytest.approx(20000 * math.e)

    judge_distinct = SpeedModel.fit(_pts(judge_over_distinct=0.5))
    assert judge_distinct.hypothesis == "distinct"
    assert judge_distinct.predict(30000, 99999)["chars_per_s"] == pytest.approx(15000)
    assert judge_distinct.fits["distinct"].log_sd == 0.05  # a perfect fit: the floor

    judge_cycled = SpeedModel.fit(_pts(judge_over_cycled=0.8))
    assert judge_cycled.hypothesis == "cycled"
    p = judge_cycled.predict(30000, 50000)
    assert p["hypothesis"] == "cycled" and p["chars_per_s"] == pytest.approx(40000)
    assert judge_cycled.predict(30000, None)["hypothesis"] == "distinct"  # no cycled figure: the distinct fit

    one = SpeedModel.fit(_pts(judge_over_cycled=0.8, n=1))  # one result cannot tell them apart
    assert one.hypothesis == "distinct" and one.fits["distinct"].log_sd == 0.5
    old = SpeedModel.fit([{"local_speed": 1000, "judge_speed": 3000}] * 2)  # ledgers from before: distinct
    assert old.hypothesis == "distinct" and old.predict(2000)["chars_per_s"] == pytest.approx(6000)


def test_the_ledger_learns_which_figure_the_judge_follows(tmp_path):
    from tournament.serving.config import ServeConfig
    from tournament.study import ledger
    from tournament.study.winner import write_winner

    led = tmp_path / "ledger.json"
    for i, p in enumerate(_pts(judge_over_cycled=0.8)):
        doc = {"schema": 1, "serve": ServeConfig().model_dump(), "candidate": {"id": "c"},
               "provenance": {"study": "s", "trial": i, "metrics": {
                   "accuracy": 0.4, "chars_per_s": p["local_speed"], "chars_per_s_cycled": p["local_speed_cycled"],
                   "speed_n_questions": 292}}}
        w = write_winner(doc, tmp_path / f"w{i}.json")
        entry = ledger.submit(led, w, git_commit="x", track=False)
        assert entry["local"]["chars_per_s_cycled"] == p["local_speed_cycled"]
        ledger.add_result(led, entry["id"], accuracy=None, speed=p["judge_speed"], track=False)
    cal = ledger.calibration(ledger.load(led))
    assert cal.speed_model.hypothesis == "cycled" and cal.speed_ratio == pytest.approx(0.8)
    assert cal.predict(0.4, 30000, "basic", local_speed_cycled=50000)["chars_per_s"] == pytest.approx(40000)
