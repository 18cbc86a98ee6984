"""kill -9 in the middle of a sweep, then the same command again: nothing completed is lost,
the interrupted trial is retried, and no server or port is left behind; and a second opening of a
study queues none of the sweep file's entries again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path


from tests.study.test_sweep import sweep_file


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
    measured = {t.number for t in ts if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs}
    assert len(measured) == 4  # the study finished its target (repeats of a finished trial do not count)
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


def test_unnamed_trial_of_a_dead_worker_is_recovered_and_a_live_ones_is_not(tmp_path, monkeypatch):
    """A worker killed between `study.ask()` and naming the trial leaves a RUNNING trial with no
    worker attr. The next run on this host takes it (FAIL + queued again) once it is clearly
    nobody's; a trial a live worker names within the grace period is left alone."""
    import threading

    import optuna
    from optuna.trial import TrialState

    from tournament.study import recovery
    from tournament.study.servers import PidFile

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    monkeypatch.setattr(recovery, "UNNAMED_GRACE_S", 0.6)
    runs = tmp_path / "runs"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    study = optuna.create_study(study_name="u", storage=f"sqlite:///{tmp_path / 'o.db'}",
                                directions=["maximize", "maximize"])
    before = study.ask()  # asked before the dead worker started: never its trial
    (runs / "servers").mkdir(parents=True)
    (runs / "servers" / f"{socket.gethostname()}-{dead.pid}.json").write_text(json.dumps(
        {"owner": dead.pid, "host": socket.gethostname(), "started_at": time.time(), "servers": []}))
    orphan = study.ask()
    orphan.suggest_int("x", 0, 9)  # the dead worker got as far as one suggest
    live = study.ask()
    threading.Timer(0.2, lambda: live.set_user_attr("worker", "elsewhere:1")).start()

    killed, dead_started = PidFile(runs).kill_stale()
    assert killed == [] and len(dead_started) == 1
    assert not list((runs / "servers").glob("*.json"))  # the dead worker's record is gone
    recovered = recovery.recover_local_stale(study, dead_started)

    assert recovered == [orphan.number]
    by_number = {t.number: t for t in study.get_trials()}
    assert by_number[orphan.number].state == TrialState.FAIL
    assert "between asking" in by_number[orphan.number].user_attrs["fail_reason"]
    assert by_number[live.number].state == TrialState.RUNNING
    assert by_number[before.number].state == TrialState.RUNNING
    retry = [t for t in study.get_trials() if t.user_attrs.get("retry_of") == orphan.number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert retry[0].system_attrs["fixed_params"] == {"x": orphan.params["x"]}  # what it had chosen is kept


def test_config_changes_name_what_differs():
    from tournament.study.config import config_changes

    stored = {"trials": 4, "base_dir": "/a", "judge": {"set": "basic"}, "space": {"decode": {"max_tokens": [8]}}}
    assert config_changes(stored, {**stored, "trials": 9, "base_dir": "/b"}) == []  # the target, the file's folder
    # a setting a later version added (at its default) is no change
    assert config_changes(stored, {**stored, "judge": {"set": "basic", "cold_start": False}}) == []
    changed = {**stored, "space": {"decode": {"max_tokens": [8, 16]}}, "judge": {}}
    assert config_changes(stored, changed) == ["judge.set", "space.decode.max_tokens"]


def test_config_changes_read_a_renamed_key_under_its_new_name():
    """A study stored before judge.set holds judge.track: the same setting, compared as judge.set."""
    from tournament.study.config import config_changes

    old = {"judge": {"track": "basic", "pass_mark": 0.35}}
    assert config_changes(old, {"judge": {"set": "basic", "hardware": "metax", "pass_mark": 0.35}}) == []
    assert config_changes(old, {"judge": {"set": "bonus", "hardware": "metax", "pass_mark": 0.35}}) == ["judge.set"]
    assert config_changes({"track": "basic"}, {"set": "basic"}) == ["track"]  # renamed in `judge` only


def test_resuming_warns_only_when_a_setting_changed(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    """A study resumed by a newer tournament (its stored config lacks a setting added since) is the
    same sweep: no warning. A changed setting is named in the warning."""
    import optuna
    from typer.testing import CliRunner

    from tournament.cli import app

    cfg = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, trials=1, enqueue=[],
                     candidates=[{"id": "tiny", "model_path": str(tiny_model_dir),
                                  "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}}],
                     space={"decode": {"max_tokens": [8, 16]}})
    args = ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--no-track"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    old = dict(study.user_attrs["sweep_config"])
    old["judge"] = {k: v for k, v in old["judge"].items() if k != "cold_start"}  # as an older version stored it
    study.set_user_attr("sweep_config", old)
    study.set_user_attr("fingerprint", "0123456789abcdef")
    r = CliRunner().invoke(app, args + ["--trials", "2"])
    assert r.exit_code == 0 and "another sweep file" not in r.output, r.output
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("- 16", "- 24"), encoding="utf-8")
    r = CliRunner().invoke(app, args + ["--trials", "3"])
    assert r.exit_code == 0 and "(space.decode.max_tokens differ); trials are mixed" in r.output, r.output


def test_an_old_study_and_sweep_file_with_judge_track_still_work(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    """A study and sweep file from before judge.set/judge.hardware (judge.track named the set):
    the file still runs with a deprecation warning, the study resumes as the same sweep, and the
    board reads its stored judge section."""
    import optuna
    import pytest
    from typer.testing import CliRunner

    from tournament.cli import app

    cfg = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, trials=1, enqueue=[],
                     candidates=[{"id": "tiny", "model_path": str(tiny_model_dir),
                                  "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}}],
                     space={"decode": {"max_tokens": [8, 16]}})
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("set: basic", "track: basic"), encoding="utf-8")
    args = ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--no-track"]
    with pytest.warns(DeprecationWarning, match="judge.track is deprecated"):
        r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    study = optuna.load_study(study_name="t", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    assert study.user_attrs["judge"]["set"] == "basic" and study.user_attrs["judge"]["hardware"] == "metax"
    for attr in ("sweep_config", "judge"):  # as a version before judge.set stored them
        doc = json.loads(json.dumps(study.user_attrs[attr]))
        judge = doc["judge"] if attr == "sweep_config" else doc
        judge["track"] = judge.pop("set")
        judge.pop("hardware")
        study.set_user_attr(attr, doc)
    study.set_user_attr("fingerprint", "0123456789abcdef")
    with pytest.warns(DeprecationWarning):
        r = CliRunner().invoke(app, args + ["--trials", "2"])
    assert r.exit_code == 0 and "another sweep file" not in r.output, r.output
    r = CliRunner().invoke(app, ["board", "--runs-dir", str(runs_dir), "--study", "t", "--no-plots"])
    assert r.exit_code == 0 and "judge basic" in r.output, r.output


def test_timeout_stops_starting_trials_and_the_same_command_resumes(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    """--timeout: past it no new trial starts (the running one finishes and is kept); the same
    command without it finishes the study."""
    from optuna.trial import TrialState
    from typer.testing import CliRunner

    from tournament.cli import app

    cfg = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, trials=3, enqueue=[],
                     space={"decode": {"max_tokens": [4, 6, 8]}, "mode": "batch"},
                     candidates=[{"id": "tiny", "model_path": str(tiny_model_dir),
                                  "engine": {"engine": "transformers", "device": "cpu"}}])
    base = ["sweep", "-c", str(cfg), "--runs-dir", str(runs_dir), "--no-track"]
    r = CliRunner().invoke(app, base + ["--timeout", "1"])
    assert r.exit_code == 0, r.output
    assert "--timeout 1 s reached" in r.output
    done = [t for t in _trials(runs_dir) if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(done) < 3
    assert not [t for t in _trials(runs_dir) if t.state == TrialState.RUNNING]
    assert CliRunner().invoke(app, base + ["--timeout", "0"]).exit_code == 2  # rejected up front
    r = CliRunner().invoke(app, base)
    assert r.exit_code == 0, r.output
    measured = [t for t in _trials(runs_dir) if t.state == TrialState.COMPLETE and "duplicate_of" not in t.user_attrs]
    assert len(measured) == 3  # repeats of a measured configuration are kept but do not count


def test_equal_enqueue_entries_are_each_a_trial_and_a_second_opener_adds_none(tmp_path):
    """`enqueue: [{candidate: a}, {candidate: a}]` asks for two trials of a; Optuna's
    `skip_if_exists` kept one (the GPU proof's hand-written recipes, enqueued twice each, ran once).
    A second worker opening the same new study before the first marked it enqueued queues nothing
    more; an entry added to the file queues only itself."""
    import optuna

    from tournament.study.study_setup import enqueue_each

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    first = optuna.create_study(study_name="s", storage=storage, directions=["maximize", "maximize"])
    queue = [{"candidate": "a"}, {"candidate": "a"}, {"candidate": "b", "decode.max_tokens": 64}]
    assert enqueue_each(first, queue) == 3
    second = optuna.load_study(study_name="s", storage=storage)
    assert enqueue_each(second, queue) == 0
    assert enqueue_each(second, queue + [{"candidate": "a"}]) == 1
    fixed = [t.system_attrs["fixed_params"] for t in second.get_trials(deepcopy=False)]
    assert fixed == [{"candidate": "a"}, {"candidate": "a"}, {"candidate": "b", "decode.max_tokens": 64},
                     {"candidate": "a"}]
