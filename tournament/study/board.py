"""The leaderboard of a study: feasible first, Pareto front marked, predicted judge numbers.

Rows come from the Optuna storage (the trial's metrics and serve config are user attributes), so
the board works from any machine that can read the study. Plots: ``pareto.png`` (matplotlib)
and ``pareto.html`` (plotly) in ``<runs>/studies/<study>/``, also logged to the study's MLflow
parent run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tournament.judge.rules import PASS_MARK


def load_study(storage: str, study: str | None):
    import optuna

    from tournament.study.storage import make_storage, quiet_optuna

    quiet_optuna()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    st = make_storage(storage)
    if study is None:
        summaries = optuna.get_all_study_summaries(st, include_best_trial=False)
        if not summaries:
            raise LookupError(f"no study in {storage}; run `tournament sweep` first")
        study = max(summaries, key=lambda s: s._study_id).study_name
    return optuna.load_study(study_name=study, storage=st)


def pareto_front(points: list[tuple[int, float, float]]) -> set[int]:
    """Numbers of the non-dominated points (maximise both coordinates)."""
    front = set()
    for n, a, s in points:
        dominated = any((a2 >= a and s2 >= s) and (a2 > a or s2 > s) for _, a2, s2 in points)
        if not dominated:
            front.add(n)
    return front


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
        cons = t.constraints
        feasible = t.state == TrialState.COMPLETE and bool(cons) and all(v <= 0 for v in cons.values())
        row = {
            "trial": t.number, "state": t.state.name, "feasible": feasible, "pareto": False,
            "candidate": t.params.get("candidate") or (t.user_attrs.get("candidate") or {}).get("id"),
            "params": dict(t.params), "constraints": dict(cons),
            "accuracy": m.get("accuracy"), "accuracy_stderr": m.get("accuracy_stderr"),
            "zh_rougeL": m.get("zh_rougeL"), "chars_per_s": m.get("chars_per_s"),
            "chars_per_s_min": m.get("chars_per_s_min"), "chars_per_s_max": m.get("chars_per_s_max"),
            "predict_seconds": m.get("predict_seconds"), "predict_seconds_scaled": m.get("predict_seconds_scaled"),
            "health_seconds": m.get("health_seconds"), "overhead_ratio": m.get("overhead_ratio"),
            "max_tokens": (sc.get("decode") or {}).get("max_tokens"), "mode": sc.get("mode"),
            "fail_reason": t.user_attrs.get("fail_reason"), "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "cache": t.user_attrs.get("cache"),
        }
        if calibration is not None and row["accuracy"] is not None and row["chars_per_s"]:
            row["predicted"] = calibration.predict(row["accuracy"], row["chars_per_s"], track)
        rows.append(row)
    front = pareto_front([(r["trial"], r["accuracy"], r["chars_per_s"]) for r in rows if r["feasible"]])
    for r in rows:
        r["pareto"] = r["trial"] in front
    rows.sort(key=lambda r: (not r["feasible"], not r["pareto"], r["state"] != "COMPLETE",
                             -(r["accuracy"] or 0), -(r["chars_per_s"] or 0)))
    return rows


def board_data(storage: str, study: str | None, ledger_path: Path | None = None) -> dict[str, Any]:
    from tournament.study import ledger as L

    s = load_study(storage, study)
    led = L.load(ledger_path) if ledger_path else None
    cal = L.calibration(led) if led else None
    rows = trial_rows(s, cal)
    return {
        "study": s.study_name, "storage": storage, "judge": s.user_attrs.get("judge", {}),
        "tracked": s.user_attrs.get("tracked", True),  # false: swept with --no-track
        "eval": s.user_attrs.get("eval", {}), "trials": rows,
        "submissions_left": L.left(led) if led is not None else None,
        "submissions_used": L.used(led) if led is not None else None,
        "calibration": cal.to_dict() if cal else None,
    }


_ABBR = {"max_tokens": "mt", "repetition_penalty": "rp", "frequency_penalty": "fp", "temperature": "T",
         "top_p": "top_p", "max_num_seqs": "seqs", "max_model_len": "len", "enable_prefix_caching": "prefix",
         "gpu_memory_utilization": "gmu", "batch_size": "bs", "kv_cache_dtype": "kv", "enforce_eager": "eager"}


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

        console = Console(width=max(160, shutil.get_terminal_size((160, 40)).columns))
    judge = data.get("judge", {})
    title = (f"study {data['study']} · eval n={data.get('eval', {}).get('n', '?')} · judge {judge.get('track', '?')} "
             f"(pass {judge.get('pass_mark', PASS_MARK)}, predict {judge.get('predict_timeout', '?')} s "
             f"for {judge.get('questions', '?')} q)")
    if data.get("tracked") is False:
        title += (" · partly untracked (some trials have no MLflow run)" if any(r.get("mlflow_run_id") for r in data["trials"])
                  else " · untracked (no MLflow runs)")
    table = Table(title=title, show_lines=False)
    cols = ["#", "", "candidate", "params", "acc (judge)", "±2se", "zh_rougeL", "chars/s", "spread", "pred. s/292",
            "health s"]
    cal = data.get("calibration")
    if cal:
        cols += ["judge acc (pred)", "judge chars/s (pred)"]
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
        cells = [str(r["trial"]), mark, str(r["candidate"]), params[:70], _f(r["accuracy"]),
                 _f(2 * r["accuracy_stderr"] if r.get("accuracy_stderr") is not None else None),
                 _f(r["zh_rougeL"]), _f(r["chars_per_s"], "{:.0f}"), spread, _f(r["predict_seconds_scaled"], "{:.1f}"),
                 _f(r["health_seconds"], "{:.1f}")]
        if cal:
            p = r.get("predicted")
            cells += [f"{p['accuracy']:.3f}±{2 * p['accuracy_sd']:.3f}" if p else "-",
                      f"{p['chars_per_s']:.0f} ({p['chars_per_s_lo']:.0f}–{p['chars_per_s_hi']:.0f})" if p else "-"]
        status = r["state"] if r["state"] != "FAIL" else f"FAIL: {(r.get('fail_reason') or '')[:80]}"
        cells.append(status)
        table.add_row(*cells)
    console.print(table)
    foot = "★ Pareto front (feasible trials)  ✓ feasible"
    if data.get("submissions_left") is not None:
        foot += f"  ·  submissions left: {data['submissions_left']} (used {data['submissions_used']})"
    if not cal:
        foot += "  ·  no judge results yet: `tournament judge-result` enables predicted judge numbers"
    console.print(foot)


def write_plots(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """pareto.png + pareto.html: accuracy vs chars/s, feasible/infeasible/front."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [r for r in data["trials"] if r["state"] == "COMPLETE" and r["accuracy"] is not None]
    paths = []
    pass_mark = data.get("judge", {}).get("pass_mark", PASS_MARK)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 4.5))
        for label, sel, style in (("infeasible", lambda r: not r["feasible"], dict(c="lightgray", marker="x")),
                                  ("feasible", lambda r: r["feasible"] and not r["pareto"], dict(c="tab:blue", marker="o")),
                                  ("Pareto front", lambda r: r["pareto"], dict(c="tab:red", marker="*", s=140))):
            pts = [r for r in rows if sel(r)]
            if pts:
                ax.scatter([r["chars_per_s"] for r in pts], [r["accuracy"] for r in pts], label=label, **style)
                for r in pts:
                    ax.annotate(str(r["trial"]), (r["chars_per_s"], r["accuracy"]), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
        front = sorted((r for r in rows if r["pareto"]), key=lambda r: r["chars_per_s"])
        if len(front) > 1:
            ax.plot([r["chars_per_s"] for r in front], [r["accuracy"] for r in front], c="tab:red", lw=1)
        ax.axhline(pass_mark, ls="--", c="gray", lw=1, label=f"pass mark {pass_mark}")
        ax.set_xlabel("chars/s (judge emulator)")
        ax.set_ylabel("accuracy (judge metric)")
        ax.set_title(f"study {data['study']}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        p = out_dir / "pareto.png"
        fig.savefig(p, dpi=120)
        plt.close(fig)
        paths.append(p)
    except ImportError:
        pass
    try:
        import plotly.graph_objects as go

        fig = go.Figure()
        for label, sel, color in (("infeasible", lambda r: not r["feasible"], "lightgray"),
                                  ("feasible", lambda r: r["feasible"] and not r["pareto"], "royalblue"),
                                  ("Pareto front", lambda r: r["pareto"], "crimson")):
            pts = [r for r in rows if sel(r)]
            fig.add_trace(go.Scatter(
                x=[r["chars_per_s"] for r in pts], y=[r["accuracy"] for r in pts], mode="markers", name=label,
                marker=dict(color=color, size=11),
                text=[f"trial {r['trial']}<br>{r['candidate']}<br>" + "<br>".join(f"{k}={v}" for k, v in r["params"].items())
                      for r in pts], hoverinfo="text+x+y"))
        fig.add_hline(y=pass_mark, line_dash="dash", annotation_text="pass mark")
        fig.update_layout(title=f"study {data['study']}", xaxis_title="chars/s", yaxis_title="accuracy (judge metric)")
        p = out_dir / "pareto.html"
        fig.write_html(str(p), include_plotlyjs="cdn")
        paths.append(p)
    except ImportError:
        pass
    return paths
