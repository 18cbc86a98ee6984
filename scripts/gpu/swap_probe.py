"""Does a weight swap serve what a fresh server of the new build serves? The sweep's own code path
(`GroupServers` with `swap=True`, study/weight_swap.py) on the recipe sweep's engine settings:
build A served, build B swapped into that server, then B on a fresh server; each judged on the
basic samples. Writes the answers that differ, both accuracies and speeds, the swap's seconds and
the fresh start's. SWAP_PROBE_QUANT=fp8 runs it with vLLM's on-the-fly fp8 (its reload re-runs the
quantization); SWAP_PROBE_ENGINE=transformers runs it on a CPU (the tests' engine).
Usage: swap_probe.py OUT.json BUILD_A BUILD_B"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import yaml

from tournament.data.ingest import load_questions
from tournament.judge.emulator import judge
from tournament.study.servers import GroupServers, PidFile

EVAL = Path(os.environ.get("SWAP_PROBE_EVAL", "data/build/pmpp-docx/eval.jsonl"))


def engine() -> dict:
    if os.environ.get("SWAP_PROBE_ENGINE") == "transformers":
        return {"engine": "transformers", "device": "cpu", "batch_size": 8, "max_model_len": 256}
    space = yaml.safe_load(Path("sweeps/gpu-gemma-recipes.yaml").read_text())["space"]["engine"]
    quant = os.environ.get("SWAP_PROBE_QUANT")
    return {**space, **({"quantization": quant} if quant else {})}


def config(model: Path) -> dict:
    return {"model": {"path": str(model)}, "engine": engine(), "mode": "batch",
            "decode": {"max_tokens": int(os.environ.get("SWAP_PROBE_TOKENS", "128")), "repetition_penalty": 1.05}}


def measure(url: str, questions: list[str], refs: list[str]) -> dict:
    r = judge(url, questions, refs, health_timeout=60, predict_timeout=600)
    return {"accuracy": round(r.accuracy, 4), "chars_per_s": round(r.chars_per_s, 1), "answers": r.answers}


def main(out: Path, a: Path, b: Path) -> None:
    qs, refs = load_questions(EVAL, set_name="basic")
    work = Path(os.environ.get("SWAP_PROBE_WORK", "/tmp/work/swap-probe"))
    row: dict = {"engine": engine(), "questions": len(qs), "build_a": str(a), "build_b": str(b)}
    servers = GroupServers(work / "swapped", PidFile(work), 600, str, together=False, swap=True)
    try:
        t0 = time.monotonic()
        servers.ensure("a", {"ship": config(a)})
        row["a_start_s"] = round(time.monotonic() - t0, 1)
        row["a_health_s"] = servers.ship.health_seconds
        served_a = measure(servers.ship.proc.url, qs, refs)
        started = servers.ensure("b", {"ship": config(b)})
        row["swapped"] = not started and servers.swapped is not None
        row["swap_s"] = round(servers.swapped, 2) if servers.swapped is not None else None
        swapped = measure(servers.ship.proc.url, qs, refs)
    finally:
        servers.stop()
    fresh_servers = GroupServers(work / "fresh", PidFile(work), 600, str, together=False)
    try:
        t0 = time.monotonic()
        fresh_servers.ensure("b", {"ship": config(b)})
        row["b_fresh_start_s"] = round(time.monotonic() - t0, 1)
        fresh = measure(fresh_servers.ship.proc.url, qs, refs)
    finally:
        fresh_servers.stop()
    differ = [i for i, (x, y) in enumerate(zip(swapped["answers"], fresh["answers"])) if x != y]
    row.update({
        "a": {k: v for k, v in served_a.items() if k != "answers"},
        "b_swapped": {k: v for k, v in swapped.items() if k != "answers"},
        "b_fresh": {k: v for k, v in fresh.items() if k != "answers"},
        "answers_differ_swapped_vs_fresh": len(differ),
        "answers_differ_a_vs_b": sum(x != y for x, y in zip(served_a["answers"], fresh["answers"])),
        "examples": [{"q": qs[i], "swapped": swapped["answers"][i][:160], "fresh": fresh["answers"][i][:160]}
                     for i in differ[:3]],
    })
    out.write_text(json.dumps(row, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in row.items() if k != "examples"}, ensure_ascii=False))


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
