#!/usr/bin/env bash
# Copy carried folders into /tmp/stage (survives between calls while the machine stays warm).
set -euo pipefail
mkdir -p /tmp/stage
for d in "$@"; do
  [ -d "$d" ] || { echo "stage: $d is not here (not carried?)" >&2; exit 1; }
  cp -r "$d"/. /tmp/stage/
done
echo "staged: $(ls /tmp/stage | wc -l) files, $(du -sh /tmp/stage | cut -f1)"
