"""The sweep's progress for a person: the bar on a terminal (rich, rendered into a real console),
nothing but plain lines elsewhere; the trial heading names every drawn setting."""

from __future__ import annotations

import io

from rich.console import Console

from tournament.serving.config import DecodeSettings, EngineSettings
from tournament.study.space import TrialPlan
from tournament.study.sweep_progress import SweepProgress, trial_heading


def _plan(**decode) -> TrialPlan:
    return TrialPlan("gemma", "one-shot", EngineSettings(engine="transformers", max_num_seqs=64), DecodeSettings(**decode), "batch")


def test_the_heading_names_every_drawn_setting():
    params = {"prompt": "one-shot", "decode.max_tokens": 64, "decode.repetition_penalty": 1.15, "mode": "batch",
              "engine.max_num_seqs": 64}
    a = trial_heading(3, _plan(max_tokens=64, repetition_penalty=1.15), params)
    assert a == "trial 3: gemma/one-shot max_tokens=64 repetition_penalty=1.15 engine.max_num_seqs=64 mode=batch"
    b = trial_heading(4, _plan(max_tokens=64, repetition_penalty=1.0), {**params, "decode.repetition_penalty": 1.0})
    assert a.split(": ", 1)[1] != b.split(": ", 1)[1]  # settings that differ show


def test_a_terminal_gets_a_bar_with_trials_builds_the_running_trial_and_an_eta():
    buf = io.StringIO()
    p = SweepProgress(live=True, console=Console(file=buf, force_terminal=True, width=220))
    p.start(done=1, target=6, builds=(1, 2))
    p.trial("trial 2: gemma/one-shot max_tokens=64")
    p.update(done=2, builds=(2, 2))
    assert p.eta_seconds() is not None and p.eta_seconds() >= 0
    p.close()
    screen = buf.getvalue()
    for text in ("1/6 trials", "2/6 trials", "builds 1/2", "builds 2/2", "now trial 2: gemma/one-shot max_tokens=64",
                 "ETA"):
        assert text in screen, text


def test_no_terminal_no_bar():
    p = SweepProgress(live=False)
    p.start(done=0, target=3, builds=(0, 1))
    p.trial("trial 0: x/- max_tokens=8")
    p.update(done=1, builds=(1, 1))
    p.close()
    assert p._bar is None and p.done == 1
