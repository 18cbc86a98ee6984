# Sourced by scripts/setup.sh and scripts/quickstart.sh: one line per stage, with its time.
# A stage's own output (pip's notices, the setuptools warning block, progress bars of the GGUF
# conversion, weight loading and shard writing) goes to .venv/setup.log, shown only when the stage
# fails; with -v (VERBOSE=1) it goes to the terminal as it comes.
VERBOSE=${VERBOSE:-0}
SETUP_LOG=${SETUP_LOG:-.venv/setup.log}

stage() {  # stage LABEL COMMAND...
  local label=$1 t0=$SECONDS
  shift
  if [ "$VERBOSE" = 1 ]; then
    echo "$label ..."
    if "$@"; then echo "$label: $((SECONDS - t0)) s"; else echo "$label: failed after $((SECONDS - t0)) s"; exit 1; fi
    return
  fi
  printf '%s ... ' "$label"
  echo "== $label" >>"$SETUP_LOG"
  if "$@" >>"$SETUP_LOG" 2>&1; then
    echo "$((SECONDS - t0)) s"
  else
    echo "failed after $((SECONDS - t0)) s; the end of its output ($SETUP_LOG):"
    tail -n 40 "$SETUP_LOG"
    exit 1
  fi
}
