"""The real serve.py under uvicorn (subprocess, loopback), with a tiny random model and the
transformers engine, judged by the emulator; bad input must never kill it."""

import json

import httpx
import pytest

from tournament.judge.emulator import judge
from tournament.serving.process import ServerProcess

QUESTIONS = ["什么是 warp？", "什么是 warp？", "解释 memory coalescing", "CUDA kernel 如何启动？", "什么是 tiling？"]
REFS = ["warp 32 threads", "warp 32 threads", "memory coalescing DRAM", "kernel<<<grid, block>>>", "tile shared memory"]


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from tournament.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


def _config(model_dir, mode="batch", **decode):
    return {
        "model": {"path": str(model_dir)},
        "engine": {"engine": "transformers", "device": "cpu", "batch_size": 4, "max_model_len": 512},
        "decode": {"max_tokens": 12, **decode},
        "mode": mode,
    }


@pytest.fixture(scope="module")
def batch_server(tiny_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("logs") / "server.log"
    with ServerProcess(_config(tiny_model), log_path=log, sweep_mode=True) as server:
        server.wait_healthy(120)
        yield server


def test_batch_mode_through_the_emulator(batch_server):
    r = judge(batch_server.url, QUESTIONS, REFS, health_timeout=10, predict_timeout=60, poll=0.1)
    assert r.mode == "batch" and not r.failed
    assert len(r.answers) == len(QUESTIONS) and all(r.answers)
    assert r.answers[0] == r.answers[1]  # identical prompts, greedy: generated once, copied back
    assert r.chars_per_s == pytest.approx(sum(len(a) for a in r.answers) / r.predict_seconds)


def test_the_transformers_engine_logs_no_compile_cache(batch_server):
    log = batch_server.log_path.read_text(errors="replace")
    assert "loading transformers engine" in log
    assert "compile cache" not in log  # only vLLM compiles


def test_single_and_list_prompts_keep_order_and_length(batch_server):
    one = httpx.post(batch_server.url + "/predict", json={"prompt": QUESTIONS[2]}, timeout=60).json()
    many = httpx.post(batch_server.url + "/predict", json={"prompt": QUESTIONS}, timeout=60).json()
    assert isinstance(one["response"], str) and one["response"]
    assert len(many["response"]) == len(QUESTIONS)
    assert many["response"][2] == one["response"]  # same prompt, greedy: same answer wherever it sits


@pytest.mark.parametrize(
    "body,status",
    [
        (b"not json", 400),
        (b"\xff\xfe\xfa", 400),
        (b'{"prompt": 3}', 422),
        (b'{"prompt": []}', 422),
        (b'{"prompt": ["ok", 5]}', 422),
        (b'{"question": "x"}', 422),
        (b"[1, 2]", 422),
        (json.dumps({"prompt": "x" * 100_000}).encode(), 413),
        (json.dumps({"prompt": ["q"] * 5000}).encode(), 413),
    ],
)
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(batch_server, body, status):
    r = httpx.post(batch_server.url + "/predict", content=body, headers={"content-type": "application/json"}, timeout=30)
    assert r.status_code == status
    assert "error" in r.json()
    assert httpx.get(batch_server.url + "/", timeout=5).json() == {"status": "batch"}


def test_empty_and_odd_questions_still_get_non_empty_answers(batch_server):
    r = httpx.post(batch_server.url + "/predict", json={"prompt": ["", "   ", "😀" * 50]}, timeout=60).json()
    assert len(r["response"]) == 3 and all(a.strip() for a in r["response"])


def test_sweep_mode_changes_decode_and_mode_without_restart(batch_server):
    r = httpx.post(batch_server.url + "/admin/config", json={"decode": {"max_tokens": 3}, "mode": "serial"}, timeout=5)
    assert r.status_code == 200 and r.json()["decode"]["max_tokens"] == 3
    try:
        rep = judge(batch_server.url, QUESTIONS[:2], REFS[:2], health_timeout=5, predict_timeout=60, poll=0.1)
        assert rep.mode == "serial" and len(rep.answers) == 2
        bad = httpx.post(batch_server.url + "/admin/config", json={"decode": {"max_tokens": -1}}, timeout=5)
        assert bad.status_code == 422
    finally:
        httpx.post(batch_server.url + "/admin/config", json={"decode": {"max_tokens": 12}, "mode": "batch"}, timeout=5)


def test_sweep_mode_empties_the_prefix_cache_on_request(batch_server):
    """The sweep times every POST as a fresh server would answer it; the transformers engine keeps
    no prefix cache, so there is nothing to reset, and the request is counted all the same."""
    from tournament.serving.engines import reset_prefix_cache

    before = httpx.get(batch_server.url + "/info", timeout=5).json()["stats"].get("prefix_cache_resets", 0)
    r = httpx.post(batch_server.url + "/admin/reset_prefix_cache", timeout=10)
    assert r.status_code == 200 and r.json() == {"reset": False, "engine": "transformers"}
    assert httpx.get(batch_server.url + "/info", timeout=5).json()["stats"]["prefix_cache_resets"] == before + 1

    class Cached:  # an engine with a prefix cache (vLLM's LLM.reset_prefix_cache returns True when done)
        resets = 0

        def reset_prefix_cache(self):
            self.resets += 1
            return True

    engine = Cached()
    assert reset_prefix_cache(engine) is True and engine.resets == 1
    assert reset_prefix_cache(object()) is False


def test_serial_mode_server_and_no_admin_endpoint_outside_sweep_mode(tiny_model, tmp_path):
    with ServerProcess(_config(tiny_model, mode="serial"), log_path=tmp_path / "s.log") as server:
        server.wait_healthy(120)
        r = judge(server.url, QUESTIONS[:3], REFS[:3], health_timeout=10, predict_timeout=60, poll=0.1)
        assert r.mode == "serial" and not r.failed and all(r.answers)
        assert httpx.post(server.url + "/admin/config", json={"mode": "batch"}, timeout=5).status_code == 404
        assert httpx.post(server.url + "/admin/reset_prefix_cache", timeout=5).status_code == 404
        # bench setups --again against such a server: noted on the row, the first POST's numbers kept
        from tournament.serving.bench_setups import _post_again

        row = {"chars_per_s": 1.0}
        _post_again(server.url, 2, QUESTIONS[:2], REFS[:2], 60, 1.0, row)
        assert "answered 404" in row["again_failed"] and "chars_per_s_again" not in row and row["chars_per_s"] == 1.0
        info = httpx.get(server.url + "/info", timeout=5).json()
        assert info["engine"] == "transformers" and info["stats"]["prompts"] >= 3


def test_winner_json_drives_the_server(tiny_model, tmp_path):
    winner = tmp_path / "winner.json"
    winner.write_text(json.dumps({"schema": 1, "serve": _config(tiny_model, mode="serial")}))
    with ServerProcess(winner=winner, log_path=tmp_path / "w.log") as server:
        server.wait_healthy(120)
        assert httpx.get(server.url + "/", timeout=5).json() == {"status": "serial"}


def test_bad_winner_json_fails_start_with_a_clear_message(tmp_path):
    winner = tmp_path / "winner.json"
    winner.write_text("{not json")
    server = ServerProcess(winner=winner, log_path=tmp_path / "bad.log").start()
    try:
        with pytest.raises(RuntimeError, match="not valid JSON"):
            server.wait_healthy(60)
    finally:
        server.stop()


def test_lone_surrogate_is_cleaned_and_the_batch_survives(batch_server):
    # raw JSON: "\ud800" is valid JSON but not encodable as UTF-8 once decoded
    body = b'{"prompt": ["ok", "abc \\ud800", "\\ud83d\\ude00 pair"]}'
    with httpx.Client(timeout=60) as client:  # one keep-alive connection for every request
        alone = client.post(batch_server.url + "/predict", json={"prompt": "ok"}).json()["response"]
        r = client.post(batch_server.url + "/predict", content=body, headers={"content-type": "application/json"})
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        answers = r.json()["response"]
        assert len(answers) == 3 and all(answers) and answers[0] == alone
        one = client.post(batch_server.url + "/predict", content=b'{"prompt": "\\udc00"}',
                          headers={"content-type": "application/json"})
        assert one.status_code == 200 and one.json()["response"]
        assert client.get(batch_server.url + "/").json() == {"status": "batch"}  # the connection survived
