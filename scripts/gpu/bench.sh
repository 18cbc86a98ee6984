#!/usr/bin/env bash
# Engine numbers on one GPU (issue: proof on a real GPU). Needs the prepare and vllm phases.
#   P1  serve.py (batch, through the judge emulator) vs the same engine's raw LLM.generate
#   P4  seconds from process start to a healthy GET /
#   P5  vLLM vs transformers chars/s, same model and prompts
#   the serving settings the tournament searches, one at a time against the vLLM default
# Prompts: the 192 held-out docx questions cycled to the bonus set's 358; greedy; same max_tokens.
# BENCH_ENGINE=transformers BENCH_REPEAT_TO=16 runs the same script on a CPU (dry run).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
OUT=${OUT:-/tmp/work/out}
mkdir -p "$OUT"
T="python3 -m tournament.cli"
CAND=${BENCH_CANDIDATE:-candidates/gemma-3-270m-full.yaml}
BASE=$(python3 - "$CAND" "${BENCH_ENGINE:-vllm}" <<'PY'
import json, sys
from tournament.candidates import load_candidate
from tournament.train.build import build_in_subprocess
c = load_candidate(sys.argv[1])
cfg = c.serve_overrides(str(build_in_subprocess(c)))  # training (if any) in a child; its log on stderr
cfg["engine"] = {**cfg.get("engine", {}), "engine": sys.argv[2], "gpu_memory_utilization": 0.5, "max_model_len": 1024}
cfg["decode"] = {**cfg.get("decode", {}), "max_tokens": 256, "temperature": 0.0}
cfg["dedup"] = False  # P1 compares identical work: raw generate has no dedup (the 'dedup' row shows its gain)
print(json.dumps(cfg))
PY
) || exit 1
echo "config: $BASE"
$T bench serve --config "$BASE" --questions data/build/pmpp-docx/eval.jsonl \
  --repeat-to "${BENCH_REPEAT_TO:-358}" --repeats "${BENCH_REPEATS:-3}" \
  --raw-for base --raw-for transformers \
  --variant 'transformers={"engine":{"engine":"transformers","batch_size":358}}' \
  --variant 'eager={"engine":{"enforce_eager":true}}' \
  --variant 'no-prefix-cache={"engine":{"enable_prefix_caching":false}}' \
  --variant 'dedup={"dedup":true}' \
  --variant 'max_tokens=128={"decode":{"max_tokens":128}}' \
  --out "$OUT/bench.json" --log-dir /tmp/work/bench-logs
