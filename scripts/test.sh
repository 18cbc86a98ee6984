#!/usr/bin/env bash
# README command 2: the test suite (CPU; GPU/vLLM tests skip cleanly without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
