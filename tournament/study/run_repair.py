"""The MLflow side of a dead worker: its trials' runs, left RUNNING, are ended as KILLED with the
trial's ``fail_reason`` (the trials recovered on this host, recovery.py, now; those Optuna fails
for a stale heartbeat, later, through `StaleTrialCallback`'s hooks); and a study swept without
tracking is marked so (user attr ``tracked``: false, shown by the board).

A worker killed after Optuna recorded a trial's end but before its run was logged (the logging
runs on a background thread after `tell`) leaves a COMPLETE or FAIL trial whose run is RUNNING
with no metrics. `end_left_runs`, on every resume, ends those: a COMPLETE trial's run FINISHED
with the metrics Optuna holds (those it lacks written again), a FAIL trial's KILLED with its
reason. Only a dead worker's (this host, its pid gone), or one ended over `LEFT_GRACE_S` ago (a
worker of another host): a live worker's logging thread may still be on its way.
"""

from __future__ import annotations

import datetime as _dt
import logging
import socket
from typing import TYPE_CHECKING

from tournament.study.optuna_private import study_storage
from tournament.study.optuna_storage import StaleTrialCallback

if TYPE_CHECKING:
    from tournament.tracking import Tracker

log = logging.getLogger(__name__)
LEFT_GRACE_S = 600.0


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
    end_left_runs(study, tracker)
    get_cb = getattr(study_storage(study), "get_heartbeat_stale_trial_callback", None)  # RDB storages only
    cb = get_cb() if get_cb else None
    if isinstance(cb, StaleTrialCallback):
        cb.hooks.append(lambda trial, reason: tracker.kill_run(trial.user_attrs.get("mlflow_run_id"), reason))


def _worker_gone(t) -> bool:
    """The trial's worker is known dead: this host, its pid gone; or the trial ended long ago."""
    from tournament.files import pid_alive

    host, _, pid = str(t.user_attrs.get("worker", "")).rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return not pid_alive(int(pid))
    ended = t.datetime_complete
    return ended is not None and (_dt.datetime.now() - ended).total_seconds() > LEFT_GRACE_S


def end_left_runs(study, tracker: "Tracker") -> list[int]:
    """End the runs of finished trials that a killed worker left RUNNING; returns those trials."""
    from optuna.trial import TrialState

    from tournament.study.dashboard import metric_name

    fixed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL)):
        run_id = t.user_attrs.get("mlflow_run_id")
        if not run_id or "duplicate_of" in t.user_attrs or not _worker_gone(t):
            continue  # a repeat shares the measured trial's run
        if t.state == TrialState.COMPLETE:  # under the names a finished trial's run holds them (dashboard.py)
            metrics = {metric_name(k): float(v) for k, v in (t.user_attrs.get("metrics") or {}).items()
                       if isinstance(v, (int, float)) and not isinstance(v, bool)}
            done = tracker.kill_run(run_id, None, status="FINISHED", metrics=metrics)
        else:
            done = tracker.kill_run(run_id, str(t.user_attrs.get("fail_reason") or "its worker was killed"))
        if done:
            fixed.append(t.number)
            log.info("trial %d (%s): its MLflow run was left RUNNING by a killed worker: ended", t.number, t.state.name)
    return fixed
