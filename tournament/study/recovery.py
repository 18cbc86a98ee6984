"""Trials kept alive while they run, and a dead worker's trials brought back; what counts towards
``--trials`` once some were retried.

What Optuna lacks for ask-and-tell, and this module adds:

- a heartbeat: Optuna beats only inside `study.optimize`; the sweep asks and tells itself (engine
  grouping), so `TrialHeartbeat` beats while a trial runs (a stale one is Optuna's to retry, see
  optuna_storage.py);
- instant recovery on the same host: a worker whose pid is gone is dead now, without waiting for
  the 60 s grace period (`recover_local_stale`), including the trial it asked for but had not
  yet named when it died (`_unnamed_orphans`; the dead workers' start times come from their pid
  files, `PidFile.kill_stale` in servers.py).
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import socket
import threading
import time
from typing import Any

from tournament.files import pid_alive
from tournament.study.optuna_private import retry_params, study_storage, trial_id
from tournament.study.optuna_storage import HEARTBEAT_S
from tournament.study.objectives import CONSTRAINTS

log = logging.getLogger(__name__)


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
    """complete, failed (real failures), queued_again (FAIL trials stopped before they ran out and
    enqueued again: an interrupt, a timeout's unrun draws ahead), and distinct (complete trials that
    are not a repeat of another)."""
    from optuna.trial import TrialState

    done = [t for t in trials if t.state == TrialState.COMPLETE]
    sup = superseded(trials)
    fails = [t for t in trials if t.state == TrialState.FAIL]
    return {"complete": len(done), "failed": sum(t.number not in sup for t in fails),
            "queued_again": sum(t.number in sup for t in fails),
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
        if pid_alive(int(pid)):
            continue
        stale.append((t, f"worker {w} died while the trial was running"))
    stale += [(t, "a worker of this host died between asking for the trial and naming it")
              for t in _unnamed_orphans(study, list(dead_started))]
    for t, reason in stale:
        st = study_storage(study)
        tid = trial_id(t)
        try:
            st.set_trial_user_attr(tid, "fail_reason", reason)
            for c in CONSTRAINTS:
                key = f"constraints:{c}"
                if key not in t.system_attrs:
                    st.set_trial_system_attr(tid, key, 1.0)
            if st.set_trial_state_values(tid, TrialState.FAIL):
                # a worker killed between two suggest calls left part of a plan: the retry keeps
                # those choices and Optuna draws the rest (nothing was measured yet)
                # (and an enqueued trial keeps what it was given: a candidate named by its entry, say)
                study.enqueue_trial(retry_params(t), user_attrs={"retry_of": t.number})
                out.append(t.number)
        except Exception as e:  # another worker got there first
            log.debug("stale trial %d: %s", t.number, e)
    return out
