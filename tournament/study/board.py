"""The leaderboard of a study: feasible first, Pareto front marked, predicted judge numbers.

Rows are `TrialRecord`s read from the Optuna storage (record.py), so the board works from any
machine that can read the study; the Pareto front is over the study's objectives (objectives.py). Plots (``pareto.png``/``.html`` in
``<runs>/studies/<study>/``, also logged to the study's MLflow run) are in plots.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tournament.judge.rules import PASS_MARK
from tournament.study.record import TrialRecord
from tournament.study.config import stored_judge_set


def sqlite_file(storage: str) -> Path | None:
    """The database file of a ``sqlite:///`` storage URL (None for other storages and memory)."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if storage.startswith(prefix) and storage[len(prefix):] not in ("", ":memory:"):
            return Path(storage[len(prefix):].split("?", 1)[0])
    return None


def load_study(storage: str, study: str | None):
    """Open a study for reading. Reading never creates a store: a missing sqlite or journal file is a
    LookupError, and so is an unknown study name (with the names the store holds)."""
    import optuna

    from tournament.study.optuna_private import summary_study_id
    from tournament.study.optuna_storage import journal_path, make_storage, quiet_optuna

    db = sqlite_file(storage) or journal_path(storage)
    if db is not None and not db.is_file():
        raise LookupError(f"no study store at {db}; run `tournament sweep` first (or pass the --runs-dir it used)")
    quiet_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = make_storage(storage)
    if study is None:
        summaries = optuna.get_all_study_summaries(st, include_best_trial=False)
        if not summaries:
            raise LookupError(f"no study in {db or storage}; run `tournament sweep` first")
        study = max(summaries, key=summary_study_id).study_name
    try:
        return optuna.load_study(study_name=study, storage=st)
    except KeyError:  # optuna says only 'Record does not exist.'
        names = sorted(optuna.get_all_study_names(st))
        raise LookupError(f"no study {study!r} in {db or storage}; "
                          + (f"it holds: {', '.join(names)}" if names else "it holds none")) from None


def study_objectives(study):
    from tournament.study.objectives import stored_objectives

    return stored_objectives(study.user_attrs.get("objectives"))


def trial_records(study, calibration=None) -> list[TrialRecord]:
    """Every finished or running trial of `study` as a record, the Pareto front marked (over the
    study's objectives, among feasible measured trials), in board order."""
    from tournament.study.objectives import pareto_front

    judge = study.user_attrs.get("judge", {})
    track = stored_judge_set(judge)
    records = []
    for t in study.get_trials(deepcopy=False):
        if t.state.name not in ("COMPLETE", "FAIL", "RUNNING"):
            continue
        r = TrialRecord.from_trial(t)
        r.calibrate(calibration, track)
        records.append(r)
    front = pareto_front([r for r in records if r.feasible and r.duplicate_of is None], study_objectives(study))
    for r in records:
        r.pareto = r.trial in front
    records.sort(key=lambda r: (not r.feasible, not r.pareto, r.state != "COMPLETE", r.duplicate_of is not None,
                                -(r.predicted_accuracy or 0), -(r.chars_per_s or 0)))
    return records


def board_records(storage: str, study: str | None, ledger_path: Path | None = None) -> dict[str, Any]:
    """The board: the study's records (TrialRecord) and what the table's title and footer show."""
    from tournament.study import ledger

    s = load_study(storage, study)
    led = ledger.load(ledger_path) if ledger_path else None
    cal = ledger.calibration(led) if led else None
    records = trial_records(s, cal)
    done = [r for r in records if r.state == "COMPLETE"]
    return {
        "study": s.study_name, "storage": storage, "judge": s.user_attrs.get("judge", {}),
        "tracked": s.user_attrs.get("tracked", True),  # false: swept with --no-track
        "eval": s.user_attrs.get("eval", {}), "trials": records,
        "objectives": [o.model_dump() for o in study_objectives(s)],
        "n_trials": len(done), "n_distinct": sum(r.duplicate_of is None for r in done),
        "judge_model": cal.judge_model.to_dict() if cal else s.user_attrs.get("judge_model"),
        "submissions_left": ledger.left(led) if led is not None else None,
        "submissions_used": ledger.used(led) if led is not None else None,
        "calibration": cal.to_dict() if cal else None,
    }


def as_json(board: dict[str, Any]) -> dict[str, Any]:
    """The board with each record as its JSON row (``board --json``)."""
    return {**board, "trials": [r.to_row() for r in board["trials"]]}


def board_data(storage: str, study: str | None, ledger_path: Path | None = None) -> dict[str, Any]:
    """The board as ``tournament board --json`` prints it."""
    return as_json(board_records(storage, study, ledger_path))


_ABBR = {"max_tokens": "mt", "repetition_penalty": "rp", "frequency_penalty": "fp", "temperature": "T",
         "top_p": "top_p", "max_num_seqs": "seqs", "max_model_len": "len", "enable_prefix_caching": "prefix",
         "gpu_memory_utilization": "gmu", "batch_size": "bs", "kv_cache_dtype": "kv", "enforce_eager": "eager",
         "compilation_config": "compile", "max_num_batched_tokens": "tokens", "cudagraph_capture_sizes": "graphs",
         "enable_chunked_prefill": "chunked", "async_scheduling": "async", "quantization": "quant"}


def _short(key: str) -> str:
    k = key.split(".")[-1]
    return _ABBR.get(k, k)


