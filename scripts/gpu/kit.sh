#!/usr/bin/env bash
# Build the whole offline GPU kit under DEST from nothing, then check it here (needs PyPI).
# Usage: scripts/gpu/kit.sh [--relock] DEST          e.g. scripts/gpu/kit.sh .gpu
#   DEST/vllm/c00 ..   vLLM 0.26.0 + the wheels it needs: one tar stream in CHUNK_MB parts
#                      (../shared/scripts/vllm-kit.sh), plus vllm-kit.count (how many parts)
#   DEST/gemma/p00 ..  the gemma-3-270m GGUF in parts; DEST/gemma/whl the gguf wheel
#                      (../shared/scripts/gemma-parts.sh) and gemma-tokenizer.tgz (its tokenizer,
#                      rebuilt and checked here: the machine's transformers rebuilds it wrong)
#   DEST/whl/w00 ..    tournament's own runtime wheels (scripts/gpu/kit.lock), <= CHUNK_MB each
#   DEST/README.txt    every folder, wheel and version, and the upload table (also printed)
# --relock: resolve tournament's needs afresh (pyproject.toml's core + serve/sweep/data, for
#   CPython 3.12 on Linux x86_64) and rewrite scripts/gpu/kit.lock, then build from it.
# Env: VLLM_KIT, GEMMA_PARTS (the shared scripts), PY312 (a Python 3.12), CHUNK_MB (default 50),
#   KEEP_TMP=1 (keep the scratch folder), KIT_CHECK_MODULES (see kit_check.py).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$REPO/scripts/gpu
LOCK=$HERE/kit.lock
RELOCK=0
if [ "${1:-}" = "--relock" ]; then RELOCK=1; shift; fi
DEST_ARG=${1:?usage: scripts/gpu/kit.sh [--relock] DEST}
mkdir -p "$DEST_ARG"
DEST=$(cd "$DEST_ARG" && pwd)
CHUNK_MB=${CHUNK_MB:-50}
VLLM_KIT=${VLLM_KIT:-$REPO/../shared/scripts/vllm-kit.sh}
GEMMA_PARTS=${GEMMA_PARTS:-$REPO/../shared/scripts/gemma-parts.sh}
t0=$SECONDS
step() { echo; echo "== [$((SECONDS - t0)) s] $*"; }

# The machine runs Python 3.12, so resolving, building and checking use a 3.12 too (pyenv's shim
# may refuse `python3.12` unless that version is selected: look in pyenv's versions as well).
find_py312() {
  local c
  for c in "${PY312:-}" python3.12 "$(pyenv root 2>/dev/null || echo "$HOME/.pyenv")"/versions/3.12*/bin/python3.12; do
    if [ -n "$c" ] && "$c" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  echo "kit.sh: no Python 3.12 found (set PY312)" >&2; return 1
}
PY=$(find_py312)
LOCKPY=("$PY" "$HERE/kit_lock.py")
for s in "$VLLM_KIT" "$GEMMA_PARTS"; do [ -f "$s" ] || { echo "kit.sh: $s is missing" >&2; exit 1; }; done

export PIP_ROOT_USER_ACTION=ignore  # root here; the installs below go into scratch --target folders
TMP=$(mktemp -d)
if [ "${KEEP_TMP:-0}" = 1 ]; then echo "scratch: $TMP"; else trap 'rm -rf "$TMP"' EXIT; fi

# What the machine can install: CPython 3.12, x86_64, glibc >= 2.28 (its torch wheel needs that).
# pip does not widen a manylinux_2_28 platform to older glibc tags by itself, so name them all.
TARGET=(--only-binary=:all: --python-version 3.12 --implementation cp)
for v in $(seq 28 -1 17); do TARGET+=(--platform "manylinux_2_${v}_x86_64"); done
TARGET+=(--platform manylinux2014_x86_64 --platform manylinux_2_5_x86_64 --platform manylinux1_x86_64)

# Only the parts kit.sh builds are replaced; anything else in DEST is left alone.
rm -rf "$DEST/vllm" "$DEST/gemma" "$DEST/whl" "$DEST/README.txt"

step "1/6 the vLLM kit ($VLLM_KIT, CHUNK_MB=$CHUNK_MB)"
CHUNK_MB=$CHUNK_MB bash "$VLLM_KIT" "$DEST/vllm" > "$TMP/vllm-kit.log" 2>&1 || { cat "$TMP/vllm-kit.log"; exit 1; }
# Its SHA256SUMS (inside the stream) lists its wheels: their versions are the ones the project's
# wheels must use too. run.sh's chain waits for as many parts as vllm-kit.count says (written into
# the last, smallest part's folder: the full ones are exactly CHUNK_MB already).
cat "$DEST"/vllm/c*/vllm-kit.tar.part* | tar -xOf - ./SHA256SUMS > "$TMP/vllm-sums"
NPARTS=$(ls -d "$DEST"/vllm/c* | wc -l)
LAST=$(ls -d "$DEST"/vllm/c* | tail -1)
echo "$NPARTS" > "$LAST/vllm-kit.count"
echo "$NPARTS parts, $(grep -c '\.whl$' "$TMP/vllm-sums") wheels"

