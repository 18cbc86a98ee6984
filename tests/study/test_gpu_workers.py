"""`tournament sweep --gpus 0,1`: the builds first (spread over the GPUs, each training child sees
one), then one worker per GPU on one shared study (Optuna's journal file here): no trial lost or
run twice, each trial names the GPU that measured it, and the summary gives trials per minute.
On a CPU-only machine CUDA_VISIBLE_DEVICES changes nothing but is passed on exactly the same way."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.study.test_two_builds import _files
from tournament.study.workers import WorkerRun, all_gpus, parse_gpus, summarize

pytestmark = pytest.mark.slow


def _env() -> dict:
    """The workers' GPUs are named by --gpus alone (an inherited CUDA_VISIBLE_DEVICES would remap them)."""
    return {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}


def test_two_workers_one_per_gpu_share_a_journal_study(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    import optuna
    from optuna.trial import TrialState

    from tournament.study.optuna_storage import make_storage

    cfg = _files(tmp_path, tiny_model_dir, tiny_qa_file, study="gpus", build_workers=1, trials=5,
                 decode_trials_per_engine=3, speed_repeats=1)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("max_tokens:\n    - 6\n    - 10",
                                                           "max_tokens:\n    - 4\n    - 6\n    - 8\n    - 10"),
                   encoding="utf-8")
    journal = tmp_path / "optuna.journal"
    out = subprocess.run([sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--gpus", "0,1",
                          "--storage", f"journal:{journal}", "--runs-dir", str(runs_dir), "--no-track", "--json"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=_env())
    assert out.returncode == 0, out.stdout + out.stderr
    summary = json.loads(out.stdout.strip().splitlines()[-1])

    # the builds came first, one on each GPU, trained by children that saw only that GPU
    err = out.stderr
    assert err.index("builds ready in") < err.index("worker on GPU 0 started") < err.index("worker on GPU 1 started")
    manifests = [json.loads(p.read_text()) for p in (tmp_path / "builds").glob("tiny-sft-*/candidate.json")]
    assert sorted(m["hardware"]["cuda_visible_devices"] for m in manifests) == ["0", "1"]
    assert "[gpu 0]" in err and "[gpu 1]" in err  # each worker's lines, named

    study = optuna.load_study(study_name="gpus", storage=make_storage(f"journal:{journal}"))
    trials = study.get_trials()
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.state, t.user_attrs.get("fail_reason"))
                                                                 for t in trials]
    by_gpu = {w["gpu"]: w["ran"] for w in summary["workers"]}
    assert by_gpu["0"] and by_gpu["1"], summary  # both workers measured
    assert not set(by_gpu["0"]) & set(by_gpu["1"])  # none run twice
    assert sorted(summary["ran"]) == sorted(t.number for t in trials)  # none lost
    for t in trials:  # the trial names the GPU its worker had
        assert t.number in by_gpu[t.user_attrs["gpu"]]
    assert len({t.user_attrs["worker"] for t in trials}) == 2
    measured = [t for t in trials if "duplicate_of" not in t.user_attrs]
    assert 5 <= len(measured) <= 6  # the target; at most one more from the race between two workers
    assert summary["trials_per_minute"] > 0 and summary["sweep_seconds"] > 0 and summary["build_seconds"] > 0
    assert summary["complete"] == len(trials) and summary["failed"] == 0  # read after both workers ended

    # board and pick read the journal like any storage
    r = subprocess.run([sys.executable, "-m", "tournament.cli", "board", "--storage", f"journal:{journal}",
                        "--study", "gpus", "--json", "--no-plots", "--ledger", str(tmp_path / "ledger.json")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert {row["trial"] for row in json.loads(r.stdout)["trials"]} == {t.number for t in trials}


def test_bad_storage_or_mlflow_stops_before_any_build(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    """A journal URL without its file, or an MLflow store that cannot open, stops `--gpus` with its
    reason before the builds (minutes on a GPU) and before any worker."""
    cfg = _files(tmp_path, tiny_model_dir, tiny_qa_file, study="bad", build_workers=1)
    base = [sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--gpus", "0,1"]
    out = subprocess.run(base + ["--storage", "journal:", "--runs-dir", str(runs_dir)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_env())
    assert out.returncode == 2 and "journal storage needs a file" in out.stderr
    bad_runs = tmp_path / "runs-file"
    bad_runs.write_text("not a folder")
    out = subprocess.run(base + ["--storage", f"journal:{tmp_path / 'j.journal'}", "--runs-dir", str(bad_runs)],
                         capture_output=True, text=True, timeout=120, cwd=tmp_path, env=_env())
    assert out.returncode == 2 and "MLflow could not open" in out.stderr and "--no-track" in out.stderr
    assert "building first" not in out.stdout + out.stderr and not (tmp_path / "builds").exists()


def test_a_first_worker_that_fails_stops_the_rest(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    """A worker that cannot run (here: a corrupt ledger, read by each worker) is reported with its
    own error, and the second worker is never started."""
    cfg = _files(tmp_path, tiny_model_dir, tiny_qa_file, study="bad", build_workers=1)
    ledger = tmp_path / "ledger.json"
    ledger.write_text("{ not json")
    out = subprocess.run([sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--gpus", "0,1",
                          "--storage", f"journal:{tmp_path / 'j.journal'}", "--runs-dir", str(runs_dir),
                          "--ledger", str(ledger), "--no-track", "--json"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path, env=_env())
    assert out.returncode != 0
    assert "worker on GPU 0 exited with code" in out.stderr and "ledger" in out.stderr.lower()
    assert "worker on GPU 1 started" not in out.stderr


def test_gpu_lists_and_the_summary(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    assert parse_gpus("0, 1,3") == ["0", "1", "3"]
    with pytest.raises(ValueError, match="twice"):
        parse_gpus("0,0")
    with pytest.raises(ValueError, match="at least one"):
        parse_gpus(" , ")
    runs = [WorkerRun("0", 0, {"study": "s", "ran": [0, 2, 3], "repeats": [3], "complete": 5, "failed": 0,
                               "distinct": 4, "seconds": 60.0}),
            WorkerRun("1", 0, {"study": "s", "ran": [1, 4], "repeats": [], "complete": 5, "failed": 0,
                               "distinct": 4, "seconds": 58.0})]
    s = summarize(runs, build_seconds=30.0, sweep_seconds=60.0, counts={"complete": 5, "failed": 0, "distinct": 4})
    assert s["ran"] == [0, 1, 2, 3, 4] and s["gpus"] == ["0", "1"] and s["complete"] == 5
    assert s["trials_per_minute"] == pytest.approx(4.0)  # 5 ran, 1 repeat (not measured), in one minute
    runs[1].summary["build_seconds"] = 15.0  # a build the launcher could not make, retried by a worker
    assert summarize(runs, 30.0, 60.0, {})["trials_per_minute"] == pytest.approx(4 / 0.75)

    # indices count within an inherited CUDA_VISIBLE_DEVICES, as CUDA's own do
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    assert parse_gpus("0,1") == ["2", "3"] and all_gpus() == ["2", "3"]
    with pytest.raises(ValueError, match="shows 2 GPU"):
        parse_gpus("2")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with pytest.raises(ValueError, match="empty"):
        all_gpus()


def test_builds_take_one_slot_per_gpu_whichever_finishes_first():
    """`build_workers` per GPU is a limit on each GPU: a build waits for a free slot of some GPU,
    so a fast build on GPU 0 never sends the next one to a busy GPU 1."""
    import threading
    import time

    from tournament.study.inputs import Build, ResolvedCandidate, prebuild

    lock = threading.Lock()
    busy: dict[str, int] = {}
    peak: dict[str, int] = {}
    seen: list[str] = []

    class TimedBuild(Build):  # the scheduler is what is under test: each "build" only takes time
        def model_dir(self, log=print, gpu=None):
            with lock:
                busy[gpu] = busy.get(gpu, 0) + 1
                peak[gpu] = max(peak.get(gpu, 0), busy[gpu])
                seen.append(gpu)
            time.sleep(0.3 if self.role == "slow" else 0.05)
            with lock:
                busy[gpu] -= 1
            return None

    builds = {f"b{i}": TimedBuild(role="slow" if i in (1, 3) else "fast", config_hash=str(i), candidate_obj=object())
              for i in range(6)}
    cand = ResolvedCandidate(id="c", prompt={}, engine={}, info={}, builds=builds)
    assert prebuild({"c": cand}, workers=1, echo=lambda s: None, gpus=["0", "1"]) == {}
    assert set(seen) == {"0", "1"}
    assert len(seen) == 6 and peak == {"0": 1, "1": 1}, (seen, peak)


def test_a_build_out_of_gpu_memory_beside_others_trains_again_alone():
    """A build that ran out of GPU memory beside others failed for the plan's sake (peaks measured
    on shorter rows, say): it trains once more, alone; a build that failed otherwise is not
    trained again, and the others' results stand."""
    import threading
    import time

    from tournament.study.inputs import Build, ResolvedCandidate, prebuild

    lock = threading.Lock()
    busy = {"n": 0}
    calls: dict[str, list[int]] = {}

    class FlakyBuild(Build):  # the scheduler is under test: a "build" takes time, some fail
        def model_dir(self, log=print, gpu=None):
            with lock:
                busy["n"] += 1
                calls.setdefault(self.role, []).append(busy["n"])  # how many ran with it, itself included
            try:
                time.sleep(0.2)
                if self.role == "oom" and len(calls["oom"]) == 1:
                    raise RuntimeError("building c failed in its child process (exit 1):\ntorch.OutOfMemoryError: "
                                       "CUDA out of memory. Tried to allocate 2.00 GiB")
                if self.role == "bad":
                    raise ValueError("recipe.rank must be positive")
            finally:
                with lock:
                    busy["n"] -= 1

    builds = {r: FlakyBuild(role=r, config_hash=r, candidate_obj=object()) for r in ("first", "oom", "bad", "ok")}
    lines: list[str] = []
    failed = prebuild({"c": ResolvedCandidate(id="c", prompt={}, engine={}, info={}, builds=builds)},
                      workers=3, echo=lines.append)
    assert list(failed) == ["c/bad"] and "rank must be positive" in failed["c/bad"], failed
    assert len(calls["oom"]) == 2 and calls["oom"][1] == 1, calls  # again, and alone
    assert len(calls["bad"]) == 1 and len(calls["ok"]) == 1
    assert any("[c/oom] ran out of GPU memory beside other builds: trains again alone" in s for s in lines), lines


def test_ctrl_c_lets_each_worker_end_its_trial(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    """Ctrl-C (SIGINT to the terminal's process group) mid-study: each worker marks its running
    trial FAIL and queues it again, stops its servers and exits; the launcher exits 130; no trial
    is left RUNNING and no worker is left alive."""
    import signal
    import time

    import optuna
    from optuna.trial import TrialState

    from tournament.study.optuna_storage import make_storage

    cfg = _files(tmp_path, tiny_model_dir, tiny_qa_file, study="stop", build_workers=1, trials=60,
                 decode_trials_per_engine=3, speed_repeats=3)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("max_tokens:\n    - 6\n    - 10",
                                                           "max_tokens: {low: 4, high: 40}"), encoding="utf-8")
    journal = tmp_path / "optuna.journal"
    proc = subprocess.Popen([sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--gpus", "0,1",
                             "--storage", f"journal:{journal}", "--runs-dir", str(runs_dir), "--no-track"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path, env=_env(),
                            start_new_session=True)  # its own process group, as a terminal's foreground job
    try:
        deadline = time.monotonic() + 300
        trials = []
        while time.monotonic() < deadline and proc.poll() is None:
            if journal.exists():
                try:
                    trials = optuna.load_study(study_name="stop", storage=make_storage(f"journal:{journal}")).get_trials()
                except KeyError:
                    trials = []
                workers = {t.user_attrs.get("worker") for t in trials if t.state == TrialState.RUNNING}
                if sum(t.state == TrialState.COMPLETE for t in trials) >= 2 and len(workers) == 2:
                    break
            time.sleep(0.5)
        assert proc.poll() is None, proc.stdout.read()
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: the launcher and both workers
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 130, out
    assert "run the same command again to resume" in out
    trials = optuna.load_study(study_name="stop", storage=make_storage(f"journal:{journal}")).get_trials()
    assert not [t.number for t in trials if t.state == TrialState.RUNNING], out
    stopped = [t for t in trials if t.state == TrialState.FAIL]
    assert stopped and all("interrupted" in str(t.user_attrs.get("fail_reason", "")) for t in stopped), \
        [(t.number, t.user_attrs.get("fail_reason")) for t in stopped]
    queued = [t for t in trials if t.state == TrialState.WAITING]
    assert len(queued) >= len(stopped)  # each interrupted trial waits to run again on resume
    for w in {t.user_attrs["worker"] for t in trials if "worker" in t.user_attrs}:
        pid = int(w.rsplit(":", 1)[1])
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_build_workers_auto_runs_the_first_build_alone_and_plans_from_measured_memory(tmp_path, monkeypatch):
    """`build_workers: auto`: the first build alone (it records the peak the plan reads), then as
    many per GPU as train/memory.py plans; with no GPU memory to read (no nvidia-smi here), one."""
    import shutil
    import threading
    import time

    from tournament.study.inputs import Build, ResolvedCandidate, build_slots, prebuild

    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU machine: the plan depends on its free memory")
    monkeypatch.chdir(tmp_path)
    lock = threading.Lock()
    busy = {"n": 0, "peak": 0}

    class TimedBuild(Build):
        def model_dir(self, log=print, gpu=None):
            with lock:
                busy["n"] += 1
                busy["peak"] = max(busy["peak"], busy["n"])
            time.sleep(0.05)
            with lock:
                busy["n"] -= 1
            return None

    builds = {f"b{i}": TimedBuild(role=f"r{i}", config_hash=str(i), candidate_obj=object()) for i in range(4)}
    lines: list[str] = []
    assert prebuild({"c": ResolvedCandidate(id="c", prompt={}, engine={}, info={}, builds=builds)},
                    workers="auto", echo=lines.append) == {}
    assert busy["peak"] == 1 and any("build_workers auto: 1 at a time" in s for s in lines), lines
    assert build_slots(3, None, None) == 3 and build_slots(0, None, None) == 1


def test_build_workers_accepts_a_count_or_auto():
    from tournament.study.config import SweepConfigError, parse_sweep_config

    base = {"candidates": ["candidates/x.yaml"], "eval": {"path": "eval.jsonl"}}
    assert parse_sweep_config({**base, "build_workers": "auto"}).build_workers == "auto"
    assert parse_sweep_config({**base, "build_workers": 2}).build_workers == 2
    for bad in (-1, "many"):
        with pytest.raises(SweepConfigError, match="build_workers"):
            parse_sweep_config({**base, "build_workers": bad})


def test_a_ctrl_c_that_a_library_turns_into_another_error_is_still_a_ctrl_c():
    """Optuna's journal lock, hit by SIGINT while it waited, raised FileNotFoundError instead of
    KeyboardInterrupt (a CI run of the test above, 2026-12-07): the sweep notes the signal itself,
    so such a trial is still "interrupted" and queued again for the resume."""
    import os
    import signal

    from tournament.study.sigint import noting_sigint

    before = signal.getsignal(signal.SIGINT)
    with noting_sigint() as seen:
        with pytest.raises(FileNotFoundError):
            try:
                os.kill(os.getpid(), signal.SIGINT)
                for _ in range(1000):  # the handler runs between bytecodes of the main thread
                    pass
                raise AssertionError("SIGINT did not raise KeyboardInterrupt")
            except KeyboardInterrupt:
                raise FileNotFoundError("optuna.journal.lock…rename")  # what the library raised instead
        assert seen.is_set()
        os.kill(os.getpid(), signal.SIGINT)  # a second one (the launcher's) must not cut the cleanup short
        for _ in range(1000):
            pass
    assert signal.getsignal(signal.SIGINT) is before


def test_a_ctrl_c_inside_the_journal_lock_waits_until_the_lock_is_let_go(tmp_path):
    """Optuna's journal lock, interrupted while it waits, removes the lock another worker holds:
    the sweep's lock holds a Ctrl-C back from asking for the lock until letting it go, then raises
    it, so the lock file is never left behind nor taken from another worker."""
    import os
    import signal

    from tournament.study.optuna_storage import sigint_safe_lock
    from tournament.study.sigint import noting_sigint

    lock = sigint_safe_lock(tmp_path / "optuna.journal")
    with noting_sigint() as seen:
        lock.acquire()
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler runs here, between bytecodes: held back, not raised
            pass
        assert seen.is_set() and list(tmp_path.glob("*.lock"))
        with pytest.raises(KeyboardInterrupt):
            lock.release()
        assert not list(tmp_path.glob("*.lock*"))  # released before the Ctrl-C was raised
        lock.acquire()  # and nothing stays held back
        lock.release()
