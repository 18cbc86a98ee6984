"""The MLflow side of a dead worker: its trials' runs, left RUNNING, are ended as KILLED with the
trial's ``fail_reason`` (the trials recovered on this host, recovery.py, now; those Optuna fails
for a stale heartbeat, later, through `StaleTrialCallback`'s hooks); and a study swept without
tracking is marked so (user attr ``tracked``: false, shown by the board).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from tournament.study.optuna_private import study_storage
from tournament.study.optuna_storage import StaleTrialCallback

if TYPE_CHECKING:
    from tournament.tracking import Tracker

log = logging.getLogger(__name__)


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
    get_cb = getattr(study_storage(study), "get_heartbeat_stale_trial_callback", None)  # RDB storages only
    cb = get_cb() if get_cb else None
    if isinstance(cb, StaleTrialCallback):
        cb.hooks.append(lambda trial, reason: tracker.kill_run(trial.user_attrs.get("mlflow_run_id"), reason))