step "2/6 the gemma parts ($GEMMA_PARTS)"
CHUNK_MB=$CHUNK_MB bash "$GEMMA_PARTS" "$DEST/gemma" > "$TMP/gemma.log" 2>&1 || { cat "$TMP/gemma.log"; exit 1; }
echo "$(ls -d "$DEST"/gemma/p* | wc -l) parts + $(ls "$DEST"/gemma/whl)"
# The machine's transformers (5.17) rebuilds gemma-3's tokenizer from the GGUF wrong (English words cut
# into pieces: tournament/models/tokenizer_check.py); ship the files of a right rebuild, made and
# checked here (TOKPY: a Python with the project, transformers >= 5.25 and gguf), beside the gguf
# wheel. run.sh unpacks it and points TOURNAMENT_GGUF_TOKENIZER at it.
TOKPY=${TOKPY:-$REPO/.venv/bin/python}
[ -x "$TOKPY" ] || TOKPY=python3
cat "$DEST"/gemma/p*/gemma.gguf.part* > "$TMP/gemma.gguf"
(cd "$REPO" && PYTHONPATH="$REPO" "$TOKPY" -m tournament.cli models export-tokenizer "$TMP/gemma.gguf" "$TMP/gemma-tokenizer") \
  || { echo "kit.sh: could not export a checked gemma tokenizer (TOKPY=$TOKPY)" >&2; exit 1; }
tar -czf "$DEST/gemma/whl/gemma-tokenizer.tgz" -C "$TMP/gemma-tokenizer" .
rm -f "$TMP/gemma.gguf"
echo "gemma-tokenizer.tgz: $(du -h "$DEST/gemma/whl/gemma-tokenizer.tgz" | cut -f1)"

step "3/6 tournament's wheels ($([ $RELOCK = 1 ] && echo "relock: resolving afresh" || echo "from kit.lock"))"
HASHES=(--require-hashes)
if [ $RELOCK = 1 ]; then
  # Resolve with pip's own resolver on a 3.12 (markers as on the machine), then pin what it chose
  # (the vLLM kit's version wins where both ship a package); hashes come from the files below.
  "${LOCKPY[@]}" requirements --pyproject "$REPO/pyproject.toml" --req "$TMP/req.in" --constraints "$TMP/constraints.txt"
  "$PY" -m pip install -q --dry-run --ignore-installed --report "$TMP/report.json" -r "$TMP/req.in" -c "$TMP/constraints.txt"
  "${LOCKPY[@]}" pins --report "$TMP/report.json" --kit-sums "$TMP/vllm-sums" > "$TMP/pins.txt"
  "${LOCKPY[@]}" pip-reqs --unhashed --lock "$TMP/pins.txt" --wheels "$TMP/wheels.txt" --sdists "$TMP/sdists.txt"
  HASHES=()
else
  "${LOCKPY[@]}" pip-reqs --lock "$LOCK" --wheels "$TMP/wheels.txt" --sdists "$TMP/sdists.txt"
fi
"$PY" -m pip download -q --no-deps "${TARGET[@]}" "${HASHES[@]}" -d "$TMP/dl" -r "$TMP/wheels.txt"
# jieba and rouge-score have no wheel on the index: fetch the (hash-pinned) sdist, build here.
if [ -s "$TMP/sdists.txt" ]; then
  "$PY" -m pip download -q --no-deps --no-binary=:all: "${HASHES[@]}" -d "$TMP/dl" -r "$TMP/sdists.txt"
fi
if [ $RELOCK = 1 ]; then "${LOCKPY[@]}" write-lock --pins "$TMP/pins.txt" --dir "$TMP/dl" --out "$LOCK"; fi
"${LOCKPY[@]}" verify --lock "$LOCK" --dir "$TMP/dl" --sort-into "$TMP/by-kind"
mkdir -p "$TMP/by-kind/wheel" "$TMP/by-kind/check-only" "$TMP/built"
for s in "$TMP"/by-kind/sdist/*; do
  [ -e "$s" ] || continue
  "$PY" -m pip wheel -q --no-deps -w "$TMP/built" "$s"
done
for w in "$TMP"/built/*.whl; do
  [ -e "$w" ] || continue
  # A wheel built here must run anywhere: pure Python only.
  case "$w" in *-none-any.whl) mv "$w" "$TMP/by-kind/wheel/" ;; *) echo "kit.sh: $w is not pure Python" >&2; exit 1 ;; esac
done

step "4/6 one version per package across the kit; folders of <= $CHUNK_MB MiB"
# Two versions of one package in a `pip install --no-deps` stop it; the vLLM kit is installed
# into the same --target later, so a package both ship must be the very same file.
"${LOCKPY[@]}" one-version --kit-sums "$TMP/vllm-sums" "$TMP/by-kind/wheel" "$DEST/gemma/whl"
"${LOCKPY[@]}" pack --src "$TMP/by-kind/wheel" --dest "$DEST/whl" --mb "$CHUNK_MB"

step "5/6 the check: the project's wheels alone (+ numpy, protobuf as on the machine), Python 3.12"
# As run.sh installs them there (--no-compile: compiling all of plotly and mlflow takes a minute).
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$TMP/site" "$DEST"/whl/w*/*.whl
"$PY" -m pip install -q --no-index --no-deps --no-compile --target "$TMP/machine" "$TMP"/by-kind/check-only/*.whl
# Same order as on the machine: the kit first, then the repo, then what the machine has.
if ! (cd "$TMP" && PYTHONNOUSERSITE=1 PYTHONPATH="$TMP/site:$REPO:$TMP/machine" \
      "$PY" -s "$HERE/kit_check.py" --repo "$REPO" --work "$TMP/check"); then
  echo "kit.sh: the kit check FAILED (see above); the folders are in $DEST but incomplete" >&2
  exit 1
fi

step "6/6 $DEST_ARG/README.txt and the upload table"
"${LOCKPY[@]}" readme --dest "$DEST" --prefix "$DEST_ARG" --lock "$LOCK" --kit-sums "$TMP/vllm-sums" --mb "$CHUNK_MB"
echo "kit built and checked in $((SECONDS - t0)) s: $DEST"
