"""Opening a sweep's Optuna study: created with the sweep file's objectives and what it was started
with (the file, its fingerprint, the judge, the eval set, the speed POST), or loaded to resume,
checked against the file (other objectives: an error; other settings: a warning); and the file's
`enqueue:` entries queued once, group by group in the file's order."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

from tournament.files import json_hash
from tournament.redact import scrub
from tournament.study.config import SweepConfig, config_changes
from tournament.study.objectives import same_objectives, stored_objectives
from tournament.study.recipe_enqueue import enqueue_recipe
from tournament.study.space import enqueue_params, grouped_in_file_order


def open_study(cfg: SweepConfig, opts: Any, storage: Any, sampler: Any, setup: dict[str, Any],
               echo: Callable[[str], None]):
    """The study `opts.study` in `storage`; a new one records `setup` (user attrs: judge_model,
    eval, speed) beside the sweep file's settings."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objectives = cfg.objectives
    study = optuna.create_study(study_name=opts.study, storage=storage, sampler=sampler,
                                directions=[o.direction for o in objectives], load_if_exists=True)
    attrs = study.user_attrs
    if "sweep_config" in attrs and not same_objectives(stored_objectives(attrs.get("objectives")), objectives):
        had = ", ".join(f"{o.name} ({o.direction})" for o in stored_objectives(attrs.get("objectives")))
        raise ValueError(f"study {opts.study!r} was started with the objectives {had}; this sweep file "
                         f"declares {', '.join(f'{o.name} ({o.direction})' for o in objectives)}. Optuna's "
                         "values would mean other things: use another --study name")
    if "sweep_config" not in attrs:
        study.set_metric_names([o.name for o in objectives])
        study.set_user_attr("objectives", [o.model_dump() for o in objectives])
        study.set_user_attr("sweep_config", scrub(json.loads(cfg.model_dump_json())))
        study.set_user_attr("fingerprint", cfg.fingerprint())
        if opts.sweep_file is not None:
            study.set_user_attr("sweep_file", str(Path(opts.sweep_file).resolve()))
        study.set_user_attr("judge", cfg.judge.model_dump())
        for k, v in setup.items():
            study.set_user_attr(k, v)
    elif attrs.get("fingerprint") != cfg.fingerprint():
        changed = config_changes(attrs.get("sweep_config") or {}, scrub(json.loads(cfg.model_dump_json())))
        if changed:  # else only settings a later version added, at their defaults: the same sweep
            echo(f"warning: study {opts.study!r} was started with another sweep file "
                 f"({', '.join(changed[:8])}{' …' if len(changed) > 8 else ''} differ); trials are mixed")
    return study


def enqueue_entries(study, cfg: SweepConfig, candidates: dict[str, Any]) -> None:
    """The sweep file's `enqueue:` entries, queued once per study (a resume does not queue them
    again); in a recipe sweep each with its recipe fixed (study/recipe_enqueue.py)."""
    if study.user_attrs.get("enqueued"):
        return
    entries = [(enqueue_params(e, cfg, candidates), e) for e in cfg.enqueue]
    for params, e in entries:
        params.update(enqueue_recipe(e, cfg, candidates, params.get("candidate")))
    enqueue_each(study, [params for params, _ in grouped_in_file_order(entries)])
    study.set_user_attr("enqueued", True)


def enqueue_each(study, queue: list[dict[str, Any]]) -> int:
    """Queue every entry of `queue`, repeats included: two equal entries are two trials (a recipe
    enqueued twice gets two, its decode settings drawn for each). Entries the study holds already
    (another worker that opened the same new study first) are not queued again, counted: the
    n-th equal entry is queued only while fewer than n trials were queued with it. (Optuna's
    `skip_if_exists` would keep one of each, as it did to the GPU proof's repeated recipes.)
    Returns how many were queued."""
    from collections import Counter

    held = Counter(json_hash(t.system_attrs["fixed_params"]) for t in study.get_trials(deepcopy=False)
                   if "fixed_params" in t.system_attrs)
    wanted: Counter = Counter()
    queued = 0
    for params in queue:
        k = json_hash(params)
        wanted[k] += 1
        if held[k] < wanted[k]:
            study.enqueue_trial(params)
            held[k] += 1
            queued += 1
    return queued
