"""What a sweep is asked (`SweepOptions`: the command line's choices) and what one worker reports
back (`SweepResult`: counts, time, the decode-only overhead); sweep_view.py renders the result."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class SweepOptions:
    trials: int
    study: str
    storage: str
    runs_dir: Path
    reuse_cached_speed: bool = False  # on an answer-cache hit, reuse the stored speed too (no server start)
    tracking: bool = True
    ledger: Path | None = None  # judge results calibrate the predicted accuracy
    timeout_s: float | None = None  # start no trial after this many seconds (the running one finishes)
    sweep_file: Path | None = None  # recorded: pick rebuilds a masked serve config from it (served.py)


@dataclass
class SweepResult:
    study: str
    storage: str
    ran: list[int]
    complete: int
    failed: int
    overhead: list[dict[str, float]]
    distinct: int = 0  # finished trials with a configuration of their own
    queued_again: int = 0  # FAIL trials stopped before they ran out and enqueued again (not in `failed`)
    repeats: list[int] = field(default_factory=list)  # trials that reused an earlier trial's results
    exhausted: bool = False
    seconds: float = 0.0  # this worker's wall time, builds included
    build_seconds: float = 0.0  # of which: building (before the first trial; a recipe space's batches)
    builds: dict[str, Any] | None = None  # the build budget of a recipe space (recipes.BudgetState)

    def trials_per_minute(self) -> float | None:
        """Trials this worker measured (repeats excluded) per minute of sweeping (builds excluded)."""
        measured = len(self.ran) - len(self.repeats)
        minutes = (self.seconds - self.build_seconds) / 60
        return measured / minutes if minutes > 0 and measured else None

    def overhead_summary(self) -> dict[str, float] | None:
        decode_only = [o for o in self.overhead if o.get("decode_only")]
        if not decode_only:
            return None
        ratios = [o["overhead_ratio"] for o in decode_only]
        out = {"decode_only_trials": len(ratios), "overhead_ratio_median": statistics.median(ratios),
               "overhead_ratio_max": max(ratios),
               "overhead_seconds_median": statistics.median(o["overhead_seconds"] for o in decode_only)}
        for part in ("reset", "judge"):  # where it went: prefix-cache resets; health polls + scoring
            values = [o[f"overhead_{part}_seconds"] for o in decode_only if f"overhead_{part}_seconds" in o]
            if values:
                out[f"overhead_{part}_seconds_median"] = statistics.median(values)
        spent = [o["prefix_cache_reset_seconds"] for o in decode_only if "prefix_cache_reset_seconds" in o]
        if spent:  # the resets' own time: what was not waited for ran beside other work
            out["prefix_cache_reset_seconds_median"] = statistics.median(spent)
        return out
