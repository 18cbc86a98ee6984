"""The leaderboard of a study: feasible first, Pareto front marked, predicted judge numbers.

Rows come from the Optuna storage (the trial's metrics and serve config are user attributes), so
the board works from any machine that can read the study. Plots (``pareto.png``/``.html`` in
``<runs>/studies/<study>/``, also logged to the study's MLflow parent run) are in plots.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tournament.judge.rules import PASS_MARK


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

    from tournament.study.storage import journal_path, make_storage, quiet_optuna

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
        study = max(summaries, key=lambda s: s._study_id).study_name
    try:
        return optuna.load_study(study_name=study, storage=st)
    except KeyError:  # optuna says only 'Record does not exist.'
        names = sorted(optuna.get_all_study_names(st))
        raise LookupError(f"no study {study!r} in {db or storage}; "
                          + (f"it holds: {', '.join(names)}" if names else "it holds none")) from None


def pareto_front(points: list[tuple[int, float, float]]) -> set[int]:
    """Numbers of the non-dominated points (maximise both coordinates)."""
    front = set()
    for n, a, s in points:
        dominated = any((a2 >= a and s2 >= s) and (a2 > a or s2 > s) for _, a2, s2 in points)
        if not dominated:
            front.add(n)
    return front


def build_of(candidate: dict[str, Any]) -> str:
    """Which build a trial served: winner.json's candidate.build; older studies measured the honest
    build of a trained recipe (and the base model as itself)."""
    if candidate.get("build"):
        return candidate["build"]
    method = (candidate.get("recipe") or {}).get("method")
    return "honest" if method and method != "none" else "base"


def trial_rows(study, calibration=None) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    judge = study.user_attrs.get("judge", {})
    track = judge.get("track", "basic")
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state not in (TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING):
            continue
        m = t.user_attrs.get("metrics", {})
        sc = t.user_attrs.get("serve_config") or {}
        cand = t.user_attrs.get("candidate") or {}
        cons = t.constraints
        feasible = t.state == TrialState.COMPLETE and bool(cons) and all(v <= 0 for v in cons.values())
        # a study from before the judge model measured one build: its accuracy is both parts
        seen = m.get("seen_accuracy", m.get("accuracy"))
        unseen = m.get("unseen_accuracy", seen)
        row = {
            "trial": t.number, "state": t.state.name, "feasible": feasible, "pareto": False,
            "candidate": t.params.get("candidate") or cand.get("id"), "build": build_of(cand),
            "params": dict(t.params), "constraints": dict(cons), "duplicate_of": t.user_attrs.get("duplicate_of"),
            "seen_accuracy": seen, "unseen_accuracy": unseen,
            "seen_accuracy_stderr": m.get("seen_accuracy_stderr", m.get("accuracy_stderr")),
            "unseen_accuracy_stderr": m.get("unseen_accuracy_stderr", m.get("accuracy_stderr")),
            "predicted_accuracy": m.get("predicted_accuracy", m.get("accuracy")),
            "predicted_accuracy_sd": m.get("predicted_accuracy_sd", m.get("accuracy_stderr")),
            "accuracy": m.get("accuracy"), "accuracy_stderr": m.get("accuracy_stderr"),
            "zh_rougeL": m.get("zh_rougeL"), "chars_per_s": m.get("chars_per_s"),
            "chars_per_s_min": m.get("chars_per_s_min"), "chars_per_s_max": m.get("chars_per_s_max"),
            "chars_per_s_mad": m.get("chars_per_s_mad"), "chars_per_s_score": m.get("chars_per_s_score"),
            "chars_per_s_rel_spread": m.get("chars_per_s_rel_spread"), "speed_repeats": m.get("speed_repeats"),
            "predict_seconds": m.get("predict_seconds"), "predict_seconds_scaled": m.get("predict_seconds_scaled"),
            "health_seconds": m.get("health_seconds"), "overhead_ratio": m.get("overhead_ratio"),
            "max_tokens": (sc.get("decode") or {}).get("max_tokens"), "mode": sc.get("mode"),
            "serve_config": sc,
            "fail_reason": t.user_attrs.get("fail_reason"), "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "cache": t.user_attrs.get("cache"),
        }
        if calibration is not None and seen is not None:
            p = calibration.predict(None, row["chars_per_s"], track, seen=seen, unseen=unseen,
                                    seen_se=row["seen_accuracy_stderr"] or 0.0,
                                    unseen_se=row["unseen_accuracy_stderr"] or 0.0)
            row["predicted"] = p
            row["predicted_accuracy"], row["predicted_accuracy_sd"] = p["accuracy"], p["accuracy_sd"]
        rows.append(row)
    front = pareto_front([(r["trial"], r["predicted_accuracy"], r["chars_per_s"]) for r in rows
                          if r["feasible"] and not r["duplicate_of"]])
    for r in rows:
        r["pareto"] = r["trial"] in front
    rows.sort(key=lambda r: (not r["feasible"], not r["pareto"], r["state"] != "COMPLETE", r["duplicate_of"] is not None,
                             -(r["predicted_accuracy"] or 0), -(r["chars_per_s"] or 0)))
    return rows


def board_data(storage: str, study: str | None, ledger_path: Path | None = None) -> dict[str, Any]:
    from tournament.study import ledger as L

    s = load_study(storage, study)
    led = L.load(ledger_path) if ledger_path else None
    cal = L.calibration(led) if led else None
    rows = trial_rows(s, cal)
    done = [r for r in rows if r["state"] == "COMPLETE"]
    return {
        "study": s.study_name, "storage": storage, "judge": s.user_attrs.get("judge", {}),
        "tracked": s.user_attrs.get("tracked", True),  # false: swept with --no-track
        "eval": s.user_attrs.get("eval", {}), "trials": rows,
        "n_trials": len(done), "n_distinct": sum(r["duplicate_of"] is None for r in done),
        "judge_model": cal.judge_model.to_dict() if cal else s.user_attrs.get("judge_model"),
        "submissions_left": L.left(led) if led is not None else None,
        "submissions_used": L.used(led) if led is not None else None,
        "calibration": cal.to_dict() if cal else None,
    }


_ABBR = {"max_tokens": "mt", "repetition_penalty": "rp", "frequency_penalty": "fp", "temperature": "T",
         "top_p": "top_p", "max_num_seqs": "seqs", "max_model_len": "len", "enable_prefix_caching": "prefix",
         "gpu_memory_utilization": "gmu", "batch_size": "bs", "kv_cache_dtype": "kv", "enforce_eager": "eager",
         "compilation_config": "compile", "max_num_batched_tokens": "tokens", "cudagraph_capture_sizes": "graphs",
         "enable_chunked_prefill": "chunked", "async_scheduling": "async", "quantization": "quant"}


def _short(key: str) -> str:
    k = key.split(".")[-1]
    return _ABBR.get(k, k)


def _f(v, fmt="{:.3f}") -> str:
    return "-" if v is None else fmt.format(v)


def render(data: dict[str, Any], console=None, limit: int = 50) -> None:
    from rich.console import Console
    from rich.table import Table

    if console is None:
        import shutil

        console = Console(width=max(180, shutil.get_terminal_size((180, 40)).columns))
    judge = data.get("judge", {})
    nq = judge.get("questions", "?")
    title = (f"study {data['study']} · eval n={data.get('eval', {}).get('n', '?')} · judge {judge.get('track', '?')} "
             f"(pass {judge.get('pass_mark', PASS_MARK)}, predict {judge.get('predict_timeout', '?')} s "
             f"for {nq} q) · {data.get('n_trials', '?')} trials, {data.get('n_distinct', '?')} distinct")
    if data.get("tracked") is False:
        title += (" · partly untracked (some trials have no MLflow run)" if any(r.get("mlflow_run_id") for r in data["trials"])
                  else " · untracked (no MLflow runs)")
    table = Table(title=title, show_lines=False)
    cal = data.get("calibration")
    cols = ["#", "", "candidate", "build", "params", "seen", "unseen",
            "judge acc (pred.)" if cal else "pred. acc (prior)", "zh_rougeL", "chars/s", "spread", f"pred. s/{nq}",
            "health s"]
    if cal:
        cols.append("judge chars/s (pred.)")
    cols.append("status")
    for c in cols:
        table.add_column(c, overflow="fold")
    for r in data["trials"][:limit]:
        mark = ("★" if r["pareto"] else "") + ("✓" if r["feasible"] else "")
        params = " ".join(f"{_short(k)}={v}" for k, v in r["params"].items() if k != "candidate")
        spread = "-"
        if r.get("chars_per_s_min") is not None and r.get("chars_per_s_max") is not None \
                and r["chars_per_s_max"] != r["chars_per_s_min"]:
            spread = f"{r['chars_per_s_min']:.0f}–{r['chars_per_s_max']:.0f}"
            if r.get("chars_per_s_rel_spread") is not None:
                spread += f" ({r['chars_per_s_rel_spread']:.0%})"
        pred = "-"
        if r.get("predicted_accuracy") is not None:
            pred = f"{r['predicted_accuracy']:.3f}±{r.get('predicted_accuracy_sd') or 0:.3f}"
        cells = [str(r["trial"]), mark, str(r["candidate"]), r.get("build") or "-", params[:70],
                 _f(r.get("seen_accuracy")), _f(r.get("unseen_accuracy")), pred, _f(r["zh_rougeL"]),
                 _f(r["chars_per_s"], "{:.0f}"), spread, _f(r["predict_seconds_scaled"], "{:.1f}"),
                 _f(r["health_seconds"], "{:.1f}")]
        if cal:
            p = r.get("predicted")
            cells.append(f"{p['chars_per_s']:.0f} ({p['chars_per_s_lo']:.0f}–{p['chars_per_s_hi']:.0f})"
                         if p and p.get("chars_per_s") is not None else "-")
        status = r["state"] if r["state"] != "FAIL" else f"FAIL: {(r.get('fail_reason') or '')[-80:]}"
        if r.get("duplicate_of") is not None:
            status = f"repeat of #{r['duplicate_of']}"
        cells.append(status)
        table.add_row(*cells)
    console.print(table)
    foot = ("★ Pareto front (feasible trials)  ✓ feasible  ·  seen: the refit build on the public samples; "
            "unseen: the honest build on them; pred.: the judge model's blend ± sd")
    if data.get("submissions_left") is not None:
        foot += f"  ·  submissions left: {data['submissions_left']} (used {data['submissions_used']})"
    if not cal:
        foot += "  ·  no judge results yet: the prior blend; `tournament judge-result` calibrates it"
    console.print(foot)
