"""Recipes drawn ahead (`build_budget.ahead`): when a recipe must be trained (drawn, or enqueued
as written), the sampler draws the next few new recipes at once, so that their builds train beside
it (the trials waiting in the queue are taken along first: they run first anyway). A 270M model leaves
most of a GPU idle (its step is bound by kernel launches), so builds side by side do more work in
the same time (train/memory.py plans how many fit), and the recipes after it need no build of
their own, nor their servers stopped for one.

Each draw is a real Optuna trial: asked now with the sweep's own sampler (TPE's constant liar
counts it as running, so the draws spread out), its whole plan suggested (recipe, quantization,
decode settings), then run later, in the order drawn, once the running recipe's group is done.
Until it runs it holds a heartbeat, so no stale-trial check fails it. A sweep that stops first
(its timeout, its trial target, Ctrl-C, an error) marks the draws it never ran FAIL and enqueues
each again with its parameters (`retry_of`: they do not count twice), so a resume runs them on the
builds already made; a sweep killed outright leaves them RUNNING, which the next sweep's recovery
re-queues the same way (study/recovery.py)."""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

from tournament.study.optuna_private import fixed_params, retry_params, trial_id
from tournament.study.recovery import TrialHeartbeat, worker_id

NOT_RUN = "drawn ahead for a batch of builds; not run: the sweep stopped first (enqueued again)"


class DrawnAhead:
    """The trials a sweep process has drawn ahead and not run yet, oldest first."""

    def __init__(self, storage: Any, echo: Callable[[str], None] = print):
        self.storage, self.echo = storage, echo
        self._pending: deque[tuple[Any, TrialHeartbeat]] = deque()

    def __len__(self) -> int:
        return len(self._pending)

    def draw(self, study, sampler, n: int, suggest: Callable[[Any], str]) -> list[tuple[Any, str]]:
        """Ask `n` trials of `sampler` and suggest each one's plan (`suggest` returns the key of the
        candidate it draws). Returns [(trial, key)] for the draws whose candidate is known; a draw
        that cannot say (over the build budget, an invalid draw) waits too, and its run says why,
        as any trial's would. Optuna's ask takes an enqueued trial before it samples, so the trials
        waiting in the queue (hand-written recipes, retries) are taken first, in queue order, and
        wait here too: they run first anyway, and the `n` sampled draws after them still train in
        this batch (a sweep that enqueues its hand-written recipes trains the drawn ones beside
        them, not in a batch of their own after them). `n` counts the sampled draws only."""
        from optuna.trial import TrialState

        if n <= 0:
            return []
        queued = len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))
        out: list[tuple[Any, str]] = []
        held = study.sampler
        study.sampler = sampler  # a group's fixed sampler would draw the running recipe again
        sampled = 0
        try:
            for _ in range(queued + n):  # another worker may take queued ones: then more are sampled
                if sampled >= n:
                    break
                trial = study.ask()
                sampled += not fixed_params(trial)  # an enqueued trial is not a sampled draw
                trial.set_user_attr("worker", worker_id())
                trial.set_user_attr("drawn_ahead", True)
                beat = TrialHeartbeat(self.storage, trial_id(trial)).__enter__()
                self._pending.append((trial, beat))
                try:
                    out.append((trial, suggest(trial)))
                except Exception:  # noqa: BLE001 - the trial says why when it runs
                    continue
        finally:
            study.sampler = held
        if out:
            self.echo(f"drew {len(out)} recipe(s) ahead (trials {', '.join(str(t.number) for t, _ in out)}): "
                      "built with this one, run after its group")
        return out

    def pop(self):
        """The oldest trial drawn ahead, to run now (the sweep's loop holds its heartbeat from here)."""
        trial, beat = self._pending.popleft()
        beat.__exit__(None, None, None)
        return trial

    def release(self, study) -> list[int]:
        """The sweep stops: each trial not run is failed and enqueued again. Returns their numbers."""
        from optuna.trial import TrialState

        released = []
        while self._pending:
            trial = self.pop()
            try:
                trial.set_user_attr("fail_reason", NOT_RUN)
                study.tell(trial, state=TrialState.FAIL)
                study.enqueue_trial(retry_params(trial), user_attrs={"retry_of": trial.number})
                released.append(trial.number)
            except Exception:  # noqa: BLE001 - left RUNNING: the next sweep's recovery re-queues it
                continue
        if released:
            self.echo(f"trials {released} were drawn ahead and not run: enqueued again for a resume")
        return released
