#!/usr/bin/env bash
# Cold start vs speed for vLLM's compile settings (engine.compilation_config, enforce_eager).
# The judge builds a fresh container, so its server starts from an empty vLLM compile cache. Each
# variant below is started from a new, empty cache (bench serve --compile-cache fresh): its time
# to a healthy GET / is set against its chars/s on the same questions. Then the default twice on
# one shared cache: the second start is what a compile cache baked into the image at build time
# would give. A setting is adopted only if it beats the default on both numbers.
#   default                     the config as given, with vLLM's default compile settings
#   eager                       {"engine":{"enforce_eager":true}}: no compile, no CUDA graphs
#   nocompile-fullgraph-decode  {"engine":{"compilation_config":{"mode":0,"cudagraph_mode":"FULL_DECODE_ONLY"}}}
#   nocompile-fullgraph         {"engine":{"compilation_config":{"mode":0,"cudagraph_mode":"FULL"}}}
#   compile-eager-backend       {"engine":{"compilation_config":{"backend":"eager"}}}: Dynamo's trace and
#                               the piecewise CUDA graphs, without Inductor's code generation (the key
#                               exists in vLLM 0.10 too, unlike cudagraph_mode)
#   compile-piecewise           {"engine":{"compilation_config":{"cudagraph_mode":"PIECEWISE"}}} (only
#                               when named in COLD_VARIANTS)
# Inputs (environment):
#   COLD_CONFIG     required: a ServeConfig JSON or a winner.json (file or inline JSON; a relative
#                   model path is relative to the file), or a candidate YAML (built first if needed)
#   COLD_QUESTIONS  data/build/pmpp-docx/eval.jsonl (the 192 held-out questions; built when missing)
#   COLD_REPEAT_TO  358 (the questions cycled to the bonus set's size)
#   COLD_REPEATS    3 (judge runs per server start; chars/s is their median)
#   COLD_VARIANTS   by name; default: eager nocompile-fullgraph-decode nocompile-fullgraph
#                   compile-eager-backend; "" runs the default alone (plus the shared pair)
#   COLD_WARM       1: the shared-cache pair; 0 skips it
#   COLD_ENGINE     overrides the config's engine (transformers: the CPU dry run)
#   COLD_WORK       /tmp/work/cold (server logs, the shared cache)      OUT  /tmp/work/out
# Writes $OUT/cold_start.json (rows + every run), $OUT/cold_start.md (the table) and
# $OUT/cold_start_logs.tgz (the server logs: vLLM's own breakdown of each start).
# CPU dry run (plumbing and table; the compile settings are vLLM's and do nothing there):
#   COLD_CONFIG='{"model":{"path":"/tmp/tiny"},"engine":{"device":"cpu"}}' COLD_ENGINE=transformers \
#   COLD_VARIANTS=eager COLD_REPEAT_TO=16 COLD_REPEATS=1 bash scripts/gpu/cold_start.sh
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$REPO"
: "${COLD_CONFIG:?set COLD_CONFIG to a ServeConfig JSON, a winner.json or a candidate YAML}"
OUT=${OUT:-/tmp/work/out}
W=${COLD_WORK:-/tmp/work/cold}
mkdir -p "$OUT" "$W"
rm -rf "$W/logs" "$W/shared-cache" "$W"/*.json
T="python3 -m tournament.cli"
Q=${COLD_QUESTIONS:-data/build/pmpp-docx/eval.jsonl}
if [ ! -f "$Q" ] && [ -z "${COLD_QUESTIONS:-}" ]; then
  $T data build --split data/splits/pmpp-docx.yaml || exit 1
fi

# The base config, as a file (a long inline JSON is no valid argument path): vLLM's default compile
# settings, whatever the config says about them (the variants change exactly those).
python3 - "$COLD_CONFIG" "${COLD_ENGINE:-}" > "$W/base.json" <<'PY' || exit 1
import json, sys
from pathlib import Path
src, engine = sys.argv[1], sys.argv[2]
inline = src.lstrip().startswith("{")
p = None if inline else Path(src)
if p is not None and p.suffix in (".yaml", ".yml"):
    from tournament.candidates import load_candidate
    from tournament.train.build import build_in_subprocess
    c = load_candidate(p)
    cfg = c.serve_overrides(str(build_in_subprocess(c)))  # training (if any) in a child; its log on stderr
else:
    doc = json.loads(src if inline else p.read_text())
    cfg = doc.get("serve", doc)
    mp = (cfg.get("model") or {}).get("path")
    if p is not None and mp and not Path(mp).is_absolute():  # as serve.py reads a winner.json
        cfg["model"]["path"] = str(p.resolve().parent / mp)
eng = dict(cfg.get("engine") or {})
given = {k: eng[k] for k in ("compilation_config", "enforce_eager") if eng.get(k)}
if given:
    print(f"note: the config sets {given}; 'default' runs with vLLM's defaults instead", file=sys.stderr)
eng.update(compilation_config=None, enforce_eager=False, **({"engine": engine} if engine else {}))
cfg["engine"] = eng
from tournament.serving.config import ServeConfig
ServeConfig.model_validate(cfg)  # a bad config stops here, not in five server starts
print(json.dumps(cfg))
PY
echo "config: $(cat "$W/base.json")"

ARGS=(--config "$W/base.json" --questions "$Q" --repeat-to "${COLD_REPEAT_TO:-358}"
      --repeats "${COLD_REPEATS:-3}" --skip-raw)
VARIANT_ARGS=()
for v in ${COLD_VARIANTS-eager nocompile-fullgraph-decode nocompile-fullgraph compile-eager-backend}; do
  case "$v" in
  eager) VARIANT_ARGS+=(--variant 'eager={"engine":{"enforce_eager":true}}') ;;
  nocompile-fullgraph-decode) VARIANT_ARGS+=(--variant 'nocompile-fullgraph-decode={"engine":{"compilation_config":{"mode":0,"cudagraph_mode":"FULL_DECODE_ONLY"}}}') ;;
  nocompile-fullgraph) VARIANT_ARGS+=(--variant 'nocompile-fullgraph={"engine":{"compilation_config":{"mode":0,"cudagraph_mode":"FULL"}}}') ;;
  compile-eager-backend) VARIANT_ARGS+=(--variant 'compile-eager-backend={"engine":{"compilation_config":{"backend":"eager"}}}') ;;
  compile-piecewise) VARIANT_ARGS+=(--variant 'compile-piecewise={"engine":{"compilation_config":{"cudagraph_mode":"PIECEWISE"}}}') ;;
  *) echo "unknown variant $v (COLD_VARIANTS)" >&2; exit 2 ;;
  esac
done

t0=$SECONDS
echo "== every start from an empty compile cache"
$T bench serve "${ARGS[@]}" ${VARIANT_ARGS[@]+"${VARIANT_ARGS[@]}"} --compile-cache fresh \
  --out "$W/cold.json" --log-dir "$W/logs/cold"
WARM=()
if [ "${COLD_WARM:-1}" = 1 ]; then
  # One cache for both starts (vLLM's, inductor's, Triton's), empty before the first.
  export VLLM_CACHE_ROOT="$W/shared-cache" TORCHINDUCTOR_CACHE_DIR="$W/shared-cache/inductor" \
    TRITON_CACHE_DIR="$W/shared-cache/triton"
  for i in 1 2; do
    echo "== the default on one shared compile cache, start $i of 2"
    $T bench serve "${ARGS[@]}" --compile-cache shared --out "$W/shared-$i.json" --log-dir "$W/logs/shared-$i"
  done
  du -sh "$W/shared-cache" 2>/dev/null | sed 's/^/shared compile cache: /'
  rm -rf "$W/shared-cache"  # measured; `run.sh collect` must not carry it back
  WARM=("$W/shared-1.json" "$W/shared-2.json")
fi
echo "cold start runs: $((SECONDS - t0)) s"
python3 scripts/gpu/cold_start_table.py "$W/cold.json" ${WARM[@]+"${WARM[@]}"} --json "$OUT/cold_start.json" \
  | tee "$OUT/cold_start.md"
rc=${PIPESTATUS[0]}
tar -czf "$OUT/cold_start_logs.tgz" -C "$W" logs 2>/dev/null
exit "$rc"
