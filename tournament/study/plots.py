"""Plots of a study's board: ``pareto.png`` (matplotlib) and ``pareto.html`` (plotly).

The study's first objective (predicted judge accuracy) up, its second (chars/s) across, one colour per candidate (per candidate and build when a
trial's ``candidate.build`` says which build it served), filled markers for feasible trials and
crosses for infeasible ones. The Pareto front is drawn and labelled with trial numbers: the front
of the feasible trials, or, when none is feasible (an untrained model below the pass mark), the
front of every finished trial, so the plot still shows the trade-off. Only front points carry
labels, so crowded clouds stay readable. The HTML carries plotly.js inside it: a GPU box without
internet shows it too.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from tournament.judge.rules import PASS_MARK
from tournament.study.objectives import Objective, pareto_front, stored_objectives
from tournament.study.record import TrialRecord

ACCURACY_AXES = ("predicted_accuracy", "accuracy")


def series(r: TrialRecord) -> str:
    """The colour group of a trial: its candidate, and its build when it has two (refit, honest)."""
    name = str(r.candidate or "?")
    return f"{name} · {r.build}" if r.build not in (None, "base") else name


def axes(board: dict[str, Any]) -> tuple[Objective, Objective]:
    """(x, y) of the plot: the study's second objective across (speed), its first up (accuracy).
    A front over more objectives is marked on these two."""
    objs = stored_objectives(board.get("objectives"))
    return objs[1], objs[0]


def finished(board: dict[str, Any]) -> list[TrialRecord]:
    x, y = axes(board)
    return [r for r in board["trials"] if r.finished and r.value(x.metric) is not None and r.value(y.metric) is not None]


def front(records: list[TrialRecord], objectives=None) -> tuple[list[TrialRecord], str]:
    """Front records sorted along the plot's x axis, and what the front is of."""
    objs = stored_objectives(objectives)
    x, y = objs[1], objs[0]
    if any(r.feasible for r in records):
        pts, what = [r for r in records if r.pareto], "Pareto front (feasible trials)"
    else:
        keep = pareto_front(records, objs)
        pts, what = [r for r in records if r.trial in keep], "Pareto front of all trials (none feasible)"
    sign = 1 if y.direction == "maximize" else -1
    return sorted(pts, key=lambda r: (r.value(x.metric), -sign * r.value(y.metric))), what


def _title(board: dict[str, Any], records: list[TrialRecord]) -> str:
    n_ok = sum(r.feasible for r in records)
    return f"study {board['study']}: {len(records)} finished trials, {n_ok} feasible"


