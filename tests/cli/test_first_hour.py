"""What a new user ran into in the first hour: each a one-line message and exit code 2 (or a
warning), never a traceback. Real processes, sockets, git repositories and files; no mocks."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tournament.cli import app

runner = CliRunner()


@pytest.mark.parametrize("args,option", [
    (["board", "--limit", "-1"], "--limit"),
    (["demo", "--trials", "0"], "--trials"),
    (["demo", "--questions", "-1"], "--questions"),
    (["judge", "--url", "http://127.0.0.1:9", "--questions", "{qa}", "--health-timeout", "-1"], "--health-timeout"),
    (["submit", "--budget", "-1", "--winner", "{missing}", "--ledger", "{ledger}"], "--budget"),
    (["sweep", "--trials", "0"], "--trials"),
    (["serve", "--port", "70000"], "--port"),
    (["serve", "--port", "-1"], "--port"),
])
def test_out_of_range_options_are_rejected_up_front(args, option, tmp_path, tiny_qa_file):
    fill = {"qa": str(tiny_qa_file), "missing": str(tmp_path / "winner.json"), "ledger": str(tmp_path / "l.json")}
    res = runner.invoke(app, [a.format(**fill) for a in args])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit), res.output
    assert option in res.output and "Traceback" not in res.output
    assert not (tmp_path / "l.json").exists()  # nothing ran


def test_score_refuses_more_predictions_than_references(tmp_path):
    ref = tmp_path / "ref.jsonl"
    ref.write_text(json.dumps({"question": "q", "answer": "warp 32 threads"}) + "\n")
    pred = tmp_path / "pred.jsonl"
    pred.write_text("".join(json.dumps({"answer": a}) + "\n" for a in ("warp 32 threads", "extra")))
    res = runner.invoke(app, ["score", str(pred), str(ref), "--json"])
    assert res.exit_code == 2 and isinstance(res.exception, SystemExit)
    assert "2 predictions but ref.jsonl has 1 references" in res.output
    # fewer predictions stay the judge's rule: padded with empty answers
    pred.write_text(json.dumps({"answer": "warp 32 threads"}) + "\n")
    ref.write_text(ref.read_text() + json.dumps({"question": "q2", "answer": "block"}) + "\n")
    res = runner.invoke(app, ["score", str(pred), str(ref), "--json"])
    assert res.exit_code == 0 and json.loads(res.stdout)["padded"] == 1


def _serve(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    """`tournament serve` as a process of its own: it must stop within seconds, before any model loads."""
    return subprocess.run([sys.executable, "-m", "tournament.cli", "serve", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.fixture
def serve_env(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNAMENT_")}
    env["PYTHONPATH"] = str(repo)
    return env


def test_serve_checks_the_port_before_loading_a_model(tmp_path, serve_env, tiny_model_dir):
    winner = tmp_path / "w.json"
    winner.write_text(json.dumps({"serve": {"model": {"path": str(tiny_model_dir)},
                                            "engine": {"engine": "transformers", "device": "cpu"}}}))
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        res = _serve(["--winner", str(winner), "--port", str(port)], serve_env, tmp_path)
    assert res.returncode == 2, res.stderr
    assert f"port {port} on 127.0.0.1 is already in use" in res.stderr and "Traceback" not in res.stderr
    assert "loading" not in res.stderr  # no model was loaded


def test_serve_says_how_to_get_a_missing_winner_model(tmp_path, serve_env):
    from tournament.serving.process import free_port

    winner = tmp_path / "winner.json"
    winner.write_text(json.dumps({"serve": {"model": {"path": "models/winner", "modelscope_id": "me/model"}}}))
    res = _serve(["--winner", str(winner), "--port", str(free_port())], serve_env, tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr, res.stderr
    assert "models/winner, which is not there" in res.stderr
    assert "download_model.py" in res.stderr and "--local" in res.stderr
    winner.write_text("{not json")
    res = _serve(["--winner", str(winner), "--port", str(free_port())], serve_env, tmp_path)
    assert res.returncode == 2 and "is not valid JSON" in res.stderr and "Traceback" not in res.stderr


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=cwd, check=True,
                   capture_output=True)


def test_submit_warns_about_an_uncommitted_winner_and_an_unpublished_model(tmp_path):
    from tournament.serving.config import ServeConfig

    _git(tmp_path, "init", "-q")
    winner, ledger = tmp_path / "winner.json", tmp_path / "ledger.json"
    serve = ServeConfig().model_dump()
    winner.write_text(json.dumps({"serve": serve, "candidate": {"id": "c"}, "provenance": {}}))
    args = ["submit", "--winner", str(winner), "--ledger", str(ledger), "--runs-dir", str(tmp_path / "runs")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "winner.json is not committed" in res.output
    assert "names no published model" in res.output
    serve["model"]["modelscope_id"] = "me/model"
    winner.write_text(json.dumps({"serve": serve, "candidate": {"id": "c"}, "provenance": {}}))
    _git(tmp_path, "add", "winner.json")
    _git(tmp_path, "commit", "-q", "-m", "winner")
    res = runner.invoke(app, args)
    assert res.exit_code == 0 and "warning:" not in res.output, res.output
    winner.write_text(winner.read_text() + "\n")
    res = runner.invoke(app, args)
    assert "winner.json is changed since the last commit" in res.output
