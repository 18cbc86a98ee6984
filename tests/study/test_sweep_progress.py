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
    said: list[str] = []
    echo = p.wrap(said.append)
    echo("before the bar")
    p.start(done=1, target=6, builds=(1, 2))
    p.trial("trial 2: gemma/one-shot max_tokens=64")
    echo("trial 1: gemma/one-shot max_tokens=32 seen=0.250")
    p.update(done=2, builds=(2, 2))
    assert p.eta_seconds() is not None and p.eta_seconds() >= 0
    p.close()
    echo("after the bar")
    screen = buf.getvalue()
    assert said == ["before the bar", "after the bar"]  # while live, lines go above the bar
    assert "trial 1: gemma/one-shot max_tokens=32 seen=0.250" in screen
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


def test_a_sweep_on_a_terminal_shows_the_bar_and_every_trial_line(tmp_path, tiny_model_dir, tiny_qa_file):
    """`tournament sweep` with its output on a pseudo-terminal, as a person runs it: the bar is
    drawn, and each trial's line still reaches the screen above it."""
    import os
    import pty
    import re
    import subprocess
    import sys
    from pathlib import Path

    from tests.study.test_sweep import sweep_file

    cfg = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, trials=2,
                     candidates=[{"id": "tiny", "model_path": str(tiny_model_dir),
                                  "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}}],
                     space={"decode": {"max_tokens": [8, 16], "repetition_penalty": [1.0, 1.1]}, "mode": "batch"},
                     enqueue=[{"decode": {"max_tokens": 8, "repetition_penalty": 1.0}}])
    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo), "COLUMNS": "200"}
    master, slave = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--runs-dir",
                             str(tmp_path / "runs"), "--no-track"], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                            stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # the other side closed
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    os.close(master)
    screen = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode("utf-8", "replace"))
    assert re.search(r"[012]/2 trials builds 1/1", screen), screen[-2000:]
    lines = [l for l in re.split(r"[\r\n]+", screen) if re.match(r"trial \d+: tiny/- ", l)]
    measured = [l for l in lines if " seen=" in l]
    assert len(measured) == 2, lines
    assert all("max_tokens=" in l and "repetition_penalty=" in l for l in measured)
