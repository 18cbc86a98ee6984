"""What a person sees, in a real browser (Debian's headless Chromium, no WebDriver): `tournament ui`
over a small real study serves the MLflow UI, opening on the study's trials with the judge's
columns and the picked trial marked, and optuna-dashboard on the same study; `pareto.html` opened
from file with no network draws one point per complete trial. Screenshots (PNG) are kept under
`test-artifacts/browser/` (git-ignored) for a person to look at."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.study.test_sweep import sweep_file
from tournament.cli import app
from tournament.paths import REPO_ROOT
from tournament.serving.process import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = REPO_ROOT / "test-artifacts" / "browser"
pytestmark = [pytest.mark.slow,
              # one test process runs them all (scripts/test.sh: --dist loadgroup): the served sweep
              # (a module fixture) is built once
              pytest.mark.xdist_group("browser"),
              pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; "
                                                          ".ci/run installs it)")]
runner = CliRunner()


def _chromium(url: str, screenshot: Path, *, budget_ms: int = 8000, offline: bool = False) -> str:
    """The page's DOM after `budget_ms` of virtual time (its fetches answered), and its screenshot."""
    # a profile of its own per call: Chromium aborts (exit 21) on a profile whose SingletonLock another
    # browser, or one just ended under two test processes, still holds
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           "--no-first-run", "--window-size=1920,1000", f"--virtual-time-budget={budget_ms}",
           f"--user-data-dir={profile}", f"--screenshot={screenshot}", "--dump-dom"]
    if offline:  # any request off the file fails: the page must carry everything it needs
        cmd += ["--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>"]
    try:
        out = subprocess.run([*cmd, url], capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    assert out.returncode == 0, f"chromium exited {out.returncode}: {out.stderr[-2000:]}"
    assert screenshot.stat().st_size > 10_000, screenshot  # a page, not a blank
    return out.stdout


def _text(dom: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)[^>]*>.*?</\1>", " ", dom,
                                                                 flags=re.S))).split())


def _grid_rows(dom: str) -> dict[int, str]:
    """The text of each row of MLflow's runs table (ag-grid splits a row over its pinned and
    scrolled parts; `row-index` joins them)."""
    rows: dict[int, str] = {}
    parts = re.split(r'<div[^>]*? row-index="(\d+)"', dom)
    for i in range(1, len(parts), 2):
        rows[int(parts[i])] = rows.get(int(parts[i]), "") + " " + _text("<x " + parts[i + 1])
    return rows


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def served(tmp_path_factory, tiny_model_dir, tiny_qa_file, _mlflow_db_template):
    """3 trials of the tiny model (one server); `tournament ui` on them, started while the board
    writes the plots and `pick` marks the winner. Yields the store, the board, winner.json, the
    MLflow link `ui` printed and optuna-dashboard's port."""
    tmp = tmp_path_factory.mktemp("browser")
    runs = tmp / "mlruns"
    runs.mkdir()
    shutil.copy(_mlflow_db_template, runs / "mlflow.db")
    cfg = sweep_file(tmp, tiny_model_dir, tiny_qa_file, trials=3, enqueue=[],
                     space={"candidate": ["tiny"], "decode": {"max_tokens": [8, 16, 24]}},
                     candidates=[{"id": "tiny", "model_path": str(tiny_model_dir),
                                  "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}}])
    no_server = {"MLFLOW_TRACKING_URI": None}
    r = runner.invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs), "--json"], env=no_server)
    assert r.exit_code == 0, r.output
    port, optuna_port = free_port(), free_port()
    log_path = tmp / "ui.log"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "tournament.cli", "ui", "--runs-dir", str(runs), "--port",
                                 str(port), "--optuna-port", str(optuna_port)], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, env=env, cwd=REPO_ROOT)
    try:
        b = runner.invoke(app, ["board", "--runs-dir", str(runs), "--json", "--ledger", str(tmp / "ledger.json")],
                          env=no_server)
        assert b.exit_code == 0, b.output
        p = runner.invoke(app, ["pick", "--auto", "--runs-dir", str(runs), "--local", "--out", str(tmp / "winner.json"),
                                "--ledger", str(tmp / "ledger.json")], env=no_server)
        assert p.exit_code == 0, p.output
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        deadline = time.time() + 150
        while time.time() < deadline and proc.poll() is None and not (_port_open(port) and _port_open(optuna_port)):
            time.sleep(0.5)
        out = log_path.read_text(errors="replace")
        assert _port_open(port) and _port_open(optuna_port), out[-3000:]
        link = re.search(r"tournament/t: (http://\S+)", out)
        assert link, out
        yield runs, json.loads(b.stdout), json.loads((tmp / "winner.json").read_text()), link.group(1), optuna_port
    finally:
        proc.send_signal(signal.SIGINT)  # one Ctrl-C stops both
        proc.wait(timeout=60)
        deadline = time.time() + 30
        while time.time() < deadline and (_port_open(port) or _port_open(optuna_port)):
            time.sleep(0.25)
        assert not _port_open(port) and not _port_open(optuna_port)


def test_mlflow_opens_on_the_trials_with_the_judges_columns_and_the_winner(served):
    _, board, winner, link, _ = served
    dom = _chromium(link, ARTIFACTS / "mlflow-runs.png", budget_ms=15000)
    text = _text(dom)
    assert "Runs" in text and "No data available" not in text  # the runs, not the GenAI overview
    assert "Judges" not in text and "Agent versions" not in text  # the sidebar in its "Model training" mode
    for column in ("judge/predicted_accuracy", "judge/chars_per_s", "judge/seen_accuracy", "winner"):
        assert column in text, column
    rows = list(_grid_rows(dom).values())
    measured = [t for t in board["trials"] if t["state"] == "COMPLETE" and t.get("duplicate_of") is None]
    assert measured and len(rows) == len(measured) + 1, rows  # every measured trial, and the study's run
    for t in measured:  # a row per trial, named by what it served, with its numbers
        row = next((r for r in rows if f"#{t['trial']} tiny · max_tokens=" in r), None)
        assert row is not None, (t["trial"], rows)
        assert f"{t['chars_per_s']:.6f}"[:6] in row, (t["chars_per_s"], row)
        assert ("★ picked: winner.json" in row) == (t["trial"] == winner["provenance"]["trial"]), row
    assert any("study-t" in r for r in rows)


def test_optuna_dashboard_shows_the_study(served):
    *_, optuna_port = served
    dom = _chromium(f"http://127.0.0.1:{optuna_port}/dashboard/studies/1", ARTIFACTS / "optuna-dashboard.png",
                    budget_ms=15000)
    text = _text(dom)
    # the study by name, its Pareto front over the study's two objectives, drawn
    assert "t (id=1)" in text and "Pareto Front" in text, text[:2000]
    assert "accuracy" in text and "chars_per_s" in text and 'class="point"' in dom


def test_pareto_html_from_file_offline_one_point_per_complete_trial(served):
    runs, board, *_ = served
    page = runs / "studies" / "t" / "pareto.html"
    dom = _chromium(page.resolve().as_uri(), ARTIFACTS / "pareto.png", offline=True)
    measured = [t for t in board["trials"] if t["state"] == "COMPLETE" and t.get("duplicate_of") is None]
    front = [t for t in measured if t["pareto"]]
    assert front
    # one marker per trial, and a ring around each trial on the front
    assert dom.count('class="point"') == len(measured) + len(front)
    assert "main-svg" in dom and f"study t: {len(measured)} finished trials" in _text(dom)
