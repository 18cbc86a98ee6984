"""A worker killed (SIGKILL) after Optuna recorded a trial's end but before its MLflow run was
logged leaves the run RUNNING with no metrics; the next sweep on the study ends it: a COMPLETE
trial's run FINISHED with Optuna's metrics, a FAIL trial's KILLED."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from typer.testing import CliRunner

from tests.study.test_sweep import sweep_file
from tournament.cli import app

# What a sweep worker does around `tell`, cut off by SIGKILL where its logging thread had not run.
KILLED_WORKER = textwrap.dedent("""
    import os, signal, sys
    import optuna
    from optuna.trial import TrialState
    from tournament.study.recovery import worker_id
    from tournament.tracking import Tracker

    runs = sys.argv[1]
    tracker = Tracker(runs, required=True)
    tracker.start_study("t", {}, {})  # as a sweep does: the study's experiment, then its trials' runs
    study = optuna.create_study(study_name="t", storage=f"sqlite:///{runs}/optuna.db",
                                directions=["maximize", "maximize"])
    for state in ("COMPLETE", "FAIL"):
        trial = study.ask()
        trial.set_user_attr("worker", worker_id())
        trial.set_user_attr("mlflow_run_id", tracker.start_trial("t", trial.number, {}))
        if state == "COMPLETE":
            trial.set_user_attr("metrics", {"predicted_accuracy": 0.41, "chars_per_s": 1234.5, "seen_accuracy": 0.5})
            study.tell(trial, [0.41, 1234.5])
        else:
            trial.set_user_attr("fail_reason", "RuntimeError: server died")
            study.tell(trial, state=TrialState.FAIL)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_runs_left_running_by_a_killed_worker_are_ended_on_resume(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    from mlflow.tracking import MlflowClient

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c", KILLED_WORKER, str(runs_dir)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{runs_dir / 'mlflow.db'}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.`tournament.kind` = 'trial'")
    assert len(runs) == 2 and all(r.info.status == "RUNNING" and not r.data.metrics for r in runs)

    # the same study resumed: its target (one finished trial) is met, so nothing new runs
    cfg = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, trials=1, enqueue=[],
                     candidates=[{"id": "tiny", "model_path": str(tiny_model_dir),
                                  "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}}],
                     space={"decode": {"max_tokens": 4}, "mode": "batch"})
    r = CliRunner().invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir)])
    assert r.exit_code == 0, r.output
    by_trial = {r.data.tags.get("tournament.trial"): client.get_run(r.info.run_id) for r in runs}
    done, failed = by_trial["0"], by_trial["1"]
    assert done.info.status == "FINISHED" and done.info.end_time is not None
    # Optuna's record written again, under the names MLflow shows a trial's metrics (dashboard.py)
    assert done.data.metrics == {"judge/predicted_accuracy": 0.41, "judge/chars_per_s": 1234.5,
                                 "judge/seen_accuracy": 0.5}
    assert failed.info.status == "KILLED" and "server died" in failed.data.tags["fail_reason"]
