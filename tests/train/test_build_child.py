"""Builds run in a child process (`build_in_subprocess`): the caller never trains (nor imports
torch for it), the child's progress reaches the caller's stderr, and the child builds exactly the
caller's config hash (a dataset override and an in-memory candidate included). `tournament train`
stops before training when MLflow cannot start."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from pathlib import Path

import yaml
from typer.testing import CliRunner

from tests.train.test_train import _cand
from tournament.cli import app

CALLER = textwrap.dedent("""
    import json, os, sys
    from tournament.candidates import load_candidate, with_dataset
    from tournament.train.build import build_in_subprocess

    c = with_dataset(load_candidate(sys.argv[1]), sys.argv[2])
    d = build_in_subprocess(c, sys.argv[3], max_steps=2, device="cpu")
    print(json.dumps({"pid": os.getpid(), "model_dir": str(d), "expected": str(c.build_dir(sys.argv[3], 2)),
                      "hash": c.config_hash(2), "torch": "torch" in sys.modules}))
""")


def test_build_runs_in_a_child_and_streams_its_progress(tiny_model_dir, dataset, tmp_path):
    refit = tmp_path / "refit"
    refit.mkdir()
    rows = dataset.read_text(encoding="utf-8").splitlines()[:10]
    (refit / "train.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    yml = tmp_path / "c.yaml"
    yml.write_text(yaml.safe_dump({"id": "child", "base": {"path": str(tiny_model_dir)},
                                   "recipe": {"method": "full", "dataset": str(dataset), "batch_size": 5,
                                              "max_length": 96}}))
    builds = tmp_path / "builds"
    out = subprocess.run([sys.executable, "-c", CALLER, str(yml), str(refit), str(builds)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["model_dir"] == str(builds / res["expected"].rsplit("/", 1)[-1] / "model")
    manifest = json.loads((builds / res["expected"].rsplit("/", 1)[-1] / "candidate.json").read_text())
    assert manifest["config_hash"] == res["hash"]  # the dataset override reached the child
    assert manifest["dataset"]["rows"] == 10
    assert manifest["candidate_file"] == str(yml.resolve())  # the file that holds the recipe
    assert manifest["pid"] != res["pid"]  # trained by another process
    assert not res["torch"]  # the caller never loaded torch (nor a CUDA context)
    assert "building child in a child process" in out.stderr
    assert "optimizer steps on cpu" in out.stderr and "step 2/2" in out.stderr  # the child's progress


def test_in_memory_candidate_builds_in_a_child_and_is_reused(tiny_model_dir, dataset, tmp_path, monkeypatch):
    import tournament.train.build as build

    cand = _cand(tiny_model_dir, dataset, cid="mem")  # no YAML file: a temporary one is written
    lines: list[str] = []
    model_dir = build.build_in_subprocess(cand, tmp_path / "b", max_steps=1, device="cpu", log=lines.append)
    assert model_dir == cand.build_dir(tmp_path / "b", 1) / "model" and (model_dir / "config.json").exists()
    assert any("step 1/1" in line for line in lines)
    # each line of the child's is led by its seconds since the child started, in order; the last says it ended
    import re

    stamps = [re.match(r"\s*(\d+) s  \S", line) for line in lines[1:]]
    assert lines[0] == "building mem in a child process" and all(stamps), lines
    secs = [int(m.group(1)) for m in stamps]
    assert secs == sorted(secs) and lines[-1].endswith("child process done")

    # builds started side by side: each child's torch takes its share of the cores, not all of them
    import os

    from tournament.train.memory import builds_at_once

    cores = len(os.sched_getaffinity(0))
    alone = json.loads((model_dir.parent / "candidate.json").read_text())["train"]
    with builds_at_once(2):
        shared = build.build_in_subprocess(_cand(tiny_model_dir, dataset, cid="mem2"), tmp_path / "b", max_steps=1,
                                           device="cpu", log=lambda s: None)
    beside = json.loads((shared.parent / "candidate.json").read_text())["train"]
    assert beside["builds_at_once"] == 2 and beside["cpu_threads"] == max(1, cores // 2)
    assert alone["builds_at_once"] == 1 and alone["cpu_threads"] >= beside["cpu_threads"]

    def boom(*a, **k):
        raise AssertionError("started a child for an existing build")

    monkeypatch.setattr(build, "_run_child", boom)
    assert build.build_in_subprocess(cand, tmp_path / "b", max_steps=1, log=lines.append) == model_dir
    untrained = _cand(tiny_model_dir, dataset, "none", cid="base")
    assert build.build_in_subprocess(untrained, tmp_path / "b") == tiny_model_dir


def test_drawn_candidate_goes_to_the_child_as_an_ignored_temp_file_whose_loss_fails_nothing(
        tiny_model_dir, dataset, tmp_path, monkeypatch):
    """A recipe drawn on a template file reaches the child as a temporary YAML beside the template.
    On the GPU machine a tree sync removed such files mid-build (they were not git-ignored) and
    the finished builds were counted as failed: the name is git-ignored now, and a temp file gone
    by the end fails no build that the child finished."""
    import shutil

    import tournament.train.build as build
    from tournament.candidates import load_candidate, parse_candidate

    template = tmp_path / "cands" / "template.yaml"
    template.parent.mkdir()
    doc = {"id": "template", "base": {"path": str(tiny_model_dir)},
           "recipe": {"method": "full", "dataset": str(dataset), "batch_size": 4, "max_length": 96}}
    template.write_text(yaml.safe_dump(doc), encoding="utf-8")
    drawn = parse_candidate({**doc, "id": "template-5e1f"}, load_candidate(template).source)
    seen: list[str] = []
    real = build._run_child

    def child_then_sync(cmd, cid, log, env):
        summary = real(cmd, cid, log, env)
        temp = next(Path(a) for a in cmd if a.endswith(".yaml"))
        seen.append(temp.name)
        assert temp.parent == template.parent  # beside its template: relative paths resolve alike
        if shutil.which("git") and (build.REPO_ROOT / ".git").exists():  # in a checkout (CI's clone)
            got = subprocess.run(["git", "check-ignore", "--no-index", "-q", f"candidates/{temp.name}"],
                                 cwd=build.REPO_ROOT, capture_output=True)
            assert got.returncode == 0, f"{temp.name} is not git-ignored"
        temp.unlink()  # what the sync did while the child trained
        return summary

    monkeypatch.setattr(build, "_run_child", child_then_sync)
    model_dir = build.build_in_subprocess(drawn, tmp_path / "b", max_steps=1, device="cpu", log=lambda s: None)
    assert (model_dir / "config.json").exists() and model_dir == drawn.build_dir(tmp_path / "b", 1) / "model"
    assert seen[0].startswith(".template-5e1f.tmp-") and seen[0].endswith(".yaml")
    assert list(template.parent.iterdir()) == [template]  # nothing left beside the template
    manifest = json.loads((model_dir.parent / "candidate.json").read_text())
    assert manifest["candidate_file"] is None  # no file holds a drawn recipe (`candidate` does), not the gone temp
    assert manifest["candidate"]["id"] == "template-5e1f"


def test_train_stops_before_training_when_mlflow_cannot_start(tiny_model_dir, dataset, tmp_path, monkeypatch):
    import tournament.tracking as tracking
    import tournament.train.sft as sft

    def no_crypto(self, experiment):
        raise ModuleNotFoundError("No module named 'cryptography'", name="cryptography")

    def boom(*a, **k):
        raise AssertionError("trained without MLflow")

    monkeypatch.setattr(tracking.Tracker, "_init", no_crypto)
    monkeypatch.setattr(sft, "train_sft", boom)
    yml = tmp_path / "c.yaml"
    yml.write_text(yaml.safe_dump({"id": "c", "base": {"path": str(tiny_model_dir)},
                                   "recipe": {"method": "full", "dataset": str(dataset)}}))
    builds = tmp_path / "b"
    res = CliRunner().invoke(app, ["train", str(yml), "--builds", str(builds), "--mlflow-uri",
                                   f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"])
    assert res.exit_code == 2
    msg = " ".join(res.output.split())
    assert "MLflow could not open sqlite:///" in msg and "No module named 'cryptography' (pip install cryptography)" in msg
    assert "or pass --no-track" in msg
    assert [p.name for p in builds.glob("*") if p.suffix != ".lock"] == []  # nothing built (a lock file may be)
    # --no-track (and the old --no-mlflow) go on untracked
    monkeypatch.undo()
    for flag in ("--no-track", "--no-mlflow"):
        res = CliRunner().invoke(app, ["train", str(yml), "--builds", str(builds), "--max-steps", "1", flag,
                                       "--device", "cpu", "--json"])
        assert res.exit_code == 0, res.output
        assert json.loads(res.stdout.strip().splitlines()[-1])["mlflow_run_id"] is None



def test_two_callers_of_one_build_train_it_once(tiny_model_dir, dataset, tmp_path):
    """Two sweep workers that want the same build at once: one trains it in its child (which
    builds under its parent's lock, no deadlock), the other waits on the lock and reuses it."""
    import threading

    import tournament.train.build as build

    cand = _cand(tiny_model_dir, dataset, cid="shared")
    logs: list[list[str]] = [[], []]
    got: list = [None, None]

    def worker(i: int) -> None:
        got[i] = build.build_in_subprocess(cand, tmp_path / "b", max_steps=1, device="cpu", log=logs[i].append)

    threads = [threading.Thread(target=worker, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), logs
    assert got[0] == got[1] == cand.build_dir(tmp_path / "b", 1) / "model"
    trained = [i for i in (0, 1) if any("in a child process" in line for line in logs[i])]
    assert len(trained) == 1, logs  # one child trained; the other caller found the build complete
    other = logs[1 - trained[0]]
    assert any(line.startswith("reusing ") for line in other), other
    assert (tmp_path / "b" / f"{cand.build_dir(tmp_path / 'b', 1).name}.lock").exists()


def test_build_lock_waits_for_its_holder_and_frees_on_death(tmp_path):
    """The lock is the kernel's: a second holder waits; a killed holder frees it at once."""
    from tournament.train.build import build_lock

    target = tmp_path / "x-123"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from tournament.train.build import build_lock
        with build_lock(__import__('pathlib').Path({str(target)!r})):
            print('held', flush=True)
            time.sleep(60)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lines: list[str] = []
        import threading

        entered = threading.Event()

        def wait() -> None:
            with build_lock(target, lines.append):
                entered.set()

        t = threading.Thread(target=wait, daemon=True)
        t.start()
        assert not entered.wait(1.0)  # blocked behind the holder
        assert lines == ["waiting: another process is building x-123"]
        holder.kill()  # a killed build leaves no lock behind
        assert entered.wait(30)
    finally:
        holder.kill()
        holder.wait()
