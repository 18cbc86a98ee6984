"""scripts/setup.sh and quickstart.sh print one line per stage with its time (scripts/stage.sh):
a stage's own output (pip notices, the setuptools warning block, progress bars) goes to the setup
log, shown when the stage fails; VERBOSE=1 (-v) shows it as it comes. Real bash, real files."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

STAGE = Path(__file__).resolve().parents[2] / "scripts" / "stage.sh"
NOISY = "echo 'pip notice'; echo 'SetuptoolsDeprecationWarning: block' >&2; printf 'Loading 50%%\\r100%%\\n' >&2"


def _run(tmp_path: Path, body: str, verbose: bool = False) -> subprocess.CompletedProcess:
    script = f"set -euo pipefail\nSETUP_LOG={tmp_path}/setup.log\n. {STAGE}\n{body}\n"
    env = {"PATH": "/usr/bin:/bin", "VERBOSE": "1" if verbose else "0"}
    return subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=30)


def test_a_stage_is_one_line_with_its_time_and_its_output_goes_to_the_log(tmp_path):
    r = _run(tmp_path, f'stage "setup 1/2: torch" bash -c "{NOISY}"\nstage "setup 2/2: project" true')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 2 and re.fullmatch(r"setup 1/2: torch \.\.\. \d+ s", lines[0]), lines
    assert re.fullmatch(r"setup 2/2: project \.\.\. \d+ s", lines[1]), lines
    assert r.stderr == ""
    log = (tmp_path / "setup.log").read_text()
    assert "pip notice" in log and "SetuptoolsDeprecationWarning" in log and "== setup 1/2: torch" in log


def test_a_failed_stage_shows_its_output_and_stops(tmp_path):
    r = _run(tmp_path, f'stage "setup 1/2: torch" bash -c "{NOISY}; echo boom; exit 3"\nstage "never" true')
    assert r.returncode == 1
    assert re.match(r"setup 1/2: torch \.\.\. failed after \d+ s", r.stdout), r.stdout
    assert "boom" in r.stdout and "never" not in r.stdout


def test_verbose_shows_everything(tmp_path):
    r = _run(tmp_path, f'stage "setup 1/2: torch" bash -c "{NOISY}"', verbose=True)
    assert r.returncode == 0
    assert "pip notice" in r.stdout and "SetuptoolsDeprecationWarning" in r.stderr
    assert re.fullmatch(r"setup 1/2: torch: \d+ s", r.stdout.splitlines()[-1])
