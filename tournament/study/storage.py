"""Where trials live and how a dead worker's trials come back.

Optuna gives the storage (`RDBStorage`, sqlite or PostgreSQL; or `JournalStorage` over one file,
for workers on one host: ``journal:PATH``), the heartbeat columns, and `fail_stale_trials` +
`RetryHeartbeatStaleTrialCallback`, which fail and re-queue a trial whose heartbeat went stale (a
worker on another host died; RDB storages only). What Optuna lacks, and this module adds:

- a heartbeat for ask-and-tell: Optuna beats only inside `study.optimize`; the sweep asks and
  tells itself (engine grouping), so `TrialHeartbeat` beats while a trial runs;
- instant recovery on the same host: a worker whose pid is gone is dead now, without waiting for
  the 60 s grace period (`recover_local_stale`), including the trial it asked for but had not
  yet named when it died (`_unnamed_orphans`);
- the servers a dead worker left running (`PidFile.kill_stale`);
- the MLflow runs a dead worker left RUNNING: ended as KILLED with a `fail_reason` tag, for the
  trials recovered here and those failed for a stale heartbeat (`note_tracking`).
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import signal
import socket
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tournament.files import write_json_atomic
from tournament.study.space import CONSTRAINTS

if TYPE_CHECKING:
    from tournament.tracking import Tracker

log = logging.getLogger(__name__)

HEARTBEAT_S = 10
GRACE_S = 60


def default_storage(runs_dir: Path) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'optuna.db'}"


def study_dir(runs_dir: Path, study: str) -> Path:
    return Path(runs_dir) / "studies" / study


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class PidFile:
    """``<runs>/servers/<host>-<pid>.json``: this worker, when it started, and the servers it
    started (for stale cleanup and for claiming the trials a dead worker left behind)."""

    def __init__(self, runs_dir: Path):
        self.dir = Path(runs_dir) / "servers"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{socket.gethostname()}-{os.getpid()}.json"
        self.servers: list[int] = []
        self.started_at = time.time()

    def _write(self) -> None:
        write_json_atomic(self.path, {"owner": os.getpid(), "host": socket.gethostname(),
                                      "started_at": self.started_at, "servers": self.servers})

    def open(self) -> None:
        """Record this worker before it asks for its first trial."""
        self._write()

    def add(self, pid: int) -> None:
        self.servers.append(pid)
        self._write()

    def remove(self, pid: int) -> None:
        self.servers = [p for p in self.servers if p != pid]
        self._write()

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    def kill_stale(self) -> tuple[list[int], list[float]]:
        """Kill servers recorded by dead workers of this host; return their pids and the start
        times of those dead workers."""
        killed: list[int] = []
        dead_started: list[float] = []
        host = socket.gethostname()
        for f in self.dir.glob("*.json"):
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if doc.get("host") != host or doc.get("owner") == os.getpid() or _pid_alive(int(doc.get("owner", 0))):
                continue
            if isinstance(doc.get("started_at"), (int, float)):
                dead_started.append(float(doc["started_at"]))
            for pid in doc.get("servers", []):
                if _pid_alive(pid) and "serve:app" in _cmdline(pid):
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    killed.append(pid)
            f.unlink(missing_ok=True)
        return killed, dead_started



class TrialHeartbeat:
    def __init__(self, storage, trial_id: int, interval: float = HEARTBEAT_S):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="optuna-heartbeat")
        # a journal file has no heartbeat (one host: dead workers are found by pid instead)
        self.enabled = callable(getattr(storage, "record_heartbeat", None))

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:
                log.debug("heartbeat failed", exc_info=True)

    def __enter__(self):
        if not self.enabled:
            return self
        try:
            self.storage.record_heartbeat(self.trial_id)
        except Exception:
            pass
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._t.is_alive():
            self._t.join(timeout=5)


def normalize_storage_url(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; use psycopg2 when only it is installed."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            import importlib.util

            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + url[len(prefix):]
    return url


class StaleTrialCallback:
    """Optuna's retry of a trial whose heartbeat went stale, then `hooks(trial, reason)` (the
    sweep's: end the trial's MLflow run)."""

    def __init__(self):
        import optuna

        self._retry = optuna.storages.RetryHeartbeatStaleTrialCallback()
        self.hooks: list[Callable[[Any, str], None]] = []

    def __call__(self, study, trial) -> None:
        self._retry(study, trial)
        reason = (f"worker {trial.user_attrs.get('worker', '?')} stopped beating for over {GRACE_S} s "
                  "(died or hung) while the trial was running")
        for hook in self.hooks:
            try:
                hook(trial, reason)
            except Exception:
                log.debug("stale-trial hook failed", exc_info=True)


JOURNAL_PREFIX = "journal:"


def journal_path(url: str) -> Path | None:
    """The file of a ``journal:PATH`` storage URL (``journal:///abs/file`` works too), else None."""
    if not url.startswith(JOURNAL_PREFIX):
        return None
    rest = url[len(JOURNAL_PREFIX):]
    rest = rest[2:] if rest.startswith("//") else rest
    if not rest:
        raise ValueError("journal storage needs a file: journal:PATH (e.g. journal:mlruns/optuna.journal)")
    return Path(rest)


def make_storage(url: str):
    import optuna

    if (jpath := journal_path(url)) is not None:
        # Optuna's JournalStorage: an append-only file with file locks; N workers of one host share
        # it without a database server. No heartbeat: dead workers are found by pid (same host).
        from optuna.storages.journal import JournalFileBackend

        jpath.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(jpath)))
    url = normalize_storage_url(url)

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            # a stale heartbeat (a dead worker on another host): its parameters run again
            heartbeat_stale_trial_callback=StaleTrialCallback(), **kwargs,
        )
    if url.startswith("sqlite"):
        # WAL + synchronous=NORMAL: each storage write costs ~1 ms instead of an fsync (~30 ms);
        # still safe against kill -9 (only a power cut can lose the last transaction).
        from sqlalchemy import event

        @event.listens_for(storage.engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        storage.engine.dispose()
    return storage


def make_sampler(seed: int):
    """TPE: multivariate (joint model of the parameters), group (parameters that appear together,
    e.g. per-engine settings, are modelled together), constraints read from the trials
    (`trial.set_constraint`, Optuna 5) so infeasible regions are avoided."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed, n_startup_trials=5,
                                          constant_liar=True)


def quiet_optuna() -> None:
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def superseded(trials) -> set[int]:
    """FAIL trials whose parameters were enqueued again (they do not count towards --trials)."""
    out = set()
    for t in trials:
        r = t.user_attrs.get("retry_of")
        if r is not None:
            out.add(int(r))
        # Optuna's stale-heartbeat retries name every trial they replace in retry_history
        out.update(int(n) for n in t.system_attrs.get("retry_history", ()))
    return out


def counted(trials) -> int:
    """Finished (COMPLETE or real FAIL) and in-flight trials, against the --trials target. A trial
    that repeated a finished one (user attr ``duplicate_of``) measured nothing and does not count."""
    from optuna.trial import TrialState

    sup = superseded(trials)
    n = 0
    for t in trials:
        if "duplicate_of" in t.user_attrs:
            continue
        if t.state in (TrialState.COMPLETE, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and t.number not in sup:
            n += 1
    return n


def finished_counts(trials) -> dict[str, int]:
    """complete, failed, and distinct (complete trials that are not a repeat of another)."""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE]
    return {"complete": len(done), "failed": sum(t.state == TrialState.FAIL for t in trials),
            "distinct": sum("duplicate_of" not in t.user_attrs for t in done)}


# A live worker names itself (user attr "worker") milliseconds after `ask`; a trial still unnamed
# after this long was asked by a worker that died in between.
UNNAMED_GRACE_S = 5.0


def _unnamed_orphans(study, dead_started: list[float]) -> list[Any]:
    """RUNNING trials with no worker, asked after a now-dead worker of this host started (it was
    killed between `ask` and naming the trial). Waits until each is UNNAMED_GRACE_S old, so that a
    live worker's trial in that same millisecond window is never taken."""

    from optuna.trial import TrialState

    if not dead_started:
        return []
    # the dead worker recorded its start before its first ask; optuna stores naive local times
    since = _dt.datetime.fromtimestamp(min(dead_started))

    def unnamed():
        return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if "worker" not in t.user_attrs and t.datetime_start is not None and t.datetime_start >= since]

    found = unnamed()
    if found:
        youngest = max(t.datetime_start for t in found)
        wait = UNNAMED_GRACE_S - (_dt.datetime.now() - youngest).total_seconds()
        if wait > 0:
            time.sleep(wait)
        found = unnamed()
    return found


