#!/usr/bin/env python
"""Benchmark (not a test): time per optimizer step and peak memory of one training build.

Each run is a fresh process (`python -m tournament.cli train ... --json`) on a tiny random model
(or --model DIR) and a synthetic QA file; it reports the build's `train_seconds / steps` and the
process's peak RSS (CPU) or the build's recorded peak memory. --repeat runs it several times and
prints the median.

    python scripts/bench_train.py --method full                   # the tests' tiny model, CPU
    python scripts/bench_train.py --model models/gemma-3-270m --steps 20 --batch-size 8 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="HF model directory (default: a tiny random Llama)")
    ap.add_argument("--hidden-size", type=int, default=64, help="of the tiny model")
    ap.add_argument("--layers", type=int, default=2, help="of the tiny model")
    ap.add_argument("--method", default="full", choices=["full", "lora"])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--recipe", default="{}", help="extra recipe keys as JSON, e.g. '{\"liger\": true}'")
    args = ap.parse_args()

    import yaml

    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    model = Path(args.model) if args.model else None
    if model is None:
        from tournament.models.tiny import build_tiny_model

        model = build_tiny_model(work / "model", hidden_size=args.hidden_size, num_layers=args.layers)
    rows = [{"question": f"问题 {i}：什么是 warp {i % 7}？", "answer": "warp 是 SM 中线程调度的单位，32 个线程以 SIMD 方式执行。" * (1 + i % 3)}
            for i in range(args.batch_size * args.steps)]
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    per_step, peaks = [], []
    for i in range(args.repeat):
        yml = work / f"c{i}.yaml"
        recipe = {"method": args.method, "dataset": str(data), "batch_size": args.batch_size, "epochs": 1,
                  "max_length": args.max_length, "learning_rate": 1e-4, "seed": i, **json.loads(args.recipe)}
        yml.write_text(yaml.safe_dump({"id": f"bench-{i}", "base": {"path": str(model.resolve())},
                                       "prompt": {"style": "plain"}, "recipe": recipe}))
        cmd = [sys.executable, "-c", CHILD, str(yml), str(work / "builds"), args.device, str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        if out.returncode != 0:
            print(out.stdout + out.stderr, file=sys.stderr)
            return 1
        res = json.loads(out.stdout.strip().splitlines()[-1])
        per_step.append(res["train_seconds"] / res["steps"])
        peaks.append(res["peak_bytes"])
        print(f"run {i}: {res['steps']} steps, {per_step[-1] * 1000:.1f} ms/step, peak {peaks[-1] / 2**20:.0f} MiB "
              f"({res['peak_kind']})", flush=True)
    print(json.dumps({"ms_per_step_median": round(statistics.median(per_step) * 1000, 1),
                      "peak_mib_median": round(statistics.median(peaks) / 2**20), "runs": args.repeat,
                      "method": args.method, "device": args.device}))
    return 0


# one build in a fresh process; the peak RSS is this process's (model load included)
CHILD = """
import json, resource, sys
from pathlib import Path
from tournament.candidates import load_candidate
from tournament.train.build import ensure_built
model_dir = ensure_built(load_candidate(sys.argv[1]), Path(sys.argv[2]), device=sys.argv[3],
                         max_steps=int(sys.argv[4]), force=True)
doc = json.loads((model_dir.parent / "candidate.json").read_text())
tr = doc["train"]
peak = (tr.get("peak_memory") or {}).get("bytes")
kind = (tr.get("peak_memory") or {}).get("kind") or "ru_maxrss"
if peak is None or kind == "cpu_max_rss":
    peak, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpu_max_rss"
print(json.dumps({"steps": tr["steps"], "train_seconds": tr["train_seconds"], "peak_bytes": peak, "peak_kind": kind}))
"""

if __name__ == "__main__":
    raise SystemExit(main())
