"""Judge each candidate's build on the held-out basic and bonus (plus) questions, one vLLM server
per candidate, with the candidate's own serve hints. A missing build is trained in a child process
(this process starts vLLM servers: CUDA memory held by training here would starve them). Usage:
    judge_heldout.py OUT.json CANDIDATE.yaml [CANDIDATE.yaml ...]
ENGINE=transformers runs it on a CPU."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tournament.candidates import load_candidate
from tournament.train.build import build_in_subprocess
from tournament.judge.emulator import judge
from tournament.data.ingest import load_questions
from tournament.serving.process import ServerProcess

EVAL = Path("data/build/pmpp-docx/eval.jsonl")


def judge_candidate(path: str) -> dict:
    cand = load_candidate(path)
    config = cand.serve_overrides(str(build_in_subprocess(cand)))
    config["engine"] = {"gpu_memory_utilization": 0.5, "max_model_len": 1024, **config.get("engine", {}),
                        "engine": os.environ.get("ENGINE", "vllm")}
    out = {"candidate": cand.id, "config": config}
    with ServerProcess(config, log_path=Path(f"/tmp/work/heldout-{cand.id}.log")) as server:
        out["healthy_seconds"] = server.wait_healthy(600)
        for set_name in ("basic", "plus"):
            qs, refs = load_questions(EVAL, set_name=set_name)
            out[set_name] = judge(server.url, qs, refs).summary()
    return out


def main() -> None:
    dest, paths = Path(sys.argv[1]), sys.argv[2:]
    results = []
    for p in paths:
        try:
            results.append(judge_candidate(p))
        except Exception as e:  # one broken build must not lose the others' numbers
            results.append({"candidate": p, "error": f"{type(e).__name__}: {e}"})
        dest.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"{'candidate':<28} {'basic acc':>9} {'plus acc':>9} {'basic chars/s':>13} {'plus chars/s':>12}")
    for r in results:
        if "error" in r:
            print(f"{r['candidate']:<28} error: {r['error'][:80]}")
            continue
        b, p = r["basic"], r["plus"]
        print(f"{r['candidate']:<28} {b['accuracy']:>9.4f} {p['accuracy']:>9.4f} {b['chars_per_s']:>13.0f} {p['chars_per_s']:>12.0f}")


if __name__ == "__main__":
    main()
