"""Prefix-cache resets start early and run beside other work, yet every timed POST still reaches a
server whose cache was emptied after its previous POST. Real HTTP servers on loopback that log
what they were asked, in order, with a reset that takes a while (as vLLM's does on a big cache)."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from fastapi import FastAPI, Request

from tests.http_fakes import running
from tournament.study.judge_model import JudgeModel
from tournament.study.measure import PrefixResets, measure
from tournament.study.workload import SpeedPlan

RESET_S = 0.25
UNSEEN_PREDICT_S = 0.4


def recording_server(name: str, events: list, lock: threading.Lock, predict_delay: float = 0.0) -> FastAPI:
    """A serve.py stand-in in sweep mode: health, batch predict, and a slow prefix-cache reset,
    each request logged as (server, what, start, end)."""
    app = FastAPI()

    @app.get("/")
    async def health():
        return {"status": "batch"}

    @app.post("/predict")
    async def predict(request: Request):
        t0 = time.monotonic()
        body = await request.json()
        await asyncio.sleep(predict_delay)
        with lock:
            events.append((name, "predict", t0, time.monotonic(), len(body["prompt"])))
        return {"response": [f"answer to {q}" for q in body["prompt"]]}

    @app.post("/admin/reset_prefix_cache")
    async def reset():
        t0 = time.monotonic()
        await asyncio.sleep(RESET_S)
        with lock:
            events.append((name, "reset", t0, time.monotonic(), 0))
        return {"reset": True}

    return app


@pytest.fixture()
def two_servers():
    events: list = []
    lock = threading.Lock()
    with running(recording_server("ship", events, lock)) as ship, \
            running(recording_server("unseen", events, lock, UNSEEN_PREDICT_S)) as unseen:
        yield ship, unseen, events


def _measure(ship, unseen, speed_repeats, cycled=True):
    questions = [f"basic sample question {i}?" for i in range(6)]
    pool = [(f"held-out question {i}?", f"reference {i}") for i in range(20)]
    return measure(ship, unseen, questions, [f"reference {i}" for i in range(6)], ["basic"] * 6,
                   sets=["basic"], track="basic", speed_repeats=speed_repeats, judge_model=JudgeModel.from_points(),
                   health_timeout=5, predict_timeout=30, health_seconds=1.0,
                   speed=SpeedPlan(pool=pool, size=10, seed=0, cycled=cycled))


def _timed_posts_follow_a_reset(events, timed_posts: int) -> None:
    ship = sorted((e for e in events if e[0] == "ship"), key=lambda e: e[2])
    kinds = [e[1] for e in ship]
    assert kinds == ["reset", "predict"] * timed_posts, kinds
    for reset, predict in zip(ship[::2], ship[1::2]):
        assert reset[3] <= predict[2], "a timed POST began before its reset had finished"


@pytest.mark.parametrize("speed_repeats", [1, 3])
def test_every_timed_post_reaches_an_emptied_cache_and_the_waits_are_shorter_than_the_resets(two_servers,
                                                                                            speed_repeats):
    ship, unseen, events = two_servers
    m = _measure(ship, unseen, speed_repeats).metrics
    timed = speed_repeats + 1  # the speed POSTs and the cycled one
    _timed_posts_follow_a_reset(events, timed)
    assert m["prefix_cache_resets"] == timed
    assert m["prefix_cache_resets_early"] == timed  # each began before its POST: none waited from the start
    assert m["prefix_cache_reset_seconds"] >= timed * RESET_S * 0.9
    # the first reset ran while the honest build answered on its own server: not waited for
    unseen_predict = next(e for e in events if e[0] == "unseen")
    first_reset = next(e for e in events if e[0] == "ship" and e[1] == "reset")
    assert first_reset[2] < unseen_predict[3]
    assert m["overhead_reset_seconds"] < m["prefix_cache_reset_seconds"] - 0.8 * RESET_S


def test_a_single_build_resets_before_each_timed_post_too(two_servers):
    ship, _, events = two_servers
    m = _measure(ship, None, 2, cycled=False).metrics
    _timed_posts_follow_a_reset(events, 2)
    assert m["prefix_cache_resets"] == 2 and m["overhead_reset_seconds"] > 0
    assert m["prefix_cache_resets_early"] == 1  # the second, begun once the first POST's answers were in


def test_a_failed_background_reset_fails_the_wait_that_needs_it():
    calls = []

    def reset(url):
        calls.append(url)
        raise RuntimeError("POST /admin/reset_prefix_cache answered 500")

    resets = PrefixResets(reset)
    resets.start("http://a")
    resets.start("http://a")  # already under way: not a second reset
    with pytest.raises(RuntimeError, match="answered 500"):
        resets.wait("http://a")
    assert calls == ["http://a"]
    with pytest.raises(RuntimeError):  # nothing pending: resets there and then
        resets.wait("http://a")
    assert calls == ["http://a"] * 2 and resets.count == 2
