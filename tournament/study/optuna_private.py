"""The only place that reads Optuna's private attributes, so an Optuna upgrade that renames them
breaks here and nowhere else (a test keeps every other module off them).

Optuna's public API lacks these: a trial's storage id (for the storage calls and the heartbeat of
ask-and-tell, which the public `Trial` does not expose), a study's storage object (to end a dead
worker's trial from outside `study.optimize`), and a study summary's id (to open the newest study).
"""

from __future__ import annotations

from typing import Any


def trial_id(trial: Any) -> int:
    """The storage's id of a `Trial` or `FrozenTrial` (not its `number`, which counts per study)."""
    return trial._trial_id


def study_storage(study: Any) -> Any:
    """The storage object a `Study` reads and writes through."""
    return study._storage


def summary_study_id(summary: Any) -> int:
    """The storage's id of a `StudySummary`: the newest study has the largest."""
    return summary._study_id


def fixed_params(trial: Any) -> dict[str, Any]:
    """The parameters an enqueued `Trial` or `FrozenTrial` was given (Optuna keeps them among the
    trial's system attributes), or a `FixedTrial`'s own; {} for a trial the sampler draws alone."""
    from optuna.trial import FrozenTrial

    if isinstance(trial, FrozenTrial):
        return dict(trial.system_attrs.get("fixed_params") or {})
    if hasattr(trial, "_trial_id") and hasattr(trial, "storage"):
        return dict(trial.storage.get_trial_system_attrs(trial._trial_id).get("fixed_params") or {})
    return dict(getattr(trial, "_params", None) or {})


def retry_params(trial: Any) -> dict[str, Any]:
    """What a trial that must run again is enqueued with: what it was given (a candidate named by
    its enqueue entry, say) and what it had drawn so far."""
    return {**fixed_params(trial), **trial.params}
