"""The table of scripts/gpu/cold_start.sh: each compile setting's time to a healthy GET / from an
empty compile cache against its chars/s, beside the default's; then the default on one shared
cache, started twice (the second start is what a compile cache baked into the image gives).

    python3 scripts/gpu/cold_start_table.py COLD.json [FILL.json WARM.json] [--json OUT.json]

COLD.json: `tournament bench serve --compile-cache fresh --out ...` (its run "base" is the default);
FILL.json, WARM.json: `bench serve --compile-cache shared` of the default, twice on one cache.
Prints a markdown table; --json writes the rows and every run in one file. A missing or
unreadable input is a note under the table, not a crash (a GPU run that stopped half-way still
gets its table). A setting "beats the default on both" when it starts faster from a cold cache
and its median chars/s is higher."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def _read(path: str | None, notes: list[str]) -> dict[str, Any]:
    if not path:
        return {}
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        notes.append(f"{path}: not read ({type(e).__name__}: {e})")
        return {}


def setting(config: dict[str, Any] | None) -> str:
    """What a run changes in the compile settings, in words."""
    eng = (config or {}).get("engine") or {}
    parts = []
    if eng.get("enforce_eager"):
        parts.append("enforce_eager")
    if eng.get("compilation_config") is not None:
        parts.append("compilation_config=" + json.dumps(eng["compilation_config"], separators=(",", ":")))
    return ", ".join(parts) or "vLLM default"


def _row(name: str, cache: str, run: dict[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"variant": name, "cache": cache, "setting": setting(run.get("config")),
                           "engine": ((run.get("config") or {}).get("engine") or {}).get("engine", "vllm")}
    if "error" in run:
        row["error"] = run["error"]
        return row
    s = run.get("served_chars_per_s") or {}
    row.update(health_s=run.get("healthy_seconds"), chars_per_s=s.get("median"), chars_per_s_min=s.get("min"),
               chars_per_s_max=s.get("max"), accuracy=run.get("accuracy"), compile_cache=run.get("compile_cache"))
    return row


def rows(cold: dict[str, Any], fill: dict[str, Any], warm: dict[str, Any]) -> list[dict[str, Any]]:
    out = [_row("default" if name == "base" else name, "empty (cold)", run) for name, run in cold.items()]
    for label, doc in (("shared, 1st start (fills it)", fill), ("shared, 2nd start (warm)", warm)):
        if "base" in doc:
            out.append(_row("default", label, doc["base"]))
    ref = next((r for r in out if r["variant"] == "default" and r["cache"] == "empty (cold)" and "error" not in r), None)
    for r in out:
        if ref is None or "error" in r or not ref.get("chars_per_s"):
            continue
        r["pct_of_default"] = 100.0 * (r["chars_per_s"] or 0.0) / ref["chars_per_s"]
        if r is not ref and r["cache"] == "empty (cold)":
            r["beats_default_on_both"] = bool(r["health_s"] < ref["health_s"] and r["chars_per_s"] > ref["chars_per_s"])
    return out


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else fmt.format(v)


def markdown(table: list[dict[str, Any]], notes: list[str]) -> str:
    lines = ["| variant | setting | compile cache | health s | chars/s median [min–max] | % of default chars/s "
             "| accuracy | beats default on both |", "|---|---|---|---:|---:|---:|---:|---|"]
    for r in table:
        if "error" in r:
            msg = " ".join(str(r["error"]).split())[:160].replace("|", "/")
            lines.append(f"| {r['variant']} | {r['setting']} | {r['cache']} | – | error: {msg} | – | – | – |")
            continue
        both = r.get("beats_default_on_both")
        lines.append(
            f"| {r['variant']} | {r['setting']} | {r['cache']} | {_f(r['health_s'], '{:.1f}')} | "
            f"{_f(r['chars_per_s'], '{:,.0f}')} [{_f(r['chars_per_s_min'], '{:,.0f}')}–{_f(r['chars_per_s_max'], '{:,.0f}')}] | "
            f"{_f(r.get('pct_of_default'), '{:.0f} %')} | {_f(r['accuracy'], '{:.4f}')} | "
            f"{'-' if both is None else ('**yes**' if both else 'no')} |")
    if any(r.get("beats_default_on_both") is not None for r in table):
        notes.append("beats default on both: a faster start from an empty cache and a higher median chars/s; "
                     "each setting is one start, and [min–max] is the chars/s noise to weigh")
    engines = sorted({r["engine"] for r in table})
    if engines and engines != ["vllm"]:
        notes.append(f"engine {', '.join(engines)}: compile settings are vLLM's; this is a dry run of the plumbing")
    return "\n".join(lines + [""] + [f"- {n}" for n in notes]) + ("\n" if notes else "")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cold", help="bench serve --compile-cache fresh JSON (run base = the default)")
    ap.add_argument("fill", nargs="?", help="the default's first start on the shared cache")
    ap.add_argument("warm", nargs="?", help="the default's second start on the same cache")
    ap.add_argument("--json", dest="json_out", help="write the rows and every run here")
    a = ap.parse_args(argv)
    notes: list[str] = []
    cold, fill, warm = _read(a.cold, notes), _read(a.fill, notes), _read(a.warm, notes)
    table = rows(cold, fill, warm)
    if not table:
        notes.append("no runs to show")
    sys.stdout.write(markdown(table, notes))
    if a.json_out:
        Path(a.json_out).write_text(json.dumps({"rows": table, "notes": notes,
                                                "runs": {"cold": cold, "shared_fill": fill, "shared_warm": warm}},
                                               indent=1, ensure_ascii=False), encoding="utf-8")
    return 0 if table else 1


if __name__ == "__main__":
    raise SystemExit(main())
