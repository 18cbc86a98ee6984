#!/usr/bin/env python
"""Benchmark (not a test): decode-only trial overhead of `tournament sweep`.

Overhead of a trial = its wall time from Optuna `ask` to `tell` minus the seconds spent inside the
judge's POST /predict calls; the ratio is overhead / generation time. The goal is <= 0.10 with a
real question count. Runs a sweep of --trials decode-only trials on one engine group and prints
per-trial numbers and the median.

    python scripts/bench_sweep_overhead.py                       # tiny random model, CPU
    python scripts/bench_sweep_overhead.py --eval data/pmpp/basic.docx --questions 100 --speed-repeats 3 --mlflow
    python scripts/bench_sweep_overhead.py --config sweeps/gpu-gemma.yaml --trials 12   # GPU machine
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="sweep file (default: the tiny model, one group, decode-only)")
    ap.add_argument("--trials", type=int, default=8)
    ap.add_argument("--questions", type=int, default=64, help="eval questions (tiny model default)")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--eval", default=None,
                    help="eval QA file for the tiny model (e.g. data/pmpp/basic.docx: real references, so "
                         "scoring costs what it costs in a real sweep); default: synthetic questions")
    ap.add_argument("--speed-repeats", type=int, default=1,
                    help="judge runs per trial for the speed median (the GPU sweep uses 3)")
    ap.add_argument("--runs-dir", default=None)
    ap.add_argument("--mlflow", action="store_true", help="also log to MLflow (background thread)")
    args = ap.parse_args()

    from tournament.study.optuna_storage import default_storage
    from tournament.study.sweep import SweepOptions, run_sweep
    from tournament.study.config import load_sweep_config, parse_sweep_config

    tmp = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    runs = Path(args.runs_dir) if args.runs_dir else tmp / "mlruns"
    if args.config:
        cfg = load_sweep_config(args.config)
        cfg.decode_trials_per_engine = args.trials  # one engine group: every trial after the first is decode-only
        cfg.speed_repeats = args.speed_repeats
    else:
        from tournament.models.tiny import build_tiny_model

        model = build_tiny_model(tmp / "model")
        qa = Path(args.eval).resolve() if args.eval else tmp / "eval.jsonl"
        if not args.eval:
            qa.write_text("".join(json.dumps({"question": f"问题 {i}: 什么是 warp 与 memory coalescing？",
                                              "answer": f"warp {i} has 32 threads"}, ensure_ascii=False) + "\n"
                                  for i in range(args.questions)), encoding="utf-8")
        cfg = parse_sweep_config({
            "study": "bench", "trials": args.trials, "decode_trials_per_engine": args.trials,
            "candidates": [{"id": "tiny", "model_path": str(model),
                            "engine": {"engine": "transformers", "device": "cpu", "batch_size": 64}}],
            "eval": {"path": str(qa), "limit": args.questions},
            "speed_repeats": args.speed_repeats,
            "judge": {"pass_mark": 0.0},
            "space": {"decode": {"max_tokens": [args.max_tokens, args.max_tokens + 1],
                                 "repetition_penalty": [1.0, 1.05, 1.1]}},
        })
    t0 = time.time()
    res = run_sweep(cfg, SweepOptions(trials=args.trials, study=f"bench-{int(t0)}", storage=default_storage(runs),
                                      runs_dir=runs, tracking=args.mlflow), echo=lambda s: print(s, file=sys.stderr))
    rows = [o for o in res.overhead if o["decode_only"]]
    print(f"{'trial':>5} {'overhead s':>10} {'ratio':>8}")
    for o in rows:
        print(f"{o['trial']:>5} {o['overhead_seconds']:>10.3f} {o['overhead_ratio']:>8.1%}")
    if rows:
        print(f"decode-only trials: {len(rows)}; overhead median {statistics.median(o['overhead_seconds'] for o in rows):.3f} s, "
              f"ratio median {statistics.median(o['overhead_ratio'] for o in rows):.1%} "
              f"(goal <= 10%); wall {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
