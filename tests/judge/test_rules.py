"""The judge's hardware tracks and limits (tournament/judge/rules.py)."""

from __future__ import annotations

import pytest

from tournament.judge.rules import HARDWARE, HEALTH_TIMEOUT, PREDICT_TIMEOUT, hardware_track, limits


def test_published_health_limits():
    assert limits("basic", "metax").health_timeout == 180.0 and limits("bonus", "paratera").health_timeout == 420.0
    assert limits("plus", "paratera").questions == 358 and limits().predict_timeout == PREDICT_TIMEOUT == 360.0


def test_moore_threads_uses_the_strictest_published_health_limit():
    mt = hardware_track("moore-threads")
    assert not mt.health_published and not mt.vllm and mt.forced_engine == "transformers"
    strictest = min(h.health_timeout for h in HARDWARE.values() if h.health_published)
    assert mt.health_timeout == strictest == 180.0
    assert limits("basic", "moore-threads").health_timeout == HEALTH_TIMEOUT["moore-threads"] == 180.0
    assert hardware_track("mthreads") is mt and hardware_track(" Moore-Threads ") is mt  # its image track's name


def test_an_unknown_hardware_track_names_the_accepted_ones():
    with pytest.raises(ValueError) as e:
        limits("basic", "nvidia")
    msg = str(e.value)
    assert "'nvidia'" in msg and all(name in msg for name in ("metax", "paratera", "moore-threads"))


def test_every_hardware_track_has_its_image_facts():
    assert set(HARDWARE) == {"metax", "paratera", "moore-threads"}
    for h in HARDWARE.values():
        assert h.dockerfile and h.base and h.image_track and h.health_timeout > 0
    assert HARDWARE["metax"].exact_base and HARDWARE["metax"].vllm and HARDWARE["paratera"].vllm
