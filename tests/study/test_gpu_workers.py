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
from tournament.study.workers import parse_gpus, summarize, WorkerRun

pytestmark = pytest.mark.slow


def test_two_workers_one_per_gpu_share_a_journal_study(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    import optuna
    from optuna.trial import TrialState

    from tournament.study.storage import make_storage

    cfg = _files(tmp_path, tiny_model_dir, tiny_qa_file, study="gpus", build_workers=1, trials=5,
                 decode_trials_per_engine=3, speed_repeats=1)
    cfg.write_text(cfg.read_text(encoding="utf-8").replace("max_tokens:\n    - 6\n    - 10",
                                                           "max_tokens:\n    - 4\n    - 6\n    - 8\n    - 10"),
                   encoding="utf-8")
    journal = tmp_path / "optuna.journal"
    out = subprocess.run([sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--gpus", "0,1",
                          "--storage", f"journal:{journal}", "--runs-dir", str(runs_dir), "--no-track", "--json"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
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

    # board and pick read the journal like any storage
    r = subprocess.run([sys.executable, "-m", "tournament.cli", "board", "--storage", f"journal:{journal}",
                        "--study", "gpus", "--json", "--no-plots", "--ledger", str(tmp_path / "ledger.json")],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert {row["trial"] for row in json.loads(r.stdout)["trials"]} == {t.number for t in trials}


def test_a_first_worker_that_fails_stops_the_rest(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    """A worker that cannot run (here: an unreachable MLflow store) is reported with its own error,
    and the second worker is never started."""
    cfg = _files(tmp_path, tiny_model_dir, tiny_qa_file, study="bad", build_workers=1)
    bad_runs = tmp_path / "runs-file"
    bad_runs.write_text("not a folder")
    out = subprocess.run([sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--gpus", "0,1",
                          "--storage", f"journal:{tmp_path / 'j.journal'}", "--runs-dir", str(bad_runs), "--json"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path,
                         env={**os.environ, "TOURNAMENT_RUNS_DIR": ""})
    assert out.returncode != 0
    assert "worker on GPU 0 exited with code" in out.stderr
    assert "worker on GPU 1 started" not in out.stderr


def test_gpu_lists_and_the_summary():
    assert parse_gpus("0, 1,3") == ["0", "1", "3"]
    with pytest.raises(ValueError, match="twice"):
        parse_gpus("0,0")
    with pytest.raises(ValueError, match="at least one"):
        parse_gpus(" , ")
    runs = [WorkerRun("0", 0, {"study": "s", "ran": [0, 2, 3], "repeats": [3], "complete": 5, "failed": 0,
                               "distinct": 4, "seconds": 60.0}),
            WorkerRun("1", 0, {"study": "s", "ran": [1, 4], "repeats": [], "complete": 5, "failed": 0,
                               "distinct": 4, "seconds": 58.0})]
    s = summarize(runs, build_seconds=30.0, sweep_seconds=60.0)
    assert s["ran"] == [0, 1, 2, 3, 4] and s["gpus"] == ["0", "1"]
    assert s["trials_per_minute"] == pytest.approx(4.0)  # 5 ran, 1 repeat (not measured), in one minute
