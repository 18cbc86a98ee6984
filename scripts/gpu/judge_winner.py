"""Serve a winner.json exactly as the judge image does (serve.py reads it) and judge it on the
public samples (basic.docx and plus.docx, the eval side of the docx split; a refit winner has seen
them, an honest one has not); with JUDGE_OLD_WAY=1 also the same build the "old way" (temperature
0.7, top_p 0.9, top_k 50, max_tokens 512). Usage: judge_winner.py WINNER.json OUT.json"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tournament.judge.emulator import judge
from tournament.data.ingest import load_questions
from tournament.serving.process import ServerProcess

EVAL = Path("data/build/pmpp-docx/eval.jsonl")
OLD_WAY = {"decode": {"temperature": 0.7, "top_p": 0.9, "top_k": 50, "max_tokens": 512}}


def run(winner: Path, overlay: dict | None, label: str) -> dict:
    env = {"TOURNAMENT_SERVE_CONFIG": json.dumps(overlay)} if overlay else {}
    out = {}
    with ServerProcess(winner=winner, env=env, log_path=Path(f"/tmp/work/judge-{label}.log")) as server:
        out["healthy_seconds"] = server.wait_healthy(600)
        for set_name, n in (("basic", 292), ("plus", 358)):
            qs, refs = load_questions(EVAL, set_name=set_name)
            local = judge(server.url, qs, refs).summary()
            # chars/s at the judge's set size: the same questions cycled to its count
            qs_n, refs_n = load_questions(EVAL, set_name=set_name, repeat_to=n)
            sized = judge(server.url, qs_n, refs_n).summary()
            out[set_name] = {"docx": local, f"cycled_to_{n}": sized}
    return out


def main() -> None:
    winner, dest = Path(sys.argv[1]), Path(sys.argv[2])
    results = {"winner": json.loads(winner.read_text()), "picked": run(winner, None, "winner")}
    if os.environ.get("JUDGE_OLD_WAY") == "1":
        results["old_way"] = run(winner, OLD_WAY, "old-way")
    dest.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"{'build':<10} {'set':<6} {'accuracy':>9} {'zh_rougeL':>9} {'chars/s (n)':>14} {'healthy s':>9}")
    for label in [k for k in ("picked", "old_way") if k in results]:
        r = results[label]
        for set_name, n in (("basic", 292), ("plus", 358)):
            h, s = r[set_name]["docx"], r[set_name][f"cycled_to_{n}"]
            print(f"{label:<10} {set_name:<6} {h['accuracy']:>9.4f} {h['zh_rougeL']:>9.4f} "
                  f"{s['chars_per_s']:>9.0f} ({n}) {r['healthy_seconds']:>9.1f}")


if __name__ == "__main__":
    main()
