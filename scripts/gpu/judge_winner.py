"""Serve a winner.json exactly as the judge image does (serve.py reads it) and judge it per set on
three workloads: the public samples alone (basic.docx 100, plus.docx 92: the eval side of the docx
split), the samples cycled to the judge's count (292 / 358: serve.py's dedup answers the repeats
for free), and the judge's count of distinct questions (the samples plus the speed pool's, as the
sweep's speed POST: tournament/study/workload.py); with JUDGE_OLD_WAY=1 also the same build the
"old way" (temperature 0.7, top_p 0.9, top_k 50, max_tokens 512).
Usage: judge_winner.py WINNER.json OUT.json [SPEED_POOL.jsonl]"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from tournament.data.ingest import load_qa_rows, load_questions
from tournament.judge.emulator import judge
from tournament.serving.process import ServerProcess
from tournament.study.workload import judge_workload

EVAL = Path("data/build/pmpp-docx/eval.jsonl")
POOL = Path("data/build/pmpp-refit/speed_pool.jsonl")
OLD_WAY = {"decode": {"temperature": 0.7, "top_p": 0.9, "top_k": 50, "max_tokens": 512}}


def run(winner: Path, overlay: dict | None, label: str, pool: list[tuple[str, str]]) -> dict:
    env = {"TOURNAMENT_SERVE_CONFIG": json.dumps(overlay)} if overlay else {}
    out = {}
    with ServerProcess(winner=winner, env=env, log_path=Path(f"/tmp/work/judge-{label}.log")) as server:
        out["healthy_seconds"] = server.wait_healthy(600)
        for set_name, n in (("basic", 292), ("plus", 358)):
            qs, refs = load_questions(EVAL, set_name=set_name)
            local = judge(server.url, qs, refs).summary()
            # the samples cycled to the judge's count (the repeats are free)
            qs_n, refs_n = load_questions(EVAL, set_name=set_name, repeat_to=n)
            cycled = judge(server.url, qs_n, refs_n).summary()
            out[set_name] = {"docx": local, f"cycled_to_{n}": cycled}
            if pool:  # the judge's count of distinct questions, as the sweep's speed POST
                w = judge_workload(qs, refs, pool, n, seed=0)
                out[set_name][f"distinct_{n}"] = judge(server.url, w.questions, w.references).summary()
    return out


def main() -> None:
    winner, dest = Path(sys.argv[1]), Path(sys.argv[2])
    pool_path = Path(sys.argv[3]) if len(sys.argv) > 3 else POOL
    pool = [(r.question, r.answer) for r in load_qa_rows(pool_path)] if pool_path.exists() else []
    results = {"winner": json.loads(winner.read_text()), "picked": run(winner, None, "winner", pool)}
    if os.environ.get("JUDGE_OLD_WAY") == "1":
        results["old_way"] = run(winner, OLD_WAY, "old-way", pool)
    dest.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    print(f"{'build':<10} {'set':<6} {'accuracy':>9} {'samples chars/s':>16} {'cycled chars/s':>15} "
          f"{'distinct chars/s':>17} {'distinct acc':>12} {'healthy s':>9}")
    for label in [k for k in ("picked", "old_way") if k in results]:
        r = results[label]
        for set_name, n in (("basic", 292), ("plus", 358)):
            h, c = r[set_name]["docx"], r[set_name][f"cycled_to_{n}"]
            d = r[set_name].get(f"distinct_{n}")
            print(f"{label:<10} {set_name:<6} {h['accuracy']:>9.4f} {h['chars_per_s']:>10.0f} ({h['n']}) "
                  f"{c['chars_per_s']:>9.0f} ({n}) " + (f"{d['chars_per_s']:>10.0f} ({n}) {d['accuracy']:>12.4f}"
                                                        if d else f"{'-':>17} {'-':>12}")
                  + f" {r['healthy_seconds']:>9.1f}")


if __name__ == "__main__":
    main()
