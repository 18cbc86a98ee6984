"""kill -9 in the middle of a sweep, then the same command again: nothing completed is lost,
the interrupted trial is retried, and no server or port is left behind."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from tests.test_sweep import sweep_file


def _trials(runs: Path):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name="t", storage=f"sqlite:///{runs / 'optuna.db'}").get_trials()
    except Exception:
        return []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_resume_after_sigkill(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    from optuna.trial import TrialState

    cfg = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, trials=4, enqueue=[],
                     space={"decode": {"max_tokens": [48, 64], "repetition_penalty": [1.0, 1.1]}, "mode": "batch"},
                     candidates=[{"id": "tiny", "model_path": str(tiny_model_dir),
                                  "engine": {"engine": "transformers", "device": "cpu", "batch_size": 1}}])
    cmd = [sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--no-mlflow"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server_pids: list[int] = []
    killed_running = None
    deadline = time.time() + 180
    try:
        while time.time() < deadline and proc.poll() is None:
            ts = _trials(runs_dir)
            for f in (runs_dir / "servers").glob("*.json"):
                try:
                    server_pids += json.loads(f.read_text())["servers"]
                except (OSError, ValueError):
                    pass
            done = [t for t in ts if t.state == TrialState.COMPLETE]
            running = [t for t in ts if t.state == TrialState.RUNNING]
            if done and running:
                killed_running = running[0].number
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read().decode()
    before = {t.number for t in _trials(runs_dir) if t.state == TrialState.COMPLETE}
    assert before and server_pids
    # the server died with its parent (PR_SET_PDEATHSIG): no orphan holding a port
    t0 = time.time()
    while any(_alive(p) for p in server_pids) and time.time() - t0 < 15:
        time.sleep(0.2)
    assert not any(_alive(p) for p in server_pids)

    out = subprocess.run(cmd + ["--json"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    ts = _trials(runs_dir)
    complete = {t.number for t in ts if t.state == TrialState.COMPLETE}
    assert before <= complete  # nothing completed was lost
    assert len(complete) == 4  # the study finished its target
    assert not [t for t in ts if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    if killed_running is not None:
        dead = next(t for t in ts if t.number == killed_running)
        assert dead.state == TrialState.FAIL and "died" in dead.user_attrs["fail_reason"]
        retry = [t for t in ts if t.user_attrs.get("retry_of") == killed_running]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
        if "group_key" in dead.user_attrs:  # its plan was complete: the retry runs the same plan
            assert retry[0].params == dead.params
        else:  # killed between two suggest calls: what was chosen is kept, Optuna draws the rest
            assert dead.params.items() <= retry[0].params.items()
        assert "marked FAIL and queued again" in out.stdout + out.stderr
    assert not list((runs_dir / "servers").glob("*.json"))
