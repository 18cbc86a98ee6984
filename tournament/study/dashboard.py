"""What a person sees of a study in MLflow: metric names that sort together, runs named by what
they served, the study's run holding the board, the plots and winner.json, the picked trial
marked, and the ledger's judge results beside the local numbers.

Names here are MLflow's only: the trial's files, Optuna's values and `board --json` keep the
plain names (`predicted_accuracy`), which `TrialRecord` reads. In MLflow a metric is grouped by
what it is about: ``judge/`` (what the judge ranks on: predicted accuracy and its parts, chars/s,
time to healthy), ``speed/``, ``accuracy/``, ``answers/``, ``sweep/``, ``recipe/``. The experiment's shared
view (`tracking.study_view`) shows the ``judge/`` columns first.

Every call is best effort (MLflow is a copy of what the files hold): a failure is a warning.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

JUDGE_METRICS = ("predicted_accuracy", "predicted_accuracy_sd", "seen_accuracy", "unseen_accuracy", "chars_per_s",
                 "chars_per_s_cycled", "health_seconds", "predict_seconds_scaled")
GROUPS = (("answers", ("answer_", "empty_answers", "n_questions")),
          ("speed", ("chars_per_s", "speed_", "predict_", "start_seconds")),
          ("sweep", ("overhead_", "build_seconds", "cold_start", "two_builds", "cached_speed", "gpu")),
          ("recipe", ("recipe_",)))  # a drawn recipe's build: training seconds, peak memory
WINNER_TAG = "winner"


def metric_name(key: str) -> str:
    """`predicted_accuracy` -> `judge/predicted_accuracy`, `answer_chars_mean` -> `answers/...`."""
    if key in JUDGE_METRICS:
        return f"judge/{key}"
    for group, prefixes in GROUPS:
        if key.startswith(prefixes):
            return f"{group}/{key}"
    return f"accuracy/{key}"


def run_name(number: int, candidate: str, build: str | None, prompt_variant: str | None, mode: str | None,
             serve_config: dict[str, Any] | None, drawn: set[str] | None = None) -> str:
    """`#3 gemma · refit · one-shot · max_tokens=64 repetition_penalty=1.15`: what the trial served,
    with the settings the sampler drew (`drawn`, Optuna's parameter names) that differ from the defaults."""
    parts = [f"#{number} {candidate}"]
    parts += [build] if build and build != "base" else []
    parts += [prompt_variant] if prompt_variant else []
    parts += [mode] if mode and mode != "batch" else []
    from tournament.study.winner import changed_settings

    changed = {k: v for k, v in changed_settings(serve_config).items() if drawn is None or k in drawn}
    settings = " ".join(f"{k.split('.', 1)[1]}={_short(v)}" for k, v in sorted(changed.items(), key=_decode_first))
    return " · ".join(parts + ([settings] if settings else ["defaults"]))[:250]


def _decode_first(item: tuple[str, Any]) -> tuple[bool, str]:
    return (not item[0].startswith("decode."), item[0])


def _short(v: Any) -> str:
    text = v if isinstance(v, str) else __import__("json").dumps(v, separators=(",", ":"), sort_keys=True)
    return text if len(text) <= 40 else text[:39] + "…"


def _warn(what: str, e: Exception) -> None:
    print(f"warning: MLflow: {what}: {type(e).__name__}: {e}", file=sys.stderr)


def log_study_files(runs: Path, study: str, files: list[Path]) -> bool:
    """`files` (the board, the plots, winner.json) as artifacts of the study's run."""
    try:
        from tournament.tracking import Tracker

        t = Tracker(runs)
        if not (t.ok and t.start_study(study, {}, {}, reopen=False)):
            return False
        for p in files:
            t.log_study_artifact(Path(p))
        return t.errors == 0
    except Exception as e:
        _warn(f"study files of {study!r} not logged", e)
        return False


def mark_winner(runs: Path, study: str, run_id: str | None, trial: int, winner: Path) -> bool:
    """Tag the picked trial's run `winner` (and no other trial of its experiment), and log
    winner.json to the study's run."""
    if not run_id:
        return False
    try:
        from tournament.tracking import Tracker

        t = Tracker(runs)
        if not t.ok:
            return False
        exp = t.client.get_run(run_id).info.experiment_id
        for r in t.client.search_runs([exp], filter_string=f"tags.`{WINNER_TAG}` != ''", max_results=1000):
            if r.info.run_id != run_id:
                t.client.delete_tag(r.info.run_id, WINNER_TAG)
        t.client.set_tag(run_id, WINNER_TAG, f"★ picked: {Path(winner).name}")
        return log_study_files(runs, study, [Path(winner)])
    except Exception as e:
        _warn(f"trial {trial} not marked as the winner", e)
        return False


def track_submission(entry: dict[str, Any], runs_dir: Path | None) -> None:
    """A submission as one run of experiment `tournament-ledger` (`local/...` beside
    `judge/..._<set>` once the judge answered), and the judge's numbers on the trial's own run
    (`ledger/judge_accuracy_<set>` beside `judge/predicted_accuracy`)."""
    try:
        from tournament.tracking import Tracker, runs_dir_default

        runs = runs_dir or runs_dir_default()
        t = Tracker(runs, experiment="tournament-ledger")
        if not t.ok:
            return
        sid = int(entry["id"])
        found = t.client.search_runs([t.experiment_id], filter_string=f"tags.`tournament.submission` = '{sid}'",
                                     max_results=1)
        rid = found[0].info.run_id if found else t.start_run(
            f"submission {sid}: {entry.get('candidate')} (study {entry.get('study')}, trial {entry.get('trial')})",
            params={k: entry.get(k) for k in ("note", "candidate", "study", "trial")},
            tags={"tournament.kind": "submission", "tournament.submission": str(sid),
                  "winner_sha256": str(entry.get("winner_sha256")), "git_commit": str(entry.get("git_commit"))}).run_id
        if not rid:
            return
        loc = entry.get("local") or {}
        metrics = {f"local/{k}": loc[k] for k in ("accuracy", "chars_per_s", "chars_per_s_cycled")
                   if loc.get(k) is not None}
        judged = {}
        for res in entry.get("results") or []:
            if res.get("accuracy") is not None:
                judged[f"accuracy_{res['set']}"] = res["accuracy"]
            if res.get("speed") is not None:
                judged[f"chars_per_s_{res['set']}"] = res["speed"]
        metrics.update({f"judge/{k}": v for k, v in judged.items()})
        t.log_metrics(rid, metrics)
        t.client.set_terminated(rid, "FINISHED")
        if judged and entry.get("study") is not None and entry.get("trial") is not None:
            _judge_on_trial(runs, str(entry["study"]), int(entry["trial"]), judged)
    except Exception as e:  # the JSON ledger is the record; MLflow is a copy
        _warn(f"submission {entry.get('id')} not logged", e)


def _judge_on_trial(runs: Path, study: str, trial: int, judged: dict[str, float]) -> None:
    from tournament.tracking import EXPERIMENT, Tracker, study_experiment

    t = Tracker(runs)
    query = f"tags.`tournament.study` = '{study}' and tags.`tournament.trial` = '{trial}'"
    for name in (study_experiment(study), EXPERIMENT):
        exp = t.client.get_experiment_by_name(name)
        runs_found = t.client.search_runs([exp.experiment_id], filter_string=query, max_results=1) if exp else []
        if runs_found:
            t.log_metrics(runs_found[0].info.run_id, {f"ledger/judge_{k}": v for k, v in judged.items()})
            return
