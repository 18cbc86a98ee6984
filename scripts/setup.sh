#!/usr/bin/env bash
# Create .venv with everything the CPU tournament and the tests need.
# torch goes first, pinned to the CPU build (a bare `torch` requirement would pull a CUDA build of
# several GB); vLLM is an extra for GPU machines only (`pip install -e '.[vllm]'`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
python -m pip install -q "torch==${TORCH_VERSION:-2.13.0}"
python -m pip install -q -e '.[serve,hf,train,sweep,data,test]'
python -c 'import torch, transformers, fastapi, optuna, mlflow; print("ready: torch", torch.__version__, "transformers", transformers.__version__)'
