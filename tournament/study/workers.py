"""One sweep worker per GPU, on one shared study (``tournament sweep --gpus 0,1``).

vLLM serves one engine per process and the sweep starts a server pair per engine group, so N GPUs
are used by N independent workers (`tournament sweep` processes, each with CUDA_VISIBLE_DEVICES set
to its GPU) that ask one Optuna study for trials. What this adds over starting them by hand:

1. the builds first, here, spread over the GPUs (each training child sees one), so no worker
   waits for another's training and none trains while another measures speed;
2. the first worker alone until the study exists with its enqueued trials (two workers creating
   it at once would enqueue the baseline twice), then the others;
3. their output, each line prefixed ``[gpu N]``, and one summary: trials per worker, wall time,
   trials per minute.

Workers share the storage (the default sqlite file, ``journal:PATH``, or PostgreSQL): a trial is
asked by exactly one worker; the target (``--trials``) may be overshot by at most N-1 trials.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tournament.machine import die_with_parent
from tournament.paths import REPO_ROOT

STUDY_READY_TIMEOUT_S = 600  # the first worker builds the eval split, loads candidates, creates the study


@dataclass
class WorkerRun:
    gpu: str
    returncode: int | None = None
    summary: dict = field(default_factory=dict)  # the worker's --json summary
    tail: list[str] = field(default_factory=list)  # its last lines, for an error
    stdout: list[str] = field(default_factory=list)


def parse_gpus(text: str) -> list[str]:
    """``"0,1"`` -> ["0", "1"]; each a CUDA device index or UUID, no repeats."""
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus:
        raise ValueError("--gpus needs at least one GPU, e.g. --gpus 0,1")
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus names a GPU twice: {text}")
    return gpus


def _study_ready(storage_url: str, study: str) -> bool:
    import optuna

    from tournament.study.storage import make_storage, quiet_optuna

    quiet_optuna()
    try:
        s = optuna.load_study(study_name=study, storage=make_storage(storage_url))
    except Exception:  # not created yet (or the store is busy): ask again
        return False
    return bool(s.user_attrs.get("enqueued"))


def _pump_stderr(proc: subprocess.Popen, run: WorkerRun, echo: Callable[[str], None]) -> None:
    assert proc.stderr is not None
    for line in proc.stderr:
        line = line.rstrip("\n")
        if line.strip():
            run.tail = (run.tail + [line])[-30:]
            echo(f"[gpu {run.gpu}] {line}")


def _pump_stdout(proc: subprocess.Popen, run: WorkerRun) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:  # the --json summary (and anything a library prints)
        run.stdout.append(line.rstrip("\n"))


def run_workers(gpus: list[str], worker_args: list[str], storage_url: str, study: str,
                echo: Callable[[str], None] = print) -> tuple[list[WorkerRun], float]:
    """Start `tournament sweep WORKER_ARGS --json` once per GPU; return the runs and the wall time.
    `worker_args` must name the shared storage and the study (the caller builds them)."""
    runs = [WorkerRun(g) for g in gpus]
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    env_base = dict(os.environ, PYTHONUNBUFFERED="1")
    env_base["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env_base.get("PYTHONPATH", "")) if p)
    t0 = time.monotonic()

    def start(run: WorkerRun) -> None:
        env = dict(env_base, CUDA_VISIBLE_DEVICES=run.gpu)
        proc = subprocess.Popen([sys.executable, "-m", "tournament.cli", "sweep", *worker_args, "--json"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                                bufsize=1, env=env,
                                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        procs.append(proc)
        for target, args in ((_pump_stderr, (proc, run, echo)), (_pump_stdout, (proc, run))):
            t = threading.Thread(target=target, args=args, daemon=True, name=f"worker-gpu{run.gpu}")
            t.start()
            pumps.append(t)
        echo(f"worker on GPU {run.gpu} started (pid {proc.pid})")

    try:
        start(runs[0])
        deadline = time.monotonic() + STUDY_READY_TIMEOUT_S
        while len(runs) > 1 and not _study_ready(storage_url, study):
            if procs[0].poll() is not None or time.monotonic() > deadline:
                break  # the first worker ended early, or is very slow to create the study
            time.sleep(1.0)
        if procs[0].poll() in (None, 0):  # a first worker that failed would fail the others alike
            for run in runs[1:]:
                start(run)
        for run, proc in zip(runs, procs):  # a worker never started keeps returncode None
            run.returncode = proc.wait()
        for t in pumps:
            t.join(timeout=10)
        for run in runs:
            last = [line for line in run.stdout if line.startswith("{")]
            if last:
                try:
                    run.summary = json.loads(last[-1])
                except ValueError:
                    pass
    finally:  # interrupted: the workers stop with us (their trials are recovered on resume)
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
    return runs, time.monotonic() - t0


def summarize(runs: list[WorkerRun], build_seconds: float, sweep_seconds: float) -> dict:
    """One summary of N workers: what each ran, and the trials measured per minute of sweeping."""
    ran = sorted(n for r in runs for n in r.summary.get("ran", []))
    repeats = sum(len(r.summary.get("repeats", [])) for r in runs)
    measured = len(ran) - repeats
    last = next((r.summary for r in reversed(runs) if r.summary), {})
    return {
        "study": last.get("study"), "gpus": [r.gpu for r in runs],
        "workers": [{"gpu": r.gpu, "returncode": r.returncode, "ran": r.summary.get("ran", []),
                     "repeats": r.summary.get("repeats", []), "seconds": r.summary.get("seconds"),
                     "trials_per_minute": r.summary.get("trials_per_minute")} for r in runs],
        "ran": ran, "complete": last.get("complete"), "failed": last.get("failed"),
        "distinct": last.get("distinct"), "build_seconds": round(build_seconds, 1),
        "sweep_seconds": round(sweep_seconds, 1),
        "trials_per_minute": measured / (sweep_seconds / 60) if sweep_seconds > 0 and measured else None,
        "plots": last.get("plots", []),
    }


def prebuild_on_gpus(config: Path, gpus: list[str], echo: Callable[[str], None]) -> tuple[dict[str, str], float]:
    """Every trained build of the sweep file, `build_workers` at a time on each GPU. Returns the
    failed builds ({build: error}) and the seconds it took."""
    from tournament.study.config import load_sweep_config
    from tournament.study.inputs import load_eval, prebuild, resolve_candidates

    cfg = load_sweep_config(config)
    t0 = time.monotonic()
    load_eval(cfg)  # first: it may build the split that trained candidates hash
    failed = prebuild(resolve_candidates(cfg), max(1, cfg.build_workers) * len(gpus), echo, gpus=gpus)
    return failed, time.monotonic() - t0


def worker_failures(runs: list[WorkerRun]) -> list[str]:
    return [f"worker on GPU {r.gpu} exited with code {r.returncode}:\n" + "\n".join(r.tail[-15:])
            for r in runs if r.returncode not in (0, None)]


def gpus_from_env() -> list[str] | None:
    """The GPUs CUDA_VISIBLE_DEVICES names, if any (for `--gpus all`)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES", "").strip()
    return parse_gpus(env) if env else None


def all_gpus() -> list[str]:
    """`--gpus all`: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    found = gpus_from_env()
    if found:
        return found
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        raise ValueError("--gpus all: no CUDA_VISIBLE_DEVICES and nvidia-smi did not list GPUs; "
                         "name them, e.g. --gpus 0,1") from None
    gpus = [line.strip() for line in out.splitlines() if line.strip()]
    if not gpus:
        raise ValueError("--gpus all: nvidia-smi lists no GPU")
    return gpus

