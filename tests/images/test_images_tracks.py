"""The image tracks are the hardware registry's (tournament/judge/rules.py): one place per fact."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from tournament.images import checks as images
from tournament.images.tracks import image_track_name
from tournament.judge.rules import HARDWARE


def test_tracks_read_the_hardware_registry():
    assert list(images.TRACKS) == ["metax", "paratera", "mthreads"]  # the names callers use
    for h in HARDWARE.values():
        t = images.TRACKS[h.image_track]
        assert (t.name, t.dockerfile, t.base, t.exact_base, t.health_s) == (
            h.image_track, h.dockerfile, h.base, h.exact_base, h.health_timeout)
        assert t.engine == (None if h.vllm else "transformers")
    assert images.METAX_FROM == HARDWARE["metax"].base == images.TRACKS["metax"].base
    assert images.TRACKS["mthreads"].engine == "transformers" and images.TRACKS["mthreads"].may_install_torch
    assert images.TRACKS["paratera"].reset_entrypoint and images.TRACKS["paratera"].health_s == 420.0


def test_a_hardware_name_names_its_image_track(tmp_path):
    from tournament.cli import app

    assert image_track_name("moore-threads") == image_track_name("mthreads") == "mthreads"
    r = CliRunner().invoke(app, ["images", "check", "--track", "moore-threads", "--winner", str(tmp_path / "w.json"),
                                 "--offline", "--no-hadolint", "--json"])
    doc = json.loads(r.stdout)
    assert set(doc["findings"]) == {"winner", "mthreads"}
    r = CliRunner().invoke(app, ["images", "check", "--track", "nvidia", "--offline", "--no-hadolint"])
    assert r.exit_code == 2 and "moore-threads" in r.output
