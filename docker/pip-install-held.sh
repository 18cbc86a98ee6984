#!/bin/sh
# pip install "$@" into the image's Python while holding every package the image already has at
# its installed version: the image's own list becomes a constraints file, so pip may add packages
# (jieba, rouge-score, modelscope, ...) but can never upgrade, downgrade or replace torch, vLLM,
# torch_musa or anything they depend on. If a requirement cannot be met without replacing one,
# pip stops with a resolver error and the build fails here, not at serve time.
set -eu
PY="${PYTHON:-$(command -v python3 || command -v python)}"
PINS=/tmp/image-pins.txt
# name==version for every installed distribution whose version is valid PEP 440 (no file:// or
# VCS references, which a constraints file rejects; odd entries are skipped, never fatal).
pins() {
  "$PY" - "$PINS" <<'PY'
import sys
from importlib import metadata
try:
    from packaging.version import InvalidVersion, Version
except ImportError:
    from pip._vendor.packaging.version import InvalidVersion, Version
seen = {}
for d in metadata.distributions():
    name, ver = d.metadata["Name"], d.version
    if not name or not ver:
        continue
    try:
        Version(ver)
    except InvalidVersion:
        continue
    seen.setdefault(name.lower().replace("_", "-"), f"{name}=={ver}")
with open(sys.argv[1], "w") as f:
    f.write("\n".join(sorted(seen.values())) + "\n")
PY
}
pins
held() { grep -iE '^(torch|torch[-_]musa|vllm|vllm[-_]metax|triton)==' "$PINS" | sort || true; }
BEFORE="$(held)"
echo "pip-install-held: $(wc -l < "$PINS") packages held; base stack: $(echo "$BEFORE" | tr '\n' ' ')"
"$PY" -m pip install --no-cache-dir -c "$PINS" "$@"
pins
AFTER="$(held)"
if [ "$BEFORE" != "$AFTER" ]; then
  echo "pip-install-held: the base stack changed (before: $BEFORE; after: $AFTER); refusing" >&2
  exit 1
fi
"$PY" - <<'PY'
import importlib.util, shutil, sys
missing = [m for m in ("fastapi", "uvicorn", "pydantic", "jieba", "rouge_score", "modelscope")
           if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"pip-install-held: still missing after install: {', '.join(missing)}")
if shutil.which("uvicorn") is None:
    sys.exit("pip-install-held: no `uvicorn` on PATH (the judge runs `uvicorn serve:app`)")
print("pip-install-held: ok:", sys.version.split()[0], "uvicorn at", shutil.which("uvicorn"))
PY
