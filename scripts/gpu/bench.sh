#!/usr/bin/env bash
# Engine numbers on one GPU (issue: proof on a real GPU). Needs the prepare and vllm phases.
#   P1  serve.py (batch, through the judge emulator) vs the same engine's raw LLM.generate
#   P4  seconds from process start to a healthy GET /
#   P5  vLLM vs transformers chars/s, same model and prompts
#   the serving settings the tournament searches, one at a time against the vLLM default
# Prompts: the 192 held-out docx questions cycled to the bonus set's 358; greedy; same max_tokens.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
OUT=${OUT:-/tmp/work/out}
T="python3 -m tournament.cli"
MODEL=${BENCH_MODEL:-$(python3 -c 'from tournament.candidates import load_candidate, ensure_built; print(ensure_built(load_candidate("candidates/gemma-3-270m-full.yaml")))')}
PROMPT=$(python3 -c 'import json; from tournament.candidates import load_candidate; print(json.dumps(load_candidate("candidates/gemma-3-270m-full.yaml").prompt.model_dump()))')
Q=data/build/pmpp-docx/eval.jsonl
BASE=$(python3 - "$MODEL" "$PROMPT" <<'EOF'
import json, sys
print(json.dumps({"model": {"path": sys.argv[1]}, "prompt": json.loads(sys.argv[2]),
                  "engine": {"engine": "vllm", "gpu_memory_utilization": 0.5, "max_model_len": 2048},
                  "decode": {"max_tokens": 256, "temperature": 0.0}}))
EOF
)
echo "model: $MODEL"
echo "== P1 + P4 (vLLM, CUDA graphs) and P5 (transformers), raw vs served, 3 repeats"
$T bench serve --config "$BASE" --questions "$Q" --repeat-to 358 --repeats 3 \
  --variant 'transformers={"engine":{"engine":"transformers","batch_size":358}}' \
  --variant 'vllm-nodedup={"dedup":false}' \
  --out "$OUT/bench_p1_p5.json" --log-dir /tmp/work/bench-logs/p1
echo "== serving settings (served only, 3 repeats each)"
$T bench serve --config "$BASE" --questions "$Q" --repeat-to 358 --repeats 3 --skip-raw \
  --variant 'eager={"engine":{"enforce_eager":true}}' \
  --variant 'max_num_seqs=64={"engine":{"max_num_seqs":64}}' \
  --variant 'no-prefix-cache={"engine":{"enable_prefix_caching":false}}' \
  --variant 'max_tokens=128={"decode":{"max_tokens":128}}' \
  --variant 'max_tokens=512={"decode":{"max_tokens":512}}' \
  --out "$OUT/bench_settings.json" --log-dir /tmp/work/bench-logs/settings
