"""`tournament ui`: a SIGTERM stops the MLflow server and everything it started (uvicorn workers,
huey consumers), so nothing keeps serving on the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tournament.serving.process import free_port


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            kids.setdefault(ppid, []).append(int(d))
    return kids


def _descendants(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        for k in kids.get(todo.pop(), []):
            out.append(k)
            todo.append(k)
    return out


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"  # a zombie serves nothing; it waits for its parent to reap it


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_stops_the_whole_mlflow_server(runs_dir, tmp_path):
    port = free_port()
    script = Path(sys.executable).parent / "tournament"
    cmd = [str(script)] if script.is_file() else [sys.executable, "-m", "tournament.cli"]
    log = open(tmp_path / "ui.log", "wb")
    proc = subprocess.Popen([*cmd, "ui", "--port", str(port), "--runs-dir", str(runs_dir)], stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    seen: list[int] = []
    try:
        deadline = time.time() + 180
        while time.time() < deadline and proc.poll() is None and not _port_open(port):
            time.sleep(0.5)
        assert _port_open(port), (tmp_path / "ui.log").read_text(errors="replace")[-3000:]
        seen = _descendants(proc.pid)
        assert seen  # mlflow and its workers
        proc.send_signal(signal.SIGTERM)  # to `tournament ui` alone, as `kill PID` does
        proc.wait(timeout=60)
        deadline = time.time() + 30
        while time.time() < deadline and (_port_open(port) or any(map(_running, seen))):
            time.sleep(0.25)
        assert not _port_open(port)
        assert not [p for p in seen if _running(p)]
        assert proc.returncode == 128 + signal.SIGTERM
    finally:
        for p in [proc.pid, *seen]:  # a failed test must not leave a server behind
            try:
                os.kill(p, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        proc.wait(timeout=10)
        log.close()


def test_ui_never_prints_a_password_of_its_urls(tmp_path):
    """A tracking server and an Optuna storage given with credentials: what `tournament ui` prints
    names both, with the passwords masked (the servers behind them are not there: it just ends)."""
    tracking = f"http://alice:pw1234secret@127.0.0.1:{free_port()}"
    storage = f"postgresql://bob:hunter2secret@127.0.0.1:{free_port()}/study"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [os.getcwd(), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "tournament.cli", "ui", "--runs-dir", str(tmp_path / "runs"),
                             "--tracking-uri", tracking, "--storage", storage, "--optuna-port", str(free_port())],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=15)  # the lines come at once
    except subprocess.TimeoutExpired:  # optuna-dashboard still trying: stop the whole group
        os.killpg(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert "127.0.0.1" in out, out
    assert "pw1234secret" not in out and "hunter2secret" not in out, out
