"""Optuna's private attributes are read in one module only (optuna_private.py), so an Optuna
upgrade that renames them breaks in one place; and what that module reads still works with the
installed Optuna."""

from __future__ import annotations

import re

from tournament.paths import REPO_ROOT

PRIVATE = re.compile(r"\._trial_id|\._study_id|\._storage")
HELPER = "tournament/study/optuna_private.py"


def test_only_the_helper_reads_optuna_private_attributes():
    users = sorted({f.relative_to(REPO_ROOT).as_posix() for f in (REPO_ROOT / "tournament").rglob("*.py")
                    if PRIVATE.search(f.read_text(encoding="utf-8"))})
    assert users == [HELPER], f"Optuna's private attributes read outside {HELPER}: {users}"


def test_the_helper_reads_a_real_study(tmp_path):
    import optuna

    from tournament.study.optuna_private import study_storage, summary_study_id, trial_id

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    url = f"sqlite:///{tmp_path / 'o.db'}"
    older = optuna.create_study(study_name="older", storage=url)
    newer = optuna.create_study(study_name="newer", storage=url)
    older.ask()
    trial = newer.ask()
    trial.set_user_attr("worker", "here:1")

    storage = study_storage(newer)
    assert isinstance(storage, optuna.storages.BaseStorage)
    frozen = storage.get_trial(trial_id(trial))
    assert frozen.number == trial.number and frozen.user_attrs == {"worker": "here:1"}
    assert trial_id(newer.get_trials()[0]) == trial_id(trial)  # a FrozenTrial gives the same id
    summaries = optuna.get_all_study_summaries(storage, include_best_trial=False)
    assert max(summaries, key=summary_study_id).study_name == "newer"
