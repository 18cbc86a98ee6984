#!/usr/bin/env bash
# README command 2: the test suite (CPU; GPU/vLLM tests skip cleanly without a GPU).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || scripts/setup.sh
# Two test processes (pytest-xdist): most tests wait on child processes and servers, so two share
# 2 cores well (16.5 -> 12.6 min on the project's 2-core machine). TEST_WORKERS=N sets how many;
# TEST_WORKERS=0 runs the suite in one process.
workers=${TEST_WORKERS:-2}
if [ "$workers" != 0 ] && ! .venv/bin/python -c "import xdist" 2>/dev/null; then  # a .venv from before it was a test need
  .venv/bin/python -m pip install -q "pytest-xdist>=3.5" || { echo "no pytest-xdist: the tests run in one process"; workers=0; }
fi
if [ "$workers" = 0 ]; then
  .venv/bin/python -m pytest -q "$@"
else
  # loadgroup: tests marked with one xdist_group (the browser's) share a process
  .venv/bin/python -m pytest -q -n "$workers" --dist loadgroup "$@"
fi