def write_plots(data: dict[str, Any], out_dir: Path) -> list[Path]:
    """pareto.png + pareto.html in `out_dir`; a missing plotting library skips its file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for writer in (_png, _html):
        try:
            paths.append(writer(data, out_dir))
        except ImportError:
            pass
    return paths


def write_study_plots(storage: str, study: str, runs: Path, log_mlflow: bool,
                      data: dict[str, Any] | None = None) -> list[Path]:
    """The plots of a study (its board `data`, else read from `storage`) in `<runs>/studies/<study>/`,
    with the board as `board.json` beside them, all logged to the study's MLflow run when
    `log_mlflow`. Plots are a nicety: whatever goes wrong is a warning on stderr, and no plots."""
    try:
        import json

        from tournament.files import write_text_atomic
        from tournament.study.board import as_json, board_records
        from tournament.study.optuna_storage import study_dir

        data = data or board_records(storage, study, None)
        paths = write_plots(data, study_dir(runs, study))
        board = write_text_atomic(study_dir(runs, study) / "board.json", json.dumps(as_json(data), default=str, indent=1))
        if log_mlflow and paths:
            from tournament.study.dashboard import log_study_files

            log_study_files(runs, study, [*paths, board])
        return paths
    except Exception as e:  # plots are a nicety
        print(f"warning: plots not written: {type(e).__name__}: {e}", file=sys.stderr)
        return []


def _png(data: dict[str, Any], out_dir: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    rows = finished(data)
    x, y = axes(data)
    pass_mark = data.get("judge", {}).get("pass_mark", PASS_MARK)
    names = sorted({series(r) for r in rows})
    cmap = plt.get_cmap("tab10" if len(names) <= 10 else "tab20")
    colour = {n: cmap(i % cmap.N) for i, n in enumerate(names)}
    fig, ax = plt.subplots(figsize=(9, 5))
    for name in names:
        for feasible, marker in ((True, "o"), (False, "x")):
            pts = [r for r in rows if series(r) == name and r.feasible == feasible]
            if pts:
                ax.scatter([r.value(x.metric) for r in pts], [r.value(y.metric) for r in pts], c=[colour[name]],
                           marker=marker, s=45 if feasible else 40, linewidths=1.5, alpha=0.9, zorder=3)
    best, what = front(rows, data.get("objectives"))
    if best:
        xs, ys = [r.value(x.metric) for r in best], [r.value(y.metric) for r in best]
        if len(stored_objectives(data.get("objectives"))) == 2:  # a staircase only where the front is 2-D
            ax.plot(xs, ys, c="black", lw=1, ls="-", zorder=2, drawstyle="steps-pre")
        ax.scatter(xs, ys, s=170, facecolors="none", edgecolors="black", linewidths=1.2, zorder=4)
        # labels on the front only; alternate above/below so neighbours do not collide
        for i, r in enumerate(best):
            dy = 9 if i % 2 == 0 else -15
            ax.annotate(f"#{r.trial}", (r.value(x.metric), r.value(y.metric)), xytext=(7, dy),
                        textcoords="offset points", fontsize=8, zorder=5,
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    if y.metric in ACCURACY_AXES:  # the pass mark is an accuracy
        ax.axhline(pass_mark, ls="--", c="gray", lw=1, zorder=1)
    xs_all = [r.value(x.metric) for r in rows]
    if xs_all and min(xs_all) > 0 and max(xs_all) / min(xs_all) > 30:
        ax.set_xscale("log")
    ax.margins(x=0.08)  # room for the labels of the outermost points
    if rows:  # room for the labels and the pass mark line
        ys_all = [r.value(y.metric) for r in rows] + ([pass_mark] if y.metric in ACCURACY_AXES else [])
        pad = max(0.02, 0.08 * (max(ys_all) - min(ys_all)))
        ax.set_ylim(min(ys_all) - pad, max(ys_all) + pad)
    ax.set_xlabel(x.axis_label)
    ax.set_ylabel(y.axis_label)
    ax.set_title(_title(data, rows), fontsize=10)
    ax.grid(True, alpha=0.25)
    handles = [Line2D([], [], ls="", marker="o", c=colour[n], label=n) for n in names]
    handles += [Line2D([], [], ls="", marker="o", c="dimgray", label="feasible"),
                Line2D([], [], ls="", marker="x", c="dimgray", mew=1.5, label="infeasible"),
                Line2D([], [], c="black", lw=1, marker="o", mfc="none", ms=10, label=what),
                Line2D([], [], c="gray", ls="--", lw=1, label=f"pass mark {pass_mark}")]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    fig.tight_layout()
    p = out_dir / "pareto.png"
    fig.savefig(p, dpi=120)
    plt.close(fig)
    return p


def _html(data: dict[str, Any], out_dir: Path) -> Path:
    import plotly.graph_objects as go
    from plotly.colors import qualitative

    rows = finished(data)
    x, y = axes(data)
    pass_mark = data.get("judge", {}).get("pass_mark", PASS_MARK)
    names = sorted({series(r) for r in rows})
    palette = qualitative.D3 + qualitative.Set3
    fig = go.Figure()
    for i, name in enumerate(names):
        for feasible, symbol in ((True, "circle"), (False, "x")):
            pts = [r for r in rows if series(r) == name and r.feasible == feasible]
            if not pts:
                continue
            fig.add_trace(go.Scatter(
                x=[r.value(x.metric) for r in pts], y=[r.value(y.metric) for r in pts], mode="markers",
                name=f"{name} ({'feasible' if feasible else 'infeasible'})", legendgroup=name,
                marker=dict(color=palette[i % len(palette)], size=11, symbol=symbol),
                text=[f"trial {r.trial}<br>{name}<br>" + "<br>".join(f"{k}={v}" for k, v in r.params.items())
                      for r in pts], hoverinfo="text+x+y"))
    best, what = front(rows, data.get("objectives"))
    if best:
        two_d = len(stored_objectives(data.get("objectives"))) == 2
        fig.add_trace(go.Scatter(
            x=[r.value(x.metric) for r in best], y=[r.value(y.metric) for r in best],
            mode="lines+markers+text" if two_d else "markers+text",
            name=what, line=dict(color="black", width=1, shape="vh"),
            marker=dict(size=18, color="rgba(0,0,0,0)", line=dict(color="black", width=1.5)),
            text=[f"#{r.trial}" for r in best], textposition="top right", hoverinfo="skip"))
    if y.metric in ACCURACY_AXES:
        fig.add_hline(y=pass_mark, line_dash="dash", line_color="gray", annotation_text=f"pass mark {pass_mark}")
    fig.update_layout(title=_title(data, rows), xaxis_title=x.axis_label,
                      yaxis_title=y.axis_label, template="plotly_white")
    p = out_dir / "pareto.html"
    fig.write_html(str(p), include_plotlyjs=True)  # inline: no CDN on an offline machine
    return p