def recipe_cell(recipe: dict[str, Any] | None) -> str:
    """A drawn recipe's build on the board: its config hash, training seconds, peak memory ('–'
    where the build did not record them)."""
    if not recipe:
        return "-"
    dash = "–"
    secs, peak = recipe.get("train_seconds"), recipe.get("peak_memory_gib")
    return (f"{(recipe.get('config_hash') or '?')[:8]} · {dash if secs is None else f'{secs:.0f}'} · "
            f"{dash if peak is None else f'{peak:.2f}'}")


def number_cell(v, fmt="{:.3f}") -> str:
    """A number for a table cell; "-" where there is none."""
    return "-" if v is None else fmt.format(v)


def render(board: dict[str, Any], console=None, limit: int = 50) -> None:
    """The board as a rich table (`board`: from board_records)."""
    from rich.console import Console
    from rich.table import Table

    from tournament.study.objectives import PICK_RULE_METRICS, stored_objectives

    if console is None:
        import shutil

        console = Console(width=max(180, shutil.get_terminal_size((180, 40)).columns))
    records: list[TrialRecord] = board["trials"]
    judge = board.get("judge", {})
    nq = judge.get("questions", "?")
    title = (f"study {board['study']} · eval n={board.get('eval', {}).get('n', '?')} · judge "
             f"{stored_judge_set(judge, '?')} (pass {judge.get('pass_mark', PASS_MARK)}, predict "
             f"{judge.get('predict_timeout', '?')} s for {nq} q) · {board.get('n_trials', '?')} trials, "
             f"{board.get('n_distinct', '?')} distinct")
    if board.get("tracked") is False:
        title += (" · partly untracked (some trials have no MLflow run)" if any(r.mlflow_run_id for r in records)
                  else " · untracked (no MLflow runs)")
    table = Table(title=title, show_lines=False)
    cal = board.get("calibration")
    # objectives beyond accuracy and speed get a column of their own
    extra = [o for o in stored_objectives(board.get("objectives")) if o.metric not in PICK_RULE_METRICS]
    cols = ["#", "", "candidate", "build", "params", "seen", "unseen",
            "judge acc (pred.)" if cal else "pred. acc (prior)", "zh_rougeL", "POST", "chars/s", "spread",
            "cycled", "judge chars/s (pred.)" if cal else "judge chars/s (prior)", f"pred. s/{nq}",
            "health s"] + [o.name for o in extra]
    recipes = any(r.recipe for r in records[:limit])  # a recipe space: the build of each trial's draw
    cols += ["recipe (hash · train s · peak GiB)"] if recipes else []
    cols.append("status")
    for c in cols:
        table.add_column(c, overflow="fold")
    num = number_cell
    for r in records[:limit]:
        mark = ("★" if r.pareto else "") + ("✓" if r.feasible else "")
        params = " ".join(f"{_short(k)}={v}" for k, v in r.params.items() if k != "candidate")
        spread = "-"
        if r.chars_per_s_min is not None and r.chars_per_s_max is not None and r.chars_per_s_max != r.chars_per_s_min:
            spread = f"{r.chars_per_s_min:.0f}–{r.chars_per_s_max:.0f}"
            if r.chars_per_s_rel_spread is not None:
                spread += f" ({r.chars_per_s_rel_spread:.0%})"
        pred = "-"
        if r.predicted_accuracy is not None:
            pred = f"{r.predicted_accuracy:.3f}±{r.predicted_accuracy_sd or 0:.3f}"
        post = "-" if r.speed_n_questions is None else f"{r.speed_n_questions}{' distinct' if r.speed_distinct else ''}"
        judge_speed = "-"
        if r.predicted_chars_per_s is not None:
            judge_speed = (f"{r.predicted_chars_per_s:.0f} ({r.predicted_chars_per_s_lo:.0f}–"
                           f"{r.predicted_chars_per_s_hi:.0f})" + (" cycled" if r.speed_hypothesis == "cycled" else ""))
        cells = [str(r.trial), mark, r.candidate or "-", r.build or "-", params[:70],
                 num(r.seen_accuracy), num(r.unseen_accuracy), pred, num(r.zh_rougeL), post,
                 num(r.chars_per_s, "{:.0f}"), spread, num(r.chars_per_s_cycled, "{:.0f}"), judge_speed,
                 num(r.predict_seconds_scaled, "{:.1f}"), num(r.health_seconds, "{:.1f}")]
        cells += [num(r.value(o.metric), "{:.4g}") for o in extra]
        if recipes:
            cells.append(recipe_cell(r.recipe))
        status = r.state if r.state != "FAIL" else f"FAIL: {(r.fail_reason or '')[-80:]}"
        if r.duplicate_of is not None:
            status = f"repeat of #{r.duplicate_of}"
        cells.append(status)
        table.add_row(*cells)
    console.print(table)
    foot = ("★ Pareto front (feasible trials)  ✓ feasible  ·  seen: the refit build on the public samples; "
            "unseen: the honest build on them; pred.: the judge model's blend ± sd  ·  POST: the speed POST's "
            "questions (chars/s: on it; cycled: the samples repeated to its size; judge chars/s: 2-sd band)")
    if board.get("submissions_left") is not None:
        foot += f"  ·  submissions left: {max(0, board['submissions_left'])} (used {board['submissions_used']})"
    if not cal:
        foot += ("  ·  no judge results yet: the prior blend and speed ratio 1 (log-sd 0.5); "
                 "`tournament judge-result` calibrates them")
    console.print(foot)