def recover_local_stale(study, dead_started: list[float] = ()) -> list[int]:
    """RUNNING trials of dead workers on this host: FAIL (reason recorded) + enqueue again. These
    are the trials a dead worker named, and the unnamed ones it asked just before dying."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    out = []
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = str(t.user_attrs.get("worker", ""))
        h, _, pid = w.rpartition(":")
        if h != host or not pid.isdigit() or int(pid) == os.getpid():
            continue
        if _pid_alive(int(pid)):
            continue
        stale.append((t, f"worker {w} died while the trial was running"))
    stale += [(t, "a worker of this host died between asking for the trial and naming it")
              for t in _unnamed_orphans(study, list(dead_started))]
    for t, reason in stale:
        st = study._storage
        try:
            st.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            for c in CONSTRAINTS:
                key = f"constraints:{c}"
                if key not in t.system_attrs:
                    st.set_trial_system_attr(t._trial_id, key, 1.0)
            if st.set_trial_state_values(t._trial_id, TrialState.FAIL):
                # a worker killed between two suggest calls left part of a plan: the retry keeps
                # those choices and Optuna draws the rest (nothing was measured yet)
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
                out.append(t.number)
        except Exception as e:  # another worker got there first
            log.debug("stale trial %d: %s", t.number, e)
    return out


def note_tracking(study, tracker: "Tracker", recovered: list[int]) -> None:
    """Mark an untracked study (user attr `tracked`: false, shown by the board); end the MLflow
    runs of the trials a dead worker left behind (`recovered` now, stale heartbeats later) as
    KILLED with their fail_reason."""
    if not tracker.enabled:
        study.set_user_attr("tracked", False)
        return
    if "tracked" not in study.user_attrs:
        study.set_user_attr("tracked", True)
    if recovered:
        by_number = {t.number: t for t in study.get_trials(deepcopy=False)}
        for n in recovered:
            t = by_number.get(n)
            if t is not None and tracker.kill_run(t.user_attrs.get("mlflow_run_id"),
                                                  str(t.user_attrs.get("fail_reason") or "its worker died")):
                log.info("trial %d: its MLflow run was left RUNNING by a dead worker: marked KILLED", n)
    get_cb = getattr(study._storage, "get_heartbeat_stale_trial_callback", None)  # RDB storages only
    cb = get_cb() if get_cb else None
    if isinstance(cb, StaleTrialCallback):
        cb.hooks.append(lambda trial, reason: tracker.kill_run(trial.user_attrs.get("mlflow_run_id"), reason))
