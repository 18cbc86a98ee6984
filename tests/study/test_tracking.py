"""MLflow tracking is strict at the start and best effort after it: a sweep whose MLflow cannot
start stops before its first trial (exit 2, naming what is missing); a logging error mid-sweep is
said once and fails nothing; an untracked study says so on the board; the MLflow run of a trial
whose worker was killed ends KILLED on the next sweep; a fail_reason keeps the error's end."""

from __future__ import annotations

import json
import logging
import socket
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from tests.study.test_sweep import sweep_file
from tournament.cli import app

runner = CliRunner()


def _failing_sweep(tmp_path: Path, model_path: Path, qa: Path, **over) -> Path:
    """One candidate whose model is missing: each trial fails at once (no server starts)."""
    return sweep_file(tmp_path, model_path, qa, trials=1, enqueue=[],
                      candidates=[{"id": "missing", "model_path": str(model_path)}],
                      space={"candidate": ["missing"], "decode": {"max_tokens": [8]}}, **over)


def test_keep_end_and_count_names_are_not_secrets():
    from tournament.tracking import keep_end, scrub

    assert keep_end("short", 10) == "short"
    cut = keep_end("a" * 50 + "the cause", 20)
    assert len(cut) == 20 and cut.startswith("…") and cut.endswith("the cause")
    out = scrub({"decode": {"max_tokens": 64}, "tokens": 9, "HF_TOKEN": "x", "api_key": "y"})
    assert out == {"decode": {"max_tokens": 64}, "tokens": 9}


