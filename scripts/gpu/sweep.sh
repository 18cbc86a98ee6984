#!/usr/bin/env bash
# The tournament on one GPU: sweep -> board (+ Pareto plots) -> pick -> the winner served from
# winner.json exactly as the judge image serves it, judged on the held-out basic and bonus sets,
# (with JUDGE_OLD_WAY=1 also the "old way": the same build with temperature 0.7, top_p 0.9, top_k 50,
# max_tokens 512).
# SWEEP_CONFIG / SWEEP_TRIALS override the defaults; SWEEP_TIMEOUT (seconds, builds included): no
# trial starts after it, so the phases after the sweep keep their share of a device session.
# A CPU dry run uses sweeps/demo-cpu.yaml.
# SWEEP_OVERLAY='{"speed_repeats": 2, "judge": {"cold_start": false}}' (JSON, or a JSON file such as
# scripts/gpu/overlays/one-session.json) merges over the sweep file (dicts merged, other values
# replaced) into sweeps/.overlay.yaml, run instead: a proof that must fit one device session.
# SWEEP_OVERLAY_EXTRA='{"judge": {"set": "bonus"}}' (JSON) merges over that too: the same proof
# with the winner picked on the bonus set (P2 then runs on the set the winner was picked for).
# SWEEP_JUDGE_WINNER=0: pick writes winner.json, which is not served and judged again afterwards.
# SWEEP_GPUS=0,1: one worker per GPU (builds spread over them first); SWEEP_STORAGE: the Optuna
# storage URL (e.g. journal:/tmp/work/mlruns/optuna.journal) that board and pick then read too.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
OUT=${OUT:-/tmp/work/out}
RUNS=${RUNS:-/tmp/work/mlruns}
mkdir -p "$OUT" "$RUNS"
T="python3 -m tournament.cli"
CONFIG=${SWEEP_CONFIG:-sweeps/gpu-gemma.yaml}
if [ -n "${SWEEP_OVERLAY:-}" ]; then
  python3 scripts/gpu/merge_overlay.py "$CONFIG" sweeps/.overlay.yaml || exit 1
  CONFIG=sweeps/.overlay.yaml
  echo "sweep overlay: $SWEEP_OVERLAY${SWEEP_OVERLAY_EXTRA:+ + $SWEEP_OVERLAY_EXTRA}" | tee "$OUT/overlay.txt"
fi
t0=$SECONDS
ST=(${SWEEP_STORAGE:+--storage "$SWEEP_STORAGE"})
$T sweep --config "$CONFIG" ${SWEEP_TRIALS:+--trials $SWEEP_TRIALS} ${SWEEP_TIMEOUT:+--timeout $SWEEP_TIMEOUT} ${SWEEP_GPUS:+--gpus $SWEEP_GPUS} ${ST[@]+"${ST[@]}"} \
  --runs-dir "$RUNS" --json > "$OUT/sweep.json" 2> "$OUT/sweep.err"
rc=$?; echo "sweep wall $((SECONDS - t0)) s"; tail -3 "$OUT/sweep.err"
[ $rc = 0 ] || { echo "sweep failed (exit $rc)"; tail -40 "$OUT/sweep.err"; exit 1; }
$T board --runs-dir "$RUNS" ${ST[@]+"${ST[@]}"} --json > "$OUT/board.json"
COLUMNS=200 $T board --runs-dir "$RUNS" ${ST[@]+"${ST[@]}"} --limit 60 > "$OUT/board.txt" 2>&1
# a row per recipe, each by its best trial: the recipe proof's table of drawn against hand-written
COLUMNS=200 $T board --runs-dir "$RUNS" ${ST[@]+"${ST[@]}"} --by-recipe --no-plots > "$OUT/board-recipes.txt" 2>&1
cp "$RUNS"/studies/*/pareto.png "$OUT/" 2>/dev/null
t1=$SECONDS
$T pick --auto --local --runs-dir "$RUNS" ${ST[@]+"${ST[@]}"} --out /tmp/work/winner.json | tee "$OUT/pick.txt"
cp /tmp/work/winner.json "$OUT/winner.json"
if [ "${SWEEP_JUDGE_WINNER:-1}" = 1 ]; then
  python3 scripts/gpu/judge_winner.py /tmp/work/winner.json "$OUT/final.json" | tee "$OUT/final.txt"
else  # a proof on the clock (the recipe sweep's): the sweep's own trials are the table
  echo '{"skipped": "SWEEP_JUDGE_WINNER=0"}' > "$OUT/final.json"
fi
echo "pick + serve winner.json + judge: $((SECONDS - t1)) s"
