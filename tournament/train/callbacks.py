"""The transformers `TrainerCallback` of a build: per optimizer step it appends the step's loss,
learning rate and grad norm to `train_log.jsonl`, forwards them to MLflow through
`tournament.tracking.Run` (the project's one MLflow wrapper; Trainer's own integrations are off),
and prints progress about 20 times per build. Only the main process of a multi-GPU launch writes."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from transformers import TrainerCallback

if TYPE_CHECKING:
    from tournament.tracking import Run


def truncate_log(path: Path, last_step: int) -> None:
    """Drop the lines of `train_log.jsonl` after `last_step`: a run killed after its last
    checkpoint logged steps that the resumed run does again."""
    if not path.exists():
        return
    keep = [line for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= last_step]
    path.write_text("".join(line + "\n" for line in keep), encoding="utf-8")


class BuildLog(TrainerCallback):
    """train_log.jsonl + MLflow + progress lines, from Trainer's per-step logs."""

    def __init__(self, log_file: Path, run: "Run", total_steps: int, log: Callable[[str], None]):
        self.log_file = Path(log_file)
        self.run = run
        self.total_steps = total_steps
        self.log = log
        self.t0 = time.time()

    def on_train_begin(self, args, state, control, **kwargs: Any):
        self.t0 = time.time()

    def on_log(self, args, state, control, logs: dict[str, Any] | None = None, **kwargs: Any):
        if not logs or "loss" not in logs or not state.is_world_process_zero:
            return  # the end-of-training summary (train_runtime, ...) has no per-step loss
        step, loss, lr = state.global_step, float(logs["loss"]), logs.get("learning_rate")
        line = {"step": step, "loss": loss, "lr": lr, "grad_norm": logs.get("grad_norm"),
                "elapsed": round(time.time() - self.t0, 3)}
        with open(self.log_file, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        self.run.metrics({"train_loss": loss, **({"lr": float(lr)} if lr is not None else {})}, step)
        if step % max(1, self.total_steps // 20) == 0 or step == self.total_steps:
            self.log(f"step {step}/{self.total_steps} loss {loss:.4f}" + (f" lr {lr:.2e}" if lr is not None else ""))


def loss_curve(log_history: list[dict[str, Any]]) -> list[list[float]]:
    """[[step, loss], ...] from Trainer's `state.log_history` (restored from a checkpoint too)."""
    seen: dict[int, float] = {}
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            seen[int(entry["step"])] = round(float(entry["loss"]), 6)
    return [[s, seen[s]] for s in sorted(seen)]
