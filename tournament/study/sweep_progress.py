"""What a person watching `tournament sweep` (or `tournament demo`) sees while it runs.

Every trial ends with one line that names each setting drawn for it (two different trials never
print the same line). On a terminal a rich progress bar stays below those lines: trials done /
target, builds ready / total, the running trial's settings and an ETA from this run's own pace.
Anywhere else (CI logs, pipes, `--json`, the `--gpus` workers) there is no bar: plain lines only,
so a log holds no carriage returns or escape codes.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable


def drawn_settings(plan: Any, params: dict[str, Any]) -> str:
    """The settings Optuna drew for a trial (`trial.params`), as `name=value` with the validated
    values of its `TrialPlan`; candidate and prompt variant lead the line, so they are left out."""
    parts = []
    for name in sorted(params):
        if name in ("candidate", "prompt"):
            continue
        section, _, key = name.partition(".")
        if section == "decode":
            value = getattr(plan.decode, key, params[name])
        elif section == "engine":
            value = getattr(plan.engine, key, params[name])
            key = name
        elif name == "mode":
            value, key = plan.mode, name
        else:
            value, key = params[name], name
        parts.append(f"{key}={value}")
    return " ".join(parts)


def trial_heading(number: int, plan: Any, params: dict[str, Any]) -> str:
    """`trial 4: candidate/prompt setting=value ...`: what the trial serves."""
    settings = drawn_settings(plan, params)
    return f"trial {number}: {plan.candidate}/{plan.prompt_variant or '-'}" + (f" {settings}" if settings else "")


def trial_line(heading: str, metrics: dict[str, Any], broken: list[str], started: bool) -> str:
    """A measured trial's one line: its heading, what it scored, which limits it breaks, and
    whether its servers are new or took its build's weights (`weights_swap_seconds`)."""
    swap = metrics.get("weights_swap_seconds")
    return (f"{heading} seen={metrics['seen_accuracy']:.3f} unseen={metrics['unseen_accuracy']:.3f} "
            f"predicted={metrics['predicted_accuracy']:.3f}±{metrics['predicted_accuracy_sd']:.3f} "
            f"chars/s={metrics['chars_per_s']:.0f} "
            + (f"infeasible ({'; '.join(broken)})" if broken else "feasible")
            + (" (new servers)" if started else f" (weights swapped in, {swap:.1f} s)" if swap is not None else ""))


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "-:--"
    s = int(round(seconds))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class SweepProgress:
    """The bar, or nothing. `live=None`: a bar when stdout is a terminal. The sweep calls `start`,
    `trial` when a trial's settings are drawn, `update` after each trial, and `close`."""

    def __init__(self, live: bool | None = None, console: Any = None):
        self.live = sys.stdout.isatty() if live is None else live
        self.console = console
        self._bar = None
        self._task = None
        self.target = 0
        self.done = 0
        self._first_done: int | None = None
        self._t0 = 0.0

    def start(self, done: int, target: int, builds: tuple[int, int]) -> None:
        self.target, self.done = target, done
        self._first_done, self._t0 = done, time.monotonic()
        if not self.live:
            return
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self._bar = Progress(BarColumn(bar_width=24), TextColumn("{task.completed}/{task.total} trials"),
                             TextColumn("builds {task.fields[builds]}"), TextColumn("ETA {task.fields[eta]}"),
                             TimeElapsedColumn(), TextColumn("{task.description}"),
                             console=self.console, transient=True, refresh_per_second=2)  # 2 cores: redraw little
        self._task = self._bar.add_task("starting", total=target, completed=min(done, target),
                                        builds=f"{builds[0]}/{builds[1]}", eta=_clock(None))
        self._bar.start()

    def eta_seconds(self) -> float | None:
        """This run's seconds per counted trial times the trials still to go (None before the first)."""
        ran = self.done - (self._first_done or 0)
        if ran <= 0:
            return None
        return (time.monotonic() - self._t0) / ran * max(0, self.target - self.done)

    def trial(self, heading: str) -> None:
        if self._bar is not None:
            from tournament.redact import scrub_text  # as every echoed line: no secret on the screen

            self._bar.update(self._task, description=f"now {scrub_text(heading)}", refresh=True)

    def update(self, done: int, builds: tuple[int, int]) -> None:
        self.done = done
        if self._bar is not None:
            self._bar.update(self._task, completed=min(done, self.target), builds=f"{builds[0]}/{builds[1]}",
                             eta=_clock(self.eta_seconds()), refresh=True)

    def wrap(self, echo: Callable[[str], None]) -> Callable[[str], None]:
        """`echo`, but while the bar is live its lines go through the bar's console, above the bar
        (click's echo writes to the terminal's buffer behind rich's back: its lines were lost)."""

        def say(text: str) -> None:
            if self._bar is not None:
                self._bar.console.print(text, markup=False, highlight=False, soft_wrap=True)
            else:
                echo(text)

        return say

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

