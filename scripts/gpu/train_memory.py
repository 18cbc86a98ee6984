"""Peak GPU memory and time of training builds, with and without Liger's kernels: each candidate
YAML is trained once per `liger` setting (a compute-only field: the same config hash, so each
setting gets its own builds folder), then one table row per build from its candidate.json, with
how many such builds fit side by side on this GPU (tournament.train.memory.builds_that_fit, the
rule `build_workers: auto` uses). TRAINMEM_MAX_STEPS caps every build (`--max-steps`: a short,
comparable run); TRAINMEM_TOGETHER="N[:liger] ..." then also trains N builds of the first
candidate at once for each entry (Liger on unless `:false`: what `build_workers` would run side by
side) and reports their combined steps per second against one build without Liger.
Every build runs as the sweep's build children do: PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
unless the variable is set (train/build.py), so the reserved peak is the one `auto` plans with.
Usage: train_memory.py OUT_DIR WORK_DIR CANDIDATE.yaml [...]   (TRAINMEM_LIGER="true false")"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

from tournament.train.build import BUILD_ALLOC_CONF
from tournament.train.memory import builds_that_fit, free_gpu_bytes


def command(candidate: Path, liger: str, work: Path, tag: str = "") -> tuple[list[str], Path, dict, Path]:
    """The `tournament train` command of one build with `recipe.liger` set, its builds folder, the
    candidate document and the YAML it trains."""
    doc = yaml.safe_load(candidate.read_text(encoding="utf-8"))
    doc["recipe"]["liger"] = {"true": True, "false": False}.get(liger, liger)
    yml = work / f"{doc['id']}-liger-{liger}{tag}.yaml"
    yml.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    builds = work / f"builds-liger-{liger}{tag}"
    steps = os.environ.get("TRAINMEM_MAX_STEPS")
    return ([sys.executable, "-m", "tournament.cli", "train", str(yml), "--builds", str(builds), "--no-track",
             "--json", "--force"] + (["--max-steps", steps] if steps else []), builds, doc, yml)  # --force: never stale


ALLOC_CONF = os.environ.setdefault("PYTORCH_CUDA_ALLOC_CONF", BUILD_ALLOC_CONF)  # children inherit it


def newest_manifest(builds: Path, candidate_id: str) -> Path | None:
    """The candidate.json this run wrote: a builds folder may also hold an earlier run's build of
    the candidate (another --max-steps is another config hash, so another folder)."""
    found = list(builds.glob(f"{candidate_id}-*/candidate.json"))
    return max(found, key=lambda f: f.stat().st_mtime_ns) if found else None


def together(candidate: Path, n: int, work: Path, liger: str = "true") -> dict:
    """N builds at once on this GPU: their combined optimizer steps per second."""
    runs = [command(candidate, liger, work, f"-x{n}-{i}") for i in range(n)]
    t0 = time.monotonic()
    procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for cmd, *_ in runs]
    codes = [p.wait() for p in procs]
    wall = time.monotonic() - t0
    steps = 0
    for code, (_, builds, doc, _) in zip(codes, runs):
        # a failed run's folder may still hold an earlier run's build: count only those that ended well
        if code == 0 and (f := newest_manifest(builds, doc["id"])) is not None:
            steps += json.loads(f.read_text(encoding="utf-8"))["train"].get("steps") or 0
    return {"builds_at_once": n, "liger": liger, "ok": codes.count(0), "wall_s": round(wall, 1), "steps": steps,
            "steps_per_s": round(steps / wall, 2) if wall else None, "alloc_conf": ALLOC_CONF}


def train(candidate: Path, liger: str, work: Path) -> dict:
    cmd, builds, doc, yml = command(candidate, liger, work)
    t0 = time.monotonic()
    out = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    (work / f"{yml.stem}.log").write_text(out.stdout + out.stderr, encoding="utf-8")
    row = {"candidate": doc["id"], "method": doc["recipe"]["method"], "liger_setting": liger,
           "wall_s": round(wall, 1), "ok": out.returncode == 0, "alloc_conf": ALLOC_CONF}
    manifest = newest_manifest(builds, doc["id"])
    if out.returncode != 0 or manifest is None:
        row.update(ok=False, error=(out.stderr or out.stdout or "no candidate.json written")[-600:])
        return row
    tr = json.loads(manifest.read_text(encoding="utf-8"))["train"]
    peak = tr.get("peak_memory") or {}
    row.update({"liger_used": tr.get("liger"), "fused_loss": tr.get("liger_fused_loss"), "train_s": round(tr.get("train_seconds") or 0, 1),
                "steps": tr.get("steps"), "peak_allocated_gib": round((peak.get("bytes") or 0) / 2**30, 2),
                "peak_reserved_gib": round((peak.get("reserved_bytes") or 0) / 2**30, 2)})
    free = free_gpu_bytes(0)
    if free and peak.get("reserved_bytes"):
        row["fit_side_by_side"] = builds_that_fit([peak["reserved_bytes"]], free)
    return row


def main() -> None:
    out, work = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for cand in sys.argv[3:]:
        for liger in os.environ.get("TRAINMEM_LIGER", "true false").split():
            rows.append(train(Path(cand), liger, work))
            print(json.dumps(rows[-1]), flush=True)
            (out / "trainmem.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")  # after each build
    lines = ["| candidate | liger (set → used) | train s | wall s | peak allocated GiB | peak reserved GiB | "
             "fit side by side |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        if not r["ok"]:
            lines.append(f"| {r['candidate']} | {r['liger_setting']} | failed: {r.get('error', '')[:120]!r} | | | | |")
            continue
        lines.append(f"| {r['candidate']} | {r['liger_setting']} → {r['liger_used']} | {r['train_s']} | {r['wall_s']} | "
                     f"{r['peak_allocated_gib']} | {r['peak_reserved_gib']} | {r.get('fit_side_by_side', '-')} |")
    alone = next((r for r in rows if r["ok"] and r["liger_setting"] == "false"), None)
    one = f"{alone['steps'] / alone['wall_s']:.2f}" if alone and alone.get("steps") and alone.get("wall_s") else "-"
    for entry in os.environ.get("TRAINMEM_TOGETHER", "").split():
        n_text, _, liger = entry.partition(":")
        n = int(n_text or 0)
        if n < 2 or not sys.argv[3:]:
            continue
        both = together(Path(sys.argv[3]), n, work, liger or "true")
        print(json.dumps(both), flush=True)
        rows.append(both)
        (out / "trainmem.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
        lines += ["", f"{n} builds at once, Liger {both['liger']}: {both['steps']} steps in {both['wall_s']} s wall "
                  f"({both['steps_per_s']} steps/s together, {both['ok']} of {n} finished); one build without "
                  f"Liger: {one} steps/s (both by wall clock, model loading included)"]
    (out / "trainmem.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
