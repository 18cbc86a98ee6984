"""What `tournament sweep` prints at the end: the JSON summary (`--json`; the `--gpus` launcher
reads each worker's, see workers.summarize) and the lines a person reads, for one process and for
the workers of `--gpus`."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def summary(res: Any, plots: list[Path]) -> dict[str, Any]:
    """A `SweepResult` (and the plots written after it) as the JSON object of `sweep --json`."""
    return {"study": res.study, "ran": res.ran, "complete": res.complete, "failed": res.failed,
            "queued_again": res.queued_again, "distinct": res.distinct, "repeats": res.repeats,
            "exhausted": res.exhausted,
            "overhead": res.overhead_summary(), "plots": [str(p) for p in plots],
            "seconds": round(res.seconds, 1), "build_seconds": round(res.build_seconds, 1),
            "trials_per_minute": res.trials_per_minute(), "builds": getattr(res, "builds", None)}


def summary_lines(res: Any, runs_dir: Path | None) -> list[str]:
    """A `SweepResult` for a person: the counts, the decode-only overhead, the next command
    (with `--runs-dir` when one was given)."""
    lines = [f"study {res.study}: ran {len(res.ran)} trial(s) now; {res.complete} complete "
             f"({res.distinct} distinct), {res.failed} failed in total"
             + (f", {res.queued_again} stopped before they ran out and queued again" if res.queued_again else "")
             + (f"; {len(res.repeats)} repeated an earlier configuration and were not measured"
                if res.repeats else "")]
    b = getattr(res, "builds", None)  # a recipe space's build budget (recipes.BudgetState)
    if b:
        lines.append(f"recipes built {b['recipes_built']}" + (f" of {b['limit_recipes']}" if b['limit_recipes'] is not None
                                                              else "") + f", {b['minutes']:.1f} min of building"
                     + (f" of {b['limit_minutes']:g}" if b['limit_minutes'] is not None else "")
                     + f"; {b['reused']} reused, {b['failed']} failed" + ("; budget spent" if b["spent"] else ""))
    o = res.overhead_summary()
    if o:
        parts = ("" if "overhead_reset_seconds_median" not in o else
                 f" (of it: waiting for prefix-cache resets {o['overhead_reset_seconds_median']:.2f} s"
                 + (f" of their {o['prefix_cache_reset_seconds_median']:.2f} s" if "prefix_cache_reset_seconds_median" in o
                    else "") + f", the judge's health "
                 f"polls and scoring {o.get('overhead_judge_seconds_median', 0.0):.2f} s)")
        lines.append(f"decode-only trial overhead: median {o['overhead_seconds_median']:.2f} s, "
                     f"{o['overhead_ratio_median']:.1%} of generation time (max {o['overhead_ratio_max']:.1%})"
                     + parts)
    lines.append(f"next: tournament board --study {res.study}" + (f" --runs-dir {runs_dir}" if runs_dir else ""))
    return lines


def gpu_summary_lines(summary: dict[str, Any], study: str, storage: str, build_s: float, sweep_s: float) -> list[str]:
    """The `--gpus` launcher's summary (workers.summarize) for a person: each worker, the study's
    counts and times, the next command (the storage URL with any password scrubbed)."""
    from tournament.tracking import scrub_text

    lines = [f"GPU {w['gpu']}: ran {len(w['ran'])} trial(s) (exit {w['returncode']})" for w in summary["workers"]]
    tpm = summary["trials_per_minute"]
    lines.append(f"study {study}: {summary.get('complete')} complete ({summary.get('distinct')} distinct), "
                 f"{summary.get('failed')} failed"
                 + (f", {summary['queued_again']} queued again" if summary.get("queued_again") else "")
                 + f"; builds {build_s:.0f} s, sweep {sweep_s:.0f} s"
                 + (f", {tpm:.2f} trials/min" if tpm else ""))
    lines.append(scrub_text(f"next: tournament board --study {study} --storage {storage}"))
    return lines
