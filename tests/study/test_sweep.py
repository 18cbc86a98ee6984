"""The sweep end to end on the tiny CPU model: study, MLflow runs, board JSON, pick, and serve.py
reading the picked winner; failing candidates; cache; config validation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tournament.cli import app

runner = CliRunner()


def sweep_file(tmp_path: Path, model: Path, qa: Path, **over) -> Path:
    doc = {
        "study": "t",
        "trials": 4,
        "decode_trials_per_engine": 3,
        "candidates": [
            {"id": "tiny", "model_path": str(model), "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}},
            {"id": "missing", "model_path": str(tmp_path / "no-such-model")},
        ],
        "eval": {"path": str(qa), "limit": 4},
        "judge": {"set": "basic", "pass_mark": 0.0, "health_timeout": 120},
        "space": {"candidate": ["tiny", "missing"],
                  "decode": {"max_tokens": [8, 16], "repetition_penalty": [1.0, 1.1]},
                  "mode": ["batch", "serial"]},
        "enqueue": [{"candidate": "missing"}, {"candidate": "tiny", "decode": {"max_tokens": 16}}],
    }
    doc.update(over)
    p = tmp_path / "sweep.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return p


@pytest.fixture(scope="module")
def swept(tmp_path_factory, tiny_model_dir, tiny_qa_file, _mlflow_db_template):
    import shutil

    tmp = tmp_path_factory.mktemp("sweep")
    runs = tmp / "mlruns"
    runs.mkdir()
    shutil.copy(_mlflow_db_template, runs / "mlflow.db")
    cfg = sweep_file(tmp, tiny_model_dir, tiny_qa_file)
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs), "--json"])
    assert r.exit_code == 0, r.output
    (tmp / "sweep-output.txt").write_text(r.output, encoding="utf-8")  # what a person (or a CI log) saw
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    return tmp, runs, cfg, summary


def test_each_trial_line_names_every_drawn_setting_and_a_log_gets_no_bar(swept):
    from optuna.trial import TrialState

    tmp, runs, _, _ = swept
    out = (tmp / "sweep-output.txt").read_text(encoding="utf-8")
    assert "\r" not in out and "\x1b[" not in out  # not a terminal: plain lines, no bar
    lines = {int(l.split(":")[0].split()[1]): l for l in out.splitlines() if l.startswith("trial ")}
    measured = [t for t in _study(runs).get_trials()
                if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(measured) >= 2
    for t in measured:
        line = lines[t.number]
        assert line.startswith(f"trial {t.number}: {t.params['candidate']}/- ")
        for name in ("decode.max_tokens", "decode.repetition_penalty", "mode"):
            assert f" {name.removeprefix('decode.')}={t.params[name]} " in line, (name, line)
    # different settings, different lines (before the measured numbers)
    headings = {lines[t.number].split(" seen=")[0].split(": ", 1)[1]: t.params for t in measured}
    assert len(headings) == len({json.dumps(t.params, sort_keys=True) for t in measured})


def _study(runs: Path):
    import optuna

    return optuna.load_study(study_name="t", storage=f"sqlite:///{runs / 'optuna.db'}")


def test_sweep_records_trials_constraints_and_failures(swept):
    from optuna.trial import TrialState

    _, runs, _, summary = swept
    st = _study(runs)
    everything = st.get_trials()
    # a repeat of a finished configuration is not measured and does not count towards --trials
    repeats = [t for t in everything if "duplicate_of" in t.user_attrs]
    for t in repeats:
        src = everything[t.user_attrs["duplicate_of"]]
        assert t.params == src.params and t.values == src.values
        assert not (runs / "studies" / "t" / "trials" / f"{t.number:04d}").exists()
    trials = [t for t in everything if "duplicate_of" not in t.user_attrs]
    assert len(trials) == 4 and summary["ran"] == [t.number for t in everything]
    assert summary["distinct"] == len([t for t in trials if t.state == TrialState.COMPLETE])
    failed = [t for t in trials if t.state == TrialState.FAIL]
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert failed and done, [(t.number, t.state) for t in trials]
    # the missing model fails with its reason; the study went on
    assert trials[0].state == TrialState.FAIL
    assert "does not exist" in trials[0].user_attrs["fail_reason"]
    for t in trials:  # every constraint on every path
        assert set(t.constraints) == {"accuracy", "predict_time", "health"}, t.number
    for t in done:
        m = t.user_attrs["metrics"]
        assert t.values == [m["accuracy"], m["chars_per_s"]] and m["chars_per_s"] > 0
        assert m["n_questions"] == 4 and m["health_seconds"] > 0
        assert t.user_attrs["serve_config"]["decode"]["max_tokens"] == t.params.get("decode.max_tokens")
        assert (runs / "studies" / "t" / "trials" / f"{t.number:04d}" / "answers.jsonl").exists()
        # the overhead's parts: prefix-cache resets and the judge's own time (health poll, scoring)
        assert m["overhead_reset_seconds"] > 0 and m["overhead_judge_seconds"] > 0
        if "overhead_seconds" in m and m.get("start_seconds") == 0:  # decode-only: the parts are inside it
            assert m["overhead_reset_seconds"] + m["overhead_judge_seconds"] <= m["overhead_seconds"] + 1e-6
    # engine grouping: after tiny's server started (trial 1), the next trials keep its group
    assert [t.params["candidate"] for t in trials[1:]] == ["tiny"] * 3
    # decode-only trials reused the server: one server log for the tiny group
    logs = list((runs / "studies" / "t" / "servers").glob("*.log"))
    assert len(logs) == 1
    assert summary["overhead"] and summary["overhead"]["decode_only_trials"] >= 1
    assert 0 < summary["overhead"]["overhead_reset_seconds_median"] <= summary["overhead"]["overhead_seconds_median"]
    assert not list((runs / "servers").glob("*.json"))  # pidfile removed on a clean exit


def test_mlflow_study_experiment_with_its_trials_and_artifacts(swept):
    """One experiment per study, opening on its runs (MLflow 3's kind tag), a run per trial named by
    what it served, metrics under `judge/...`, the study's run holding the plots and the board."""
    from mlflow.tracking import MlflowClient

    _, runs, _, _ = swept
    c = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
    exp = c.get_experiment_by_name("tournament/t")
    assert exp.artifact_location.startswith((runs / "artifacts").resolve().as_uri())
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    view = json.loads(exp.tags["mlflow.sharedViewState.tournament"])
    assert view["orderByKey"] == "metrics.`judge/predicted_accuracy`" and "metrics.`judge/chars_per_s`" in view["selectedColumns"]
    all_runs = c.search_runs([exp.experiment_id])
    parents = [r for r in all_runs if r.data.tags.get("tournament.kind") == "study"]
    children = [r for r in all_runs if r.data.tags.get("tournament.kind") == "trial"]
    assert len(parents) == 1 and len(children) == 4
    assert not any("mlflow.parentRunId" in r.data.tags for r in children)  # flat: every trial a row
    ok = [r for r in children if r.info.status == "FINISHED"]
    bad = [r for r in children if r.info.status == "FAILED"]
    assert ok and bad and "does not exist" in bad[0].data.tags["fail_reason"]
    r = ok[0]
    assert {"judge/predicted_accuracy", "judge/seen_accuracy", "judge/chars_per_s", "judge/health_seconds",
            "accuracy/accuracy", "accuracy/zh_rougeL", "speed/predict_seconds", "answers/answer_chars_mean"} <= set(r.data.metrics)
    assert r.info.run_name.startswith(f"#{r.data.tags['tournament.trial']} tiny · ")
    assert "max_tokens=" in r.info.run_name or "defaults" in r.info.run_name
    assert {"candidate_hash", "git_commit", "gpu", "version.torch"} <= set(r.data.tags)
    arts = {a.path for a in c.list_artifacts(r.info.run_id)}
    assert {"answers.jsonl", "serve_config.json", "server.log"} <= arts
    assert {"pareto.png", "pareto.html", "board.json"} <= {a.path for a in c.list_artifacts(parents[0].info.run_id)}


def test_board_json_and_pick_serves_the_winner(swept):
    import httpx

    from tournament.serving.process import ServerProcess

    tmp, runs, _, _ = swept
    r = runner.invoke(app, ["board", "--runs-dir", str(runs), "--json", "--ledger", str(tmp / "ledger.json")])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    rows = [r for r in data["trials"] if r["duplicate_of"] is None]  # repeats are listed, marked
    assert data["study"] == "t" and len(rows) == 4 and data["submissions_left"] == 20
    assert data["n_distinct"] == sum(r["state"] == "COMPLETE" for r in rows)
    for r in rows:  # the judge model's parts, on every finished trial (a base model: seen = unseen)
        if r["state"] == "COMPLETE":
            assert r["build"] == "base" and r["seen_accuracy"] == r["unseen_accuracy"]
            for k in ("seen_accuracy", "unseen_accuracy", "predicted_accuracy", "predicted_accuracy_sd"):
                assert isinstance(r[k], float), k
    assert rows[0]["feasible"] and rows[0]["pareto"]  # feasible first, front marked
    assert rows[-1]["state"] == "FAIL" and not rows[-1]["feasible"]
    assert (runs / "studies" / "t" / "pareto.png").exists() and (runs / "studies" / "t" / "pareto.html").exists()

    out = tmp / "winner.json"
    r = runner.invoke(app, ["pick", "--auto", "--runs-dir", str(runs), "--local", "--out", str(out)])
    assert r.exit_code == 0, r.output
    doc = json.loads(out.read_text())
    assert doc["schema"] == 1 and doc["candidate"]["id"] == "tiny" and doc["candidate"]["build"] == "base"
    for k in ("seen_accuracy", "unseen_accuracy", "predicted_accuracy", "predicted_accuracy_sd"):
        assert isinstance(doc["provenance"]["metrics"][k], float), k
    assert doc["provenance"]["study"] == "t" and doc["provenance"]["rule"].startswith("auto")
    picked = next(x for x in rows if x["trial"] == doc["provenance"]["trial"])
    assert picked["feasible"]
    with ServerProcess(winner=out, log_path=tmp / "winner-server.log") as srv:
        srv.wait_healthy(120)
        info = httpx.get(srv.url + "/info", timeout=10).json()
        assert info["config"]["decode"] == doc["serve"]["decode"]
        assert httpx.get(srv.url + "/", timeout=10).json()["status"] == doc["serve"]["mode"]
        ans = httpx.post(srv.url + "/predict", json={"prompt": ["什么是 warp？"]}, timeout=60).json()
        assert isinstance(ans["response"], list) and ans["response"][0]

    # the image form: repo-relative model path; a candidate without a ModelScope id warns
    out2 = tmp / "winner-image.json"
    r = runner.invoke(app, ["pick", "--trial", str(picked["trial"]), "--runs-dir", str(runs), "--out", str(out2)])
    assert r.exit_code == 0, r.output
    assert json.loads(out2.read_text())["serve"]["model"]["path"] == "models/winner"
    assert "ModelScope" in r.output


def test_cache_reuses_answers_and_speed(swept):
    """An identical configuration in another study is a cache hit: same answers, and with
    --reuse-cached-speed the stored speed too (no server start). Inside one study the same parameters
    are a repeat instead: nothing is measured, and the trial does not count. The flag's old name,
    --no-cache-speed, still works and warns."""
    import optuna
    from optuna.trial import TrialState

    tmp, runs, cfg, _ = swept
    done = [t for t in _study(runs).get_trials() if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    other = optuna.create_study(study_name="t2", storage=f"sqlite:///{runs / 'optuna.db'}",
                                directions=["maximize", "maximize"])
    other.enqueue_trial(done[0].params)
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs), "--trials", "1",
                            "--reuse-cached-speed", "--study", "t2", "--json", "--no-mlflow"])
    assert r.exit_code == 0, r.output
    trials = optuna.load_study(study_name="t2", storage=f"sqlite:///{runs / 'optuna.db'}").get_trials()
    trials = [t for t in trials if t.state != TrialState.WAITING]  # the sweep file's enqueued ones wait
    assert len(trials) == 1
    new = trials[0]
    assert new.state == TrialState.COMPLETE and new.user_attrs["cache"] == "answers+speed"
    assert new.values == done[0].values
    assert not (runs / "studies" / "t2" / "servers").exists()  # no server started
    assert not any(k.startswith("overhead_") for k in new.user_attrs["metrics"])  # not this trial's time
    # the same parameters again inside study t: a repeat, not a measurement, not a counted trial
    st = _study(runs)
    before = len(st.get_trials())
    st.enqueue_trial(done[0].params)
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs), "--study", "t", "--json",
                            "--no-mlflow", "--trials", "5", "--no-cache-speed"])
    assert r.exit_code == 0, r.output
    assert "--no-cache-speed is deprecated" in r.output
    new = [t for t in _study(runs).get_trials() if t.state != TrialState.WAITING][before:]
    assert new[0].params == done[0].params and new[0].user_attrs["duplicate_of"] == done[0].number
    assert new[0].number in json.loads(r.stdout.strip().splitlines()[-1])["repeats"]
    # it did not count: one more distinct trial ran to reach --trials 5
    assert any("duplicate_of" not in t.user_attrs for t in new)


