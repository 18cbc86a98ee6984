"""One sweep worker per GPU, on one shared study (``tournament sweep --gpus 0,1``).

vLLM serves one engine per process and the sweep starts a server pair per engine group, so N GPUs
are used by N independent workers (`tournament sweep` processes, each with CUDA_VISIBLE_DEVICES set
to its GPU) that ask one Optuna study for trials. What this adds over starting them by hand:

1. the builds first, here, spread over the GPUs (each training child sees one), so no worker
   waits for another's training and none trains while another measures speed;
2. the first worker alone until the study exists with its enqueued trials (two workers creating
   it at once would enqueue the baseline twice), then the others; the storage and MLflow are
   checked before any build, so a bad URL stops the run at once;
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

STOP_GRACE_S = 60  # Ctrl-C: a worker ends its trial (FAIL, queued again) and stops its servers first


@dataclass
class WorkerRun:
    gpu: str
    returncode: int | None = None
    summary: dict = field(default_factory=dict)  # the worker's --json summary
    tail: list[str] = field(default_factory=list)  # its last lines, for an error
    stdout: list[str] = field(default_factory=list)


def parse_gpus(text: str) -> list[str]:
    """``"0,1"`` -> ["0", "1"]; each a CUDA device index or UUID, no repeats. Indices count within
    an inherited CUDA_VISIBLE_DEVICES (as CUDA does): with ``CUDA_VISIBLE_DEVICES=2,3``, ``0,1``
    means devices 2 and 3."""
    gpus = [g.strip() for g in text.split(",") if g.strip()]
    if not gpus:
        raise ValueError("--gpus needs at least one GPU, e.g. --gpus 0,1")
    if len(set(gpus)) != len(gpus):
        raise ValueError(f"--gpus names a GPU twice: {text}")
    visible = gpus_from_env()
    if visible is None:
        return gpus
    out = []
    for g in gpus:
        if not g.isdigit():
            out.append(g)  # a UUID names one device wherever it is
        elif int(g) < len(visible):
            out.append(visible[int(g)])
        else:
            raise ValueError(f"--gpus {g}: CUDA_VISIBLE_DEVICES={','.join(visible)} shows {len(visible)} GPU(s)")
    return out


def open_storage(storage_url: str):
    """The shared storage, opened (and its tables created) before any build or worker, so a bad URL
    or an unreachable database stops the run with its reason at once."""
    from tournament.study.optuna_storage import make_storage, quiet_optuna

    quiet_optuna()
    try:
        return make_storage(storage_url)
    except Exception as e:
        from tournament.tracking import scrub_text

        raise ValueError(scrub_text(f"cannot open the storage {storage_url}: {type(e).__name__}: {e}")) from None


def _study_ready(storage, study: str) -> bool:
    import optuna

    try:
        s = optuna.load_study(study_name=study, storage=storage)
    except Exception:  # not created yet (or the store is busy): ask again
        return False
    return bool(s.user_attrs.get("enqueued"))


def study_counts(storage, study: str) -> dict:
    """complete / failed / distinct of the study once every worker has ended."""
    import optuna

    from tournament.study.recovery import finished_counts

    try:
        trials = optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except Exception:
        return {}
    return finished_counts(trials)


def _pump_stderr(proc: subprocess.Popen, run: WorkerRun, echo: Callable[[str], None]) -> None:
    from tournament.tracking import scrub_text

    assert proc.stderr is not None
    for line in proc.stderr:
        line = scrub_text(line.rstrip("\n"))  # a traceback may quote a storage URL's password
        if line.strip():
            run.tail = (run.tail + [line])[-30:]
            echo(f"[gpu {run.gpu}] {line}")


def _pump_stdout(proc: subprocess.Popen, run: WorkerRun) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:  # the --json summary (and anything a library prints)
        run.stdout.append(line.rstrip("\n"))


def run_workers(gpus: list[str], worker_args: list[str], storage, study: str,
                echo: Callable[[str], None] = print) -> tuple[list[WorkerRun], float]:
    """Start `tournament sweep WORKER_ARGS --json` once per GPU; return the runs and the wall time.
    `worker_args` must name the shared storage (`storage`, opened) and the study."""
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
                                # a session of its own: Ctrl-C reaches the launcher alone, which passes
                                # exactly one SIGINT on (a second would cut the worker's clean-up short)
                                start_new_session=True,
                                preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        procs.append(proc)
        for target, args in ((_pump_stderr, (proc, run, echo)), (_pump_stdout, (proc, run))):
            t = threading.Thread(target=target, args=args, daemon=True, name=f"worker-gpu{run.gpu}")
            t.start()
            pumps.append(t)
        echo(f"worker on GPU {run.gpu} started (pid {proc.pid})")

    try:
        start(runs[0])
        while len(runs) > 1 and not _study_ready(storage, study):
            if procs[0].poll() is not None:
                break  # the first worker ended before the study was ready
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
    finally:  # interrupted: each worker ends its trial and stops its servers, then we make sure
        _stop(procs)
    return runs, time.monotonic() - t0


def _stop(procs: list[subprocess.Popen]) -> None:
    """SIGINT (what Ctrl-C sends a sweep: it marks its trial FAIL, queues it again, stops its
    servers), a grace period, then SIGTERM, then SIGKILL."""
    import signal

    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        try:
            p.send_signal(signal.SIGINT)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_S
    for p in alive:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.terminate()
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def summarize(runs: list[WorkerRun], build_seconds: float, sweep_seconds: float, counts: dict) -> dict:
    """One summary of N workers: what each ran, the study's counts (`study_counts`, read after the
    last worker ended), and the trials measured per minute of sweeping: the workers' wall time less
    the longest build phase of a worker (a build the launcher could not make is retried there)."""
    ran = sorted(n for r in runs for n in r.summary.get("ran", []))
    repeats = sum(len(r.summary.get("repeats", [])) for r in runs)
    measured = len(ran) - repeats
    worker_builds = max((r.summary.get("build_seconds") or 0.0 for r in runs), default=0.0)
    sweeping = sweep_seconds - worker_builds
    last = next((r.summary for r in reversed(runs) if r.summary), {})
    return {
        "study": last.get("study"), "gpus": [r.gpu for r in runs],
        "workers": [{"gpu": r.gpu, "returncode": r.returncode, "ran": r.summary.get("ran", []),
                     "repeats": r.summary.get("repeats", []), "seconds": r.summary.get("seconds"),
                     "build_seconds": r.summary.get("build_seconds"),
                     "trials_per_minute": r.summary.get("trials_per_minute")} for r in runs],
        "ran": ran, **counts, "build_seconds": round(build_seconds, 1),
        "sweep_seconds": round(sweep_seconds, 1), "worker_build_seconds": round(worker_builds, 1),
        "trials_per_minute": measured / (sweeping / 60) if sweeping > 0 and measured else None,
        "plots": last.get("plots", []),
    }


def prebuild_on_gpus(config: Path, gpus: list[str], echo: Callable[[str], None]) -> tuple[dict[str, str], float]:
    """Every trained build of the sweep file, `build_workers` (at least 1) at a time on each GPU
    (none for a recipe space: its recipes are drawn, then built by the worker that needs one). Returns the failed builds ({build: error}) and the seconds it took."""
    from tournament.study.config import load_sweep_config
    from tournament.study.inputs import load_eval, prebuild, resolve_candidates

    cfg = load_sweep_config(config)
    t0 = time.monotonic()
    load_eval(cfg)  # first: it may build the split that trained candidates hash
    candidates = resolve_candidates(cfg)  # builds the refit dataset when missing
    # a recipe space's candidates are templates: each worker builds its drawn recipes on first use
    failed = {} if cfg.space.draws_recipes else prebuild(candidates, cfg.build_workers or 1, echo, gpus=gpus)
    return failed, time.monotonic() - t0


def worker_failures(runs: list[WorkerRun]) -> list[str]:
    return [f"worker on GPU {r.gpu} exited with code {r.returncode}:\n" + "\n".join(r.tail[-15:])
            for r in runs if r.returncode not in (0, None)]


def gpus_from_env() -> list[str] | None:
    """The GPUs an inherited CUDA_VISIBLE_DEVICES names; None when it is unset."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is None:
        return None
    return [g.strip() for g in env.split(",") if g.strip()]


def all_gpus() -> list[str]:
    """`--gpus all`: CUDA_VISIBLE_DEVICES when set, else every GPU nvidia-smi lists."""
    found = gpus_from_env()
    if found is not None:
        if not found:
            raise ValueError("--gpus all: CUDA_VISIBLE_DEVICES is empty (no GPU visible)")
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

