"""Where trials live: the Optuna storage and sampler the sweep, its workers and the board open.

Optuna gives the storage (`RDBStorage`, sqlite or PostgreSQL; or `JournalStorage` over one file,
for workers on one host: ``journal:PATH``), the heartbeat columns, and `fail_stale_trials` +
`RetryHeartbeatStaleTrialCallback`, which fail and re-queue a trial whose heartbeat went stale (a
worker on another host died; RDB storages only). `StaleTrialCallback` wraps that retry so the
sweep can also end the trial's MLflow run (run_repair.py). Recovery on one host, without waiting
for the heartbeat's grace period, is recovery.py's.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

log = logging.getLogger(__name__)

HEARTBEAT_S = 10
GRACE_S = 60


def default_storage(runs_dir: Path) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'optuna.db'}"


def study_dir(runs_dir: Path, study: str) -> Path:
    return Path(runs_dir) / "studies" / study


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


def sigint_safe_lock(jpath: Path):
    """Optuna's journal file lock, with Ctrl-C held back from the moment it is asked for until it
    is let go (sigint.hold_sigint): Optuna's own acquire, interrupted while it waits, removes the
    lock another worker holds."""
    from optuna.storages.journal import JournalFileSymlinkLock

    from tournament.study.sigint import hold_sigint, let_sigint_go

    class SigintSafeLock(JournalFileSymlinkLock):
        held = False  # this process holds the lock (Optuna's acquire also releases stale locks)

        def acquire(self) -> bool:
            hold_sigint()
            try:
                got = super().acquire()
            except BaseException:
                let_sigint_go()
                raise
            self.held = True
            return got

        def release(self) -> None:
            if not self.held:  # a stale lock of another process, removed by acquire
                return super().release()
            self.held = False
            try:
                super().release()
            finally:
                let_sigint_go()  # a Ctrl-C that came meanwhile is raised here, the append done

    return SigintSafeLock(str(jpath))


def make_storage(url: str):
    import optuna

    if (jpath := journal_path(url)) is not None:
        # Optuna's JournalStorage: an append-only file with file locks; N workers of one host share
        # it without a database server. No heartbeat: dead workers are found by pid (same host).
        from optuna.storages.journal import JournalFileBackend

        jpath.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(str(jpath), lock_obj=sigint_safe_lock(jpath)))
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
