"""`tournament ui`: the MLflow UI on the tournament's store and optuna-dashboard on its Optuna
storage, side by side on two ports, both stopped by one Ctrl-C (or SIGTERM).

Each server runs in a process group of its own: `mlflow ui` starts uvicorn workers and huey
consumers, and a signal to `tournament ui` alone would leave them serving on the port. The MLflow
link printed per study opens its experiment on the trials with the judge's columns (the shared
view `tracking.study_view`). With a tracking server (``http://...``: several hosts, one
dashboard) the MLflow UI is that server; only optuna-dashboard starts here.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def optuna_dashboard_command(storage: str, host: str, port: int) -> list[str] | None:
    """`optuna-dashboard STORAGE` (a journal storage as its file), or None when not installed."""
    from tournament.study.optuna_storage import journal_path

    exe = Path(sys.executable).parent / "optuna-dashboard"
    found = str(exe) if exe.is_file() else shutil.which("optuna-dashboard")
    if found is None:
        return None
    journal = journal_path(storage)
    return [found, str(journal.resolve()) if journal else storage, "--host", host, "--port", str(port)]


def study_links(uri: str, base: str) -> list[tuple[str, str]]:
    """(experiment, link to its runs in the shared view) for each study experiment of the store."""
    from mlflow.tracking import MlflowClient

    from tournament.tracking import VIEW_KEY, view_url

    try:
        exps = MlflowClient(tracking_uri=uri).search_experiments(max_results=1000)
    except Exception as e:  # the links are a help; the servers start anyway
        from tournament.tracking import scrub_text

        print(scrub_text(f"warning: MLflow store not read ({type(e).__name__}: {e})"), file=sys.stderr)
        return []
    return [(e.name, view_url(base, e.experiment_id)) for e in exps
            if f"mlflow.sharedViewState.{VIEW_KEY}" in e.tags]


def serve_dashboards(runs: Path, storage: str, host: str, port: int, optuna_port: int,
                     echo: Callable[[str], None] = print) -> int:
    """Start both, wait until one ends or a signal comes, stop both. Returns the exit code."""
    from tournament.serving.process import stop_group
    from tournament.tracking import scrub_text, tracking_uri, ui_command

    shown = echo
    echo = lambda line: shown(scrub_text(line))  # noqa: E731  (URLs may hold a password: never print it)

    uri = tracking_uri(runs)
    mlflow_cmd = ui_command(runs, port, host)
    base = f"http://{host}:{port}" if mlflow_cmd else uri
    optuna_cmd = optuna_dashboard_command(storage, host, optuna_port)
    missing = storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).exists()
    echo(f"MLflow UI: {base}" + (f"  ({' '.join(mlflow_cmd[1:])})" if mlflow_cmd else "  (the tracking server)"))
    for name, link in study_links(uri, base):
        echo(f"  {name}: {link}")
    if missing:  # reading never creates a store (as `board`); the MLflow UI still starts
        optuna_cmd = None
        echo(f"Optuna dashboard: not started, no Optuna storage at {storage} (run a sweep first, or pass --storage)")
    elif optuna_cmd:
        echo(f"Optuna dashboard: http://{host}:{optuna_port}  (optuna-dashboard {optuna_cmd[1]})")
    else:
        echo("Optuna dashboard: not installed (pip install optuna-dashboard, or the sweep extra); MLflow only")
    cmds = [c for c in (mlflow_cmd, optuna_cmd) if c]
    if not cmds:
        return 1
    echo("Ctrl-C stops " + ("both" if len(cmds) == 2 else "it"))

    def interrupted(signum, _frame):
        raise SystemExit(128 + signum)  # only unwind here; the clean-up below stops the groups

    procs: list[subprocess.Popen] = []
    for sig in SIGNALS:
        signal.signal(sig, interrupted)
    try:
        procs = [subprocess.Popen(c, start_new_session=True) for c in cmds]
        while all(p.poll() is None for p in procs):
            time.sleep(0.3)
        return next(p.returncode for p in procs if p.returncode is not None)
    except SystemExit as e:
        return int(e.code)
    finally:
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)  # a second Ctrl-C must not cut the clean-up short
        for p in procs:  # both told at once, then each waited for (SIGKILL after its grace)
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs:
            stop_group(p)  # a signal or any other way out stops the whole group
