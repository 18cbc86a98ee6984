#!/usr/bin/env bash
# Create .venv with everything the CPU tournament and the tests need.   scripts/setup.sh [-v]
# torch goes first, pinned to the CPU build (a bare `torch` requirement would pull a CUDA build of
# several GB); vLLM is an extra for GPU machines only (`pip install -e '.[vllm]'`).
# Each stage prints one line: what it does, then its time; its own output goes to .venv/setup.log
# (shown if it fails). -v shows everything as it comes.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
TORCH=${TORCH_VERSION:-2.13.0}
case "${1:-}" in -v | --verbose) export VERBOSE=1 ;; esac
. scripts/stage.sh

[ -d .venv ] || "$PY" -m venv .venv
: >"$SETUP_LOG"
. .venv/bin/activate
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu on a machine where PyPI's torch is the CUDA
# build (plain Linux): the CPU wheel is ~200 MB instead of several GB. Where a CPU torch is already
# offered (these project machines, macOS), the plain pin takes it.
install_torch() {
  python -m pip install -q --upgrade pip &&
    python -m pip install -q "torch==$TORCH" ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
}
stage "setup 1/2: torch $TORCH${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL}" install_torch
stage "setup 2/2: tournament and its extras (serve, hf, train, sweep, data, test)" \
  python -m pip install -q -e '.[serve,hf,train,sweep,data,test]'
python -c 'import torch, transformers, fastapi, optuna, mlflow; print("ready: torch", torch.__version__, "transformers", transformers.__version__)'
