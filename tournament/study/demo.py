"""`tournament demo`: a small real tournament on a CPU-only machine, start to finish.

The embedded google/gemma-3-270m (no model hub: `tournament.models.embedded.ensure_gemma()`),
the transformers engine on CPU, a slice of the held-out questions, a handful of trials over cheap
variants (sweeps/demo-cpu.yaml: one-shot vs zero-shot prompt, max_tokens, repetition_penalty),
every trial served by the real serve.py and judged by the judge emulator -> Optuna study + MLflow
runs + board + Pareto plots + winner.json. Everything goes under ``runs/demo/`` (store in
``runs/demo/mlruns``, winner in ``runs/demo/winner.json``); ``--write-winner`` also writes the
repository's ``winner.json`` (repo-relative model path, for the image).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from tournament.judge.rules import PASS_MARK
from tournament.paths import REPO_ROOT

DEFAULT_CONFIG = REPO_ROOT / "sweeps" / "demo-cpu.yaml"
SPLIT_EVAL = REPO_ROOT / "data" / "build" / "pmpp-docx" / "eval.jsonl"


def run_demo(out: Path = Path("runs/demo"), trials: int = 6, questions: int = 12, config: Path | None = None,
             write_winner: bool = False, fresh: bool = False, echo: Callable[[str], None] = print) -> dict:
    from tournament.study import board
    from tournament.study.config import load_sweep_config
    from tournament.study.dashboard import mark_winner
    from tournament.study.plots import write_study_plots
    from tournament.study.optuna_storage import default_storage
    from tournament.study.sweep import SweepOptions, run_sweep
    from tournament.study.sweep_progress import SweepProgress
    from tournament.study.winner import DEFAULT_MARGIN, auto_pick, build_winner
    from tournament.study.winner import write_winner as _write

    t0 = time.time()
    cfg = load_sweep_config(config or DEFAULT_CONFIG)
    cfg.eval.limit = questions
    if not cfg.resolve_path(cfg.eval.path).exists() and SPLIT_EVAL.exists():
        cfg.eval.path, cfg.eval.set = str(SPLIT_EVAL), "basic"
    out = Path(out)
    runs = out / "mlruns"
    study = cfg.study + (time.strftime("-%Y%m%d-%H%M%S") if fresh else "")
    opts = SweepOptions(trials=trials, study=study, storage=default_storage(runs), runs_dir=runs,
                        sweep_file=Path(config or DEFAULT_CONFIG))
    echo(f"demo: {trials} trials x {questions} questions on {cfg.eval.path}; store {runs}")
    res = run_sweep(cfg, opts, echo=echo, progress=SweepProgress())  # a bar on a terminal only
    data = board.board_records(opts.storage, study, REPO_ROOT / "ledger.json")
    board.render(data, limit=20)
    plots = write_study_plots(opts.storage, study, runs, True, data)
    n, rule = auto_pick(data["trials"], data["judge"].get("pass_mark", PASS_MARK), margin=DEFAULT_MARGIN,
                        objectives=cfg.objectives)
    st = board.load_study(opts.storage, study)
    doc, _ = build_winner(st, n, rule=rule, local=True)
    demo_winner = _write(doc, out / "winner.json")
    echo(f"winner: trial {n} ({rule}) -> {demo_winner}")
    mark_winner(runs, study, doc["provenance"].get("mlflow_run_id"), n, demo_winner)  # tagged in MLflow
    if write_winner:
        doc2, warns = build_winner(st, n, rule=rule, local=False)
        for w in warns:
            echo(f"warning: {w}")
        echo(f"wrote {_write(doc2, REPO_ROOT / 'winner.json')}")
    o = res.overhead_summary()
    wall = time.time() - t0
    echo(f"demo done in {wall:.0f} s; plots: {', '.join(str(p) for p in plots)}"
         + (f"; decode-only overhead {o['overhead_ratio_median']:.1%} of generation time" if o else ""))
    echo(next_commands(runs, study, demo_winner))
    return {"wall_s": wall, "winner": str(demo_winner), "trial": n, "plots": [str(p) for p in plots],
            "complete": res.complete, "failed": res.failed}


def next_commands(runs: Path, study: str, winner: Path) -> str:
    """The demo's store is not the default ./mlruns: spell out the --runs-dir every command needs."""
    where = f"--runs-dir {runs} --study {study}"
    return "\n".join([
        "next:",
        f"  tournament board {where}          # the leaderboard again",
        f"  tournament pick --auto {where}    # ./winner.json (an image needs a published model: docs/submitting.md)",
        f"  tournament serve --winner {winner}   # serve the demo's winner on this machine",
        f"  tournament ui --runs-dir {runs}   # MLflow UI (its link opens on the trials) + optuna-dashboard",
    ])
