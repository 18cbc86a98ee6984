"""Several hosts, one dashboard: workers with runs folders of their own share one Optuna study and
log to one MLflow tracking server (a real `mlflow server`, loopback, sqlite backend), one through
`--tracking-uri`, the other through `MLFLOW_TRACKING_URI`; every trial lands in the study's one
experiment, and `pick`, `submit` and `judge-result` mark the same server's runs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest
from typer.testing import CliRunner

from tests.study.test_sweep import sweep_file
from tournament.cli import app
from tournament.serving.process import free_port, stop_group

pytestmark = pytest.mark.slow
runner = CliRunner()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


@pytest.fixture
def tracking_server(tmp_path):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(tmp_path / "mlflow-server.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{tmp_path / 'server.db'}", "--artifacts-destination",
                             str(tmp_path / "server-artifacts"), "--host", "127.0.0.1", "--port", str(port),
                             "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and not _healthy(url):
            time.sleep(0.5)
        assert _healthy(url), (tmp_path / "mlflow-server.log").read_text(errors="replace")[-3000:]
        yield url
    finally:
        stop_group(proc)
        log.close()


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    return {**env, **extra}


def test_two_workers_on_two_hosts_log_one_experiment(tmp_path, tiny_model_dir, tiny_qa_file, tracking_server):
    import optuna
    from mlflow.tracking import MlflowClient

    from tournament.study.optuna_storage import make_storage

    cfg = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, trials=4, enqueue=[], speed_repeats=1,
                     space={"candidate": ["tiny"], "decode": {"max_tokens": [4, 8, 12, 16]}},
                     candidates=[{"id": "tiny", "model_path": str(tiny_model_dir),
                                  "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}}])
    journal = tmp_path / "shared" / "optuna.journal"  # the shared storage (PostgreSQL across real hosts)
    journal.parent.mkdir()
    hosts = [tmp_path / "host-a", tmp_path / "host-b"]
    workers = []
    for i, host in enumerate(hosts):
        host.mkdir()
        args = [sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--storage", f"journal:{journal}",
                "--runs-dir", str(host / "mlruns"), "--json"]
        # one worker names the server by option, the other by MLflow's own variable
        env = _env() if i == 0 else _env(MLFLOW_TRACKING_URI=tracking_server)
        args += ["--tracking-uri", tracking_server] if i == 0 else []
        workers.append(subprocess.Popen(args, cwd=host, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                        text=True))
        if i == 0:  # the second joins once the first created the study, as a second host would
            deadline = time.time() + 120
            while time.time() < deadline and not (journal.exists() and journal.stat().st_size > 0):
                time.sleep(0.2)
    outs = [w.communicate(timeout=600)[0] for w in workers]
    assert [w.returncode for w in workers] == [0, 0], outs
    for host in hosts:  # nothing logged to a store of its own
        assert not (host / "mlruns" / "mlflow.db").exists(), host

    trials = optuna.load_study(study_name="t", storage=make_storage(f"journal:{journal}")).get_trials()
    tracked = {t.number: t.user_attrs["mlflow_run_id"] for t in trials if "mlflow_run_id" in t.user_attrs}
    # a trial that repeats a finished one's parameters measures nothing and shares that one's run (four
    # max_tokens for five trials: whether one repeats depends on the two workers' timing)
    repeats = {t.number: t.user_attrs["duplicate_of"] for t in trials if "duplicate_of" in t.user_attrs}
    measured = {n: run_id for n, run_id in tracked.items() if n not in repeats}
    for n in repeats:
        first = n
        while first in repeats:  # a repeat of a repeat leads to the trial that measured
            first = repeats[first]
        assert tracked[n] == measured[first], (repeats, tracked)
    assert len({t.user_attrs["worker"] for t in trials if "worker" in t.user_attrs}) == 2, outs  # both measured
    c = MlflowClient(tracking_uri=tracking_server)
    exp = c.get_experiment_by_name("tournament/t")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = c.search_runs([exp.experiment_id])
    trial_runs = {int(r.data.tags["tournament.trial"]): r for r in runs if r.data.tags.get("tournament.kind") == "trial"}
    assert set(trial_runs) == set(measured) and len(tracked) >= 4  # every trial, in one experiment
    assert {trial_runs[n].info.run_id for n in measured} == set(measured.values())
    assert all("judge/predicted_accuracy" in r.data.metrics for r in trial_runs.values())
    assert len([r for r in runs if r.data.tags.get("tournament.kind") == "study"]) == 1
    assert {c.get_experiment(r.info.experiment_id).name for r in c.search_runs(
        [e.experiment_id for e in c.search_experiments()])} == {"tournament/t"}

    # pick, submit and judge-result on host a mark the server's runs; the variable alone is enough
    env = {"MLFLOW_TRACKING_URI": tracking_server}
    store = ["--storage", f"journal:{journal}", "--runs-dir", str(hosts[0] / "mlruns")]
    winner, ledger = tmp_path / "winner.json", tmp_path / "ledger.json"
    r = runner.invoke(app, ["pick", "--auto", *store, "--local", "--out", str(winner), "--ledger", str(ledger)], env=env)
    assert r.exit_code == 0, r.output
    picked = json.loads(winner.read_text())["provenance"]["trial"]
    marked = [n for n, run in trial_runs.items() if "winner" in c.get_run(run.info.run_id).data.tags]
    assert marked == [picked]
    r = runner.invoke(app, ["submit", "--winner", str(winner), "--ledger", str(ledger), "--runs-dir",
                            str(hosts[0] / "mlruns")], env=env)
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["judge-result", "1", "--accuracy", "0.41", "--speed", "123", "--set", "basic",
                            "--ledger", str(ledger), "--runs-dir", str(hosts[0] / "mlruns")], env=env)
    assert r.exit_code == 0, r.output
    assert c.get_run(trial_runs[picked].info.run_id).data.metrics["ledger/judge_accuracy_basic"] == 0.41
    sub = c.search_runs([c.get_experiment_by_name("tournament-ledger").experiment_id])
    assert len(sub) == 1 and sub[0].data.metrics["judge/accuracy_basic"] == 0.41
    assert sub[0].data.metrics["judge/chars_per_s_basic"] == 123 and "local/chars_per_s" in sub[0].data.metrics
    assert not (hosts[0] / "mlruns" / "mlflow.db").exists()


def test_ui_on_a_tracking_server_links_it_and_starts_only_optuna_dashboard(tmp_path, tracking_server):
    import optuna

    runs = tmp_path / "mlruns"
    runs.mkdir()
    optuna.create_study(study_name="s", storage=f"sqlite:///{runs / 'optuna.db'}")
    from tournament.tracking import Tracker

    t = Tracker(runs, uri=tracking_server, required=True)
    t.start_study("s", {}, {})
    port, optuna_port = free_port(), free_port()
    log_path = tmp_path / "ui.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tournament.cli", "ui", "--runs-dir", str(runs), "--port",
                                 str(port), "--optuna-port", str(optuna_port), "--tracking-uri", tracking_server],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=_env())
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None and not _healthy_port(optuna_port):
            time.sleep(0.5)
        out = log_path.read_text(errors="replace")
        assert _healthy_port(optuna_port), out
        link = f"{tracking_server}/#/experiments/{t.experiment_id}/runs?viewStateShareKey=tournament"
        assert f"tournament/s: {link}&workflowType=machine_learning" in out
        assert "mlflow ui" not in out and not _healthy_port(port)  # the server is the MLflow UI
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    assert not _healthy_port(optuna_port)


def _healthy_port(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