def test_logging_errors_after_the_start_are_loud_once_and_fail_nothing(runs_dir, caplog, monkeypatch):
    from tournament.tracking import Tracker

    t = Tracker(runs_dir, required=True)
    t.start_study("s", {"a": 1}, {})
    run_ids = [t.start_trial("s", n, {}) for n in range(3)]

    def broken(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(t.client, "log_batch", broken)
    with caplog.at_level(logging.DEBUG, logger="tournament.tracking"):
        for rid in run_ids:
            t.finish_trial(rid, params={"x": 1}, metrics={"m": 1.0}, tags={}, artifacts={}, status="FINISHED")
        t.end_study()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "disk full" in errors[0].getMessage()
    assert t.errors == 3
    summary = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert summary and "3 logging call(s) failed" in summary[-1].getMessage()


def test_sweep_stops_before_its_first_trial_when_mlflow_cannot_start(tmp_path, tiny_qa_file):
    """mlflow-skinny's sqlite store imports cryptography.fernet: without it the sweep says so."""
    runs = tmp_path / "runs"
    cfg = _failing_sweep(tmp_path, tmp_path / "no-model", tiny_qa_file)
    code = ("import sys; sys.modules['cryptography'] = None\n"
            "from tournament.cli import main; main()")
    out = subprocess.run([sys.executable, "-c", code, "sweep", "-c", str(cfg), "--runs-dir", str(runs)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stdout + out.stderr
    msg = " ".join(out.stderr.split())
    assert "MLflow could not open sqlite:///" in msg and "pip install cryptography" in msg
    assert "or pass --no-track" in msg and "Traceback" not in out.stderr
    assert not (runs / "optuna.db").exists()  # stopped before the study was even opened


def test_untracked_study_is_marked_on_the_board(tmp_path, tiny_qa_file, runs_dir):
    cfg = _failing_sweep(tmp_path, tmp_path / "no-model", tiny_qa_file)
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--no-track", "--json"])
    assert r.exit_code == 0, r.output
    b = runner.invoke(app, ["board", "--runs-dir", str(runs_dir), "--json", "--no-plots", "--ledger",
                            str(tmp_path / "ledger.json")])
    assert b.exit_code == 0, b.output
    data = json.loads(b.stdout)
    assert data["tracked"] is False and all(t["mlflow_run_id"] is None for t in data["trials"])
    text = runner.invoke(app, ["board", "--runs-dir", str(runs_dir), "--no-plots", "--ledger",
                               str(tmp_path / "ledger.json")])
    assert "untracked (no MLflow runs)" in " ".join(text.stdout.split())


def test_dead_workers_mlflow_run_ends_killed_and_fail_reasons_keep_the_end(tmp_path, tiny_qa_file, runs_dir):
    import optuna
    from mlflow.tracking import MlflowClient
    from optuna.trial import TrialState

    from tournament.tracking import Tracker

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    # a worker that ran trial 0, logged its MLflow run, and was killed (kill -9: nothing ended)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.create_study(study_name="t", storage=f"sqlite:///{runs_dir / 'optuna.db'}",
                                directions=["maximize", "maximize"])
    orphan = study.ask()
    orphan.set_user_attr("worker", f"{socket.gethostname()}:{dead.pid}")
    t = Tracker(runs_dir, required=True)
    t.start_study("t", {}, {})
    dead_run = t.start_trial("t", orphan.number, {})
    orphan.set_user_attr("mlflow_run_id", dead_run)
    t.flush()

    # the retry fails with a long reason whose cause is at its end
    deep = tmp_path.joinpath(*(["d" * 200] * 12), "no-model")
    cfg = _failing_sweep(tmp_path, deep, tiny_qa_file)
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--json"])
    assert r.exit_code == 0, r.output

    c = MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlflow.db'}")
    killed = c.get_run(dead_run)
    assert killed.info.status == "KILLED"
    assert "died while the trial was running" in killed.data.tags["fail_reason"]
    trials = {tr.number: tr for tr in optuna.load_study(study_name="t", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
              .get_trials()}
    assert trials[orphan.number].state == TrialState.FAIL
    retry = next(tr for tr in trials.values() if tr.user_attrs.get("retry_of") == orphan.number)
    reason = retry.user_attrs["fail_reason"]
    assert retry.state == TrialState.FAIL and len(reason) == 2000
    assert reason.startswith("…") and reason.endswith("does not exist")
    tag = c.get_run(retry.user_attrs["mlflow_run_id"]).data.tags["fail_reason"]
    assert 2000 < len(tag) <= 4000 and tag.startswith("FileNotFoundError") and tag.endswith("does not exist")
    assert optuna.load_study(study_name="t", storage=f"sqlite:///{runs_dir / 'optuna.db'}").user_attrs["tracked"] is True


def test_where_mlflow_lives_option_then_variable_then_the_runs_folder(tmp_path, monkeypatch):
    """--tracking-uri wins, then MLFLOW_TRACKING_URI (as MLflow's own clients read it), then the
    runs folder's sqlite file; `ui` starts no MLflow of its own for a tracking server."""
    from tournament.tracking import tracking_uri, ui_command

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert "--backend-store-uri" in ui_command(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5999" and ui_command(tmp_path) is None
    assert tracking_uri(tmp_path, "sqlite:////elsewhere/mlflow.db") == "sqlite:////elsewhere/mlflow.db"


def test_mlflow_names_sort_together_and_runs_say_what_they_served():
    from tournament.study.dashboard import metric_name, run_name
    from tournament.tracking import VIEW_METRICS

    assert [metric_name(k) for k in ("predicted_accuracy", "chars_per_s", "chars_per_s_mad", "answer_chars_mean",
                                     "zh_rougeL", "overhead_seconds", "seen_accuracy_bonus")] == [
        "judge/predicted_accuracy", "judge/chars_per_s", "speed/chars_per_s_mad", "answers/answer_chars_mean",
        "accuracy/zh_rougeL", "sweep/overhead_seconds", "accuracy/seen_accuracy_bonus"]
    judge = {m for m in VIEW_METRICS if m.startswith("judge/")}
    assert judge <= {metric_name(m.split("/", 1)[1]) for m in judge}  # the view shows names a trial logs
    serve = {"engine": {"max_num_seqs": 256, "batch_size": 8}, "decode": {"max_tokens": 64, "temperature": 0.0}}
    name = run_name(3, "gemma", "refit", "one-shot", "serial", serve, {"decode.max_tokens", "engine.max_num_seqs"})
    assert name.startswith("#3 gemma · refit · one-shot · serial · max_tokens=64")
    assert "batch_size" not in name  # the candidate's own setting, not drawn
    assert run_name(0, "base", "base", None, "batch", {}, set()) == "#0 base · defaults"
