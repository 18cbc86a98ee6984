"""One line per build under a builds folder (its candidate.json): what the recipe sweep's GPU proof
reports of each build (BENCHMARKS.md): the recipe, steps, training time, the build's wall time in
its child (data, model load and saves included: `wall_s`), how many builds shared the GPU
(`at_once`), peak memory, how the loss was computed and whether Liger's fused loss was on.
`run.sh follow` refreshes it while a sweep runs.

    python3 scripts/gpu/build_table.py builds out/builds.tsv
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = ("build", "role", "method", "rank", "lr", "epochs", "batch", "rows", "steps", "train_s", "s_per_step",
           "wall_s", "at_once", "peak_alloc_gib", "peak_reserved_gib", "liger", "fused_loss", "loss_logits", "created_at")


def rows(builds: Path) -> list[dict]:
    out = []
    for f in sorted(Path(builds).glob("*/candidate.json")):
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        tr, r = doc.get("train") or {}, (doc.get("candidate") or {}).get("recipe") or {}
        if not tr:
            continue  # an imported base, not a trained build
        peak = tr.get("peak_memory") or {}
        steps, secs = tr.get("steps") or 0, tr.get("train_seconds")
        gib = (lambda v: round(v / 2**30, 2) if isinstance(v, (int, float)) else None)
        # the GPU kit's refit split is data/build/pmpp-refit; the honest one any other data build
        out.append({"build": f.parent.name, "role": "refit" if "refit" in str(r.get("dataset", "")) else "honest",
                    "method": r.get("method"), "rank": r.get("rank") if r.get("method") == "lora" else None,
                    "lr": r.get("learning_rate"), "epochs": r.get("epochs"), "batch": r.get("batch_size"),
                    "rows": (doc.get("dataset") or {}).get("rows"), "steps": steps, "train_s": secs,
                    "s_per_step": round(secs / steps, 4) if secs and steps else None,
                    "wall_s": doc.get("wall_seconds"), "at_once": tr.get("builds_at_once"),
                    "peak_alloc_gib": gib(peak.get("bytes")), "peak_reserved_gib": gib(peak.get("reserved_bytes")),
                    "liger": tr.get("liger"), "fused_loss": tr.get("liger_fused_loss"),
                    "loss_logits": tr.get("loss_logits"), "created_at": doc.get("created_at")})
    return out


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    lines = ["\t".join(COLUMNS)] + ["\t".join("" if row[c] is None else str(row[c]) for c in COLUMNS)
                                    for row in rows(Path(argv[0]))]
    tmp = Path(argv[1]).with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    tmp.replace(argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
