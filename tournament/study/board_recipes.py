"""The board by recipe (`tournament board --by-recipe`): one row per recipe of a study, its best
trial in board order (feasible first, then the Pareto front, then predicted judge accuracy, then
chars/s), with what the recipe is (method, LoRA rank, learning rate, epochs, batch, quantization),
whether the sampler drew it or it ran as written, how many distinct trials measured it, and its
build. The question a user tuning LoRA ranks asks after a recipe sweep: which recipe, with its
best decode settings, and by how much. A recipe with no finished trial (its build failed, say)
comes last with its last failure."""

from __future__ import annotations

from typing import Any

from tournament.study.record import TrialRecord

RECIPE_FIELDS = ("method", "rank", "learning_rate", "epochs", "batch_size")


def recipe_rows(records: list[TrialRecord]) -> list[dict[str, Any]]:
    """One row per recipe (`TrialRecord.candidate`), `records` in board order (board.trial_records)."""
    groups: dict[str, list[TrialRecord]] = {}
    for r in records:
        # a trial drawn ahead and never run knows no recipe (nor its template's build): none of its own
        if r.candidate and (r.candidate_info or r.state == "COMPLETE"):
            groups.setdefault(r.candidate, []).append(r)
    rows = []
    for name, rs in groups.items():
        done = [r for r in rs if r.state == "COMPLETE" and r.duplicate_of is None]
        best = done[0] if done else None
        info = (best or rs[0]).candidate_info
        recipe = info.get("recipe") if isinstance(info.get("recipe"), dict) else {}
        if recipe.get("method") == "none":  # a base model as it is: no training settings apply
            recipe = {"method": "none"}
        quant = (info.get("quantization") or {}).get("method") if isinstance(info.get("quantization"), dict) else None
        fails = [r for r in rs if r.state == "FAIL"]
        rows.append({
            # a hand-written recipe run as written keeps its own id (its template is itself)
            "recipe": name, "drawn_on": info.get("template") if info.get("template") not in (None, name) else None,
            "drawn": info.get("drawn"),
            **{k: recipe.get(k) for k in RECIPE_FIELDS}, "quantization": quant or "none",
            "trials": len(done), "best_trial": best.trial if best else None,
            "feasible": bool(best and best.feasible), "pareto": bool(best and best.pareto),
            "seen_accuracy": best.seen_accuracy if best else None,
            "unseen_accuracy": best.unseen_accuracy if best else None,
            "predicted_accuracy": best.predicted_accuracy if best else None,
            "predicted_accuracy_sd": best.predicted_accuracy_sd if best else None,
            "chars_per_s": best.chars_per_s if best else None,
            "params": {k: v for k, v in best.params.items() if k != "candidate"} if best else {},
            "config_hash": info.get("config_hash"), "build": (best or rs[0]).recipe,
            "failure": None if best else (max(fails, key=lambda r: r.trial).fail_reason if fails else rs[0].state),
        })
    # board order of each recipe's best trial; recipes with none last
    order = {r.trial: i for i, r in enumerate(records)}
    rows.sort(key=lambda row: (row["best_trial"] is None, order.get(row["best_trial"], len(order))))
    return rows


def render_recipes(board: dict[str, Any], console=None) -> None:
    """The by-recipe table of a board (board.board_records)."""
    from rich.console import Console
    from rich.table import Table

    from tournament.study.board import number_cell as num
    from tournament.study.board import recipe_cell

    def build_cell(row) -> str:
        if row["failure"] is not None:
            return f"no finished trial: {str(row['failure'])[-80:]}"
        return recipe_cell(row["build"]) if row["build"] else (row["config_hash"] or "-")[:8]

    if console is None:
        import shutil

        console = Console(width=max(180, shutil.get_terminal_size((180, 40)).columns))
    rows = recipe_rows(board["trials"])
    cal = board.get("calibration")
    table = Table(title=f"study {board['study']} · {len(rows)} recipe{'' if len(rows) == 1 else 's'} · "
                        "each by its best trial")
    table.add_column("recipe", no_wrap=True)
    for c in ("", "from", "method", "rank", "lr", "epochs", "batch", "quant", "trials", "best #", "seen",
              "unseen", "judge acc" if cal else "pred. acc", "chars/s", "build"):
        table.add_column(c, overflow="fold")
    for row in rows:
        mark = ("★" if row["pareto"] else "") + ("✓" if row["feasible"] else "")
        pred = "-" if row["predicted_accuracy"] is None else \
            f"{row['predicted_accuracy']:.3f}±{row['predicted_accuracy_sd'] or 0:.3f}"
        lr = row["learning_rate"]
        table.add_row(
            row["recipe"], mark, "drawn" if row["drawn_on"] else "written",
            str(row["method"] or "-"), str(row["rank"]) if row["method"] == "lora" and row["rank"] else "-",
            "-" if lr is None else f"{lr:.2g}", num(row["epochs"], "{:g}"), str(row["batch_size"] or "-"),
            row["quantization"], str(row["trials"]), "-" if row["best_trial"] is None else str(row["best_trial"]),
            num(row["seen_accuracy"]), num(row["unseen_accuracy"]), pred, num(row["chars_per_s"], "{:.0f}"),
            build_cell(row))
    console.print(table)
    templates = sorted({row["drawn_on"] for row in rows if row["drawn_on"]})
    console.print((f"drawn: on {', '.join(templates)}; written: run as its YAML says  ·  " if templates else "")
                  + "★ its best trial is on the Pareto front  ✓ feasible  ·  best: board order (feasible, front, "
                  "predicted accuracy, chars/s)  ·  trials: distinct finished trials of the recipe  ·  "
                  + ("judge acc: calibrated by the ledger's judge results" if cal else
                     "pred. acc: the prior blend of seen and unseen ± sd")
                  + "  ·  build: config hash · train s · peak GiB  ·  `tournament board` lists every trial")
