"""A trained recipe is measured as two builds on the same settings: the refit (every row: the
build you submit) for seen accuracy, speed and health, and the honest build (without the eval
questions) for unseen accuracy. The winner serves the refit; an honest winner is refused."""

from __future__ import annotations

import json

import pytest
import yaml
from typer.testing import CliRunner

from tests.conftest import write_training_sets
from tournament.cli import app

runner = CliRunner()


def _files(tmp_path, model, qa, refit=True, study="two", **over):
    honest, every = write_training_sets(tmp_path, 4)  # honest: without the eval questions
    cand = tmp_path / "cand.yaml"
    cand.write_text(yaml.safe_dump({
        "id": "tiny-sft", "base": {"path": str(model)}, "prompt": {"style": "chat", "system": "简洁回答"},
        "recipe": {"method": "full", "dataset": str(honest), "batch_size": 4, "epochs": 1, "learning_rate": 1e-3,
                   "max_length": 128, "seed": 0}}, allow_unicode=True), encoding="utf-8")
    sweep = tmp_path / f"{study}.yaml"
    sweep.write_text(yaml.safe_dump({
        "study": study, "trials": 2, "decode_trials_per_engine": 2, "speed_repeats": 3,
        "candidates": [str(cand)], "eval": {"path": str(qa), "limit": 4},
        "judge": {"set": "basic", "pass_mark": 0.0, "health_timeout": 120},
        "refit": {"enabled": refit, "dataset": str(every), "split": None},
        "space": {"engine": {"engine": "transformers", "device": "cpu", "batch_size": 4},
                  "decode": {"max_tokens": [6, 10]}, "mode": "batch"}, **over,
    }, allow_unicode=True), encoding="utf-8")
    return sweep


def test_refit_and_honest_builds_are_measured_and_the_refit_ships(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir,
                                                                  monkeypatch):
    import optuna

    from tournament.study.judge_model import prior_weight

    monkeypatch.chdir(tmp_path)  # builds/ is cwd-relative
    cfg = _files(tmp_path, tiny_model_dir, tiny_qa_file, build_workers=2)
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--json", "--no-mlflow"])
    assert r.exit_code == 0, r.output
    # both builds were made before the first trial, side by side, each line named by its build
    assert "builds ready in" in r.output and "[tiny-sft/refit]" in r.output and "[tiny-sft/honest]" in r.output
    assert len(list((tmp_path / "builds").glob("tiny-sft-*/candidate.json"))) == 2
    st = optuna.load_study(study_name="two", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    done = [t for t in st.get_trials() if t.state.name == "COMPLETE" and "duplicate_of" not in t.user_attrs]
    assert done, [(t.number, t.state, t.user_attrs.get("fail_reason")) for t in st.get_trials()]
    w = prior_weight("basic")
    for t in done:
        cand, m = t.user_attrs["candidate"], t.user_attrs["metrics"]
        assert cand["build"] == "refit" and cand["honest_config_hash"] != cand["config_hash"]
        assert m["two_builds"] == 1.0 and m["speed_repeats"] == 3.0
        assert m["predicted_accuracy"] == pytest.approx(w * m["seen_accuracy"] + (1 - w) * m["unseen_accuracy"])
        assert m["accuracy"] == m["predicted_accuracy"] and t.values[0] == m["predicted_accuracy"]
        assert m["chars_per_s_score"] == pytest.approx(m["chars_per_s"] - m["chars_per_s_mad"])
        tdir = runs_dir / "studies" / "two" / "trials" / f"{t.number:04d}"
        assert (tdir / "answers.jsonl").exists() and (tdir / "answers_unseen.jsonl").exists()
        # the served model is the refit build (its own config hash), not the honest one
        assert cand["config_hash"][:12] in t.user_attrs["serve_config"]["model"]["path"]
    logs = sorted((runs_dir / "studies" / "two" / "servers").glob("*.log"))
    assert any("-ship-" in p.name for p in logs) and any("-unseen-" in p.name for p in logs)
    # only timed POSTs empty a prefix cache: the ship's speed POSTs, never the honest build's
    resets = {role: sum(p.read_text(encoding="utf-8", errors="replace").count("prefix cache emptied")
                        for p in logs if f"-{role}-" in p.name) for role in ("ship", "unseen")}
    assert resets["unseen"] == 0 and resets["ship"] >= 3 * len(done), resets

    r = runner.invoke(app, ["board", "--runs-dir", str(runs_dir), "--study", "two", "--json",
                            "--ledger", str(tmp_path / "ledger.json")])
    row = next(x for x in json.loads(r.stdout)["trials"] if x["trial"] == done[0].number)
    assert row["build"] == "refit" and row["seen_accuracy"] == done[0].user_attrs["metrics"]["seen_accuracy"]
    out = tmp_path / "winner.json"
    r = runner.invoke(app, ["pick", "--auto", "--runs-dir", str(runs_dir), "--study", "two", "--local",
                            "--out", str(out), "--ledger", str(tmp_path / "ledger.json")])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["candidate"]["build"] == "refit"
    assert {"seen_accuracy", "unseen_accuracy", "predicted_accuracy", "predicted_accuracy_sd"} <= set(
        doc["provenance"]["metrics"])


def test_an_honest_winner_is_refused_unless_allowed(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = _files(tmp_path, tiny_model_dir, tiny_qa_file, refit=False, study="honest")
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--json", "--no-mlflow",
                            "--trials", "1"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "winner.json"
    args = ["pick", "--auto", "--runs-dir", str(runs_dir), "--study", "honest", "--local", "--out", str(out),
            "--ledger", str(tmp_path / "ledger.json")]
    r = runner.invoke(app, args)
    assert r.exit_code == 1 and "honest build" in r.output and not out.exists()
    r = runner.invoke(app, args + ["--allow-honest"])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["candidate"]["build"] == "honest"