def test_sweep_config_errors_are_clear(tmp_path, tiny_model_dir, tiny_qa_file):
    from tournament.study.config import SweepConfigError, load_sweep_config

    bad = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file,
                     space={"decode": {"max_tokns": [8]}, "engine": {"max_num_seqs": [0, 4]}})
    with pytest.raises(SweepConfigError) as e:
        load_sweep_config(bad)
    assert "max_tokns" in str(e.value)
    bad = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, space={"engine": {"max_num_seqs": [0, 4]}})
    with pytest.raises(SweepConfigError) as e:
        load_sweep_config(bad)
    assert "space.engine.max_num_seqs" in str(e.value)
    r = runner.invoke(app, ["sweep", "-c", str(bad)])
    assert r.exit_code == 2 and "max_num_seqs" in r.output


def test_shipped_sweep_files_validate():
    from tournament.paths import REPO_ROOT
    from tournament.study.config import load_sweep_config

    for f in ("demo-cpu.yaml", "gpu-gemma.yaml"):
        cfg = load_sweep_config(REPO_ROOT / "sweeps" / f)
        assert cfg.candidates
    assert load_sweep_config(REPO_ROOT / "sweeps" / "gpu-gemma.yaml").trials >= 30


def test_secrets_are_scrubbed(monkeypatch):
    from tournament.tracking import scrub, scrub_text

    monkeypatch.setenv("MODELSCOPE_API_TOKEN", "abcdef123456secret")
    doc = {"HF_TOKEN": "x", "note": "use abcdef123456secret now", "url": "postgresql://u:pw@h/db",
           "nested": {"api_key": "k", "ok": 1}}
    out = scrub(doc)
    assert "HF_TOKEN" not in out and "api_key" not in out["nested"] and out["nested"]["ok"] == 1
    assert "abcdef123456secret" not in json.dumps(out) and ":pw@" not in out["url"]
    assert scrub_text("token hf_" + "a" * 30) == "token ***"
    # settings that count tokens are not secrets: a serve config keeps them
    settings = {"decode": {"max_tokens": 8, "stop_token_ids": [1]}, "engine": {"max_num_batched_tokens": 4},
                "group_key": "ab12", "cache_key": "cd34"}  # the sweep's content hashes are tags worth keeping
    assert scrub(settings) == settings


def test_a_secret_in_a_prompt_never_reaches_the_studys_records(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir,
                                                                monkeypatch):
    """A token's value placed in a prompt prefix is masked in optuna.db, the answer cache, the
    trial files and the sweep's output, as it is in MLflow."""
    secret = "hf_" + "Zq7" * 10
    monkeypatch.setenv("HF_TOKEN", secret)
    cfg = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, trials=1, enqueue=[],
                     candidates=[{"id": "tiny", "model_path": str(tiny_model_dir), "prompt": {"prefix": f"key {secret} "},
                                  "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}}],
                     space={"decode": {"max_tokens": 4}, "mode": "batch"})
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--no-track"])
    assert r.exit_code == 0, r.output
    assert secret not in r.output
    written = [p for p in runs_dir.rglob("*") if p.is_file() and p.suffix in (".db", ".json", ".jsonl", ".db-wal")]
    assert any(p.parent.name == "cache" for p in written)  # the cache was written, and checked below
    for p in written:
        assert secret.encode() not in p.read_bytes(), p
