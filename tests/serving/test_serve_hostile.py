"""Hostile bodies against the real serve.py (uvicorn on loopback): each is a JSON 4xx that names
the problem, never a 500, and a body that never arrives does not hold its connection for ever."""

from __future__ import annotations

import json
import socket
import time

import httpx
import pytest

from tournament.serving.process import ServerProcess

BODY_TIMEOUT_S = 2.0


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    cfg = {"model": {"path": str(tiny_model_dir)},
           "engine": {"engine": "transformers", "device": "cpu", "batch_size": 4, "max_model_len": 512},
           "decode": {"max_tokens": 4}, "body_timeout_s": BODY_TIMEOUT_S}
    log = tmp_path_factory.mktemp("hostile") / "server.log"
    with ServerProcess(cfg, log_path=log, sweep_mode=True) as s:
        s.wait_healthy(120)
        yield s


DEEP = ('{"prompt": ' + "[" * 1000 + "]" * 1000 + "}").encode()  # 2 KB: RecursionError in json.loads
HUGE_NUMBER = ('{"prompt": 1' + "0" * 5000 + "}").encode()  # 5,001 digits: ValueError in int()


@pytest.mark.parametrize("path", ["/predict", "/admin/config"])
@pytest.mark.parametrize("body,words", [(DEEP, "nested too deeply"), (HUGE_NUMBER, "number too large")])
def test_deep_nesting_and_huge_numbers_are_a_named_4xx(server, path, body, words):
    r = httpx.post(server.url + path, content=body, headers={"content-type": "application/json"}, timeout=30)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:200])
    if path == "/predict":
        assert words in r.json()["error"]
    else:
        assert "bad admin request" in r.json()["error"]
    assert httpx.post(server.url + "/predict", json={"prompt": "ok"}, timeout=60).status_code == 200


def test_a_body_that_never_arrives_is_a_408_and_the_connection_closes(server):
    with socket.create_connection((server.host, server.port), timeout=BODY_TIMEOUT_S + 20) as sock:
        sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n" + b'{"prompt": "half')
        t0 = time.monotonic()
        data = b""
        while chunk := sock.recv(65536):  # until the server closes the connection
            data += chunk
        waited = time.monotonic() - t0
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408"), data[:300]
    assert "did not arrive" in json.loads(body)["error"]
    assert BODY_TIMEOUT_S - 0.5 <= waited < BODY_TIMEOUT_S + 15
    assert httpx.get(server.url + "/", timeout=5).json() == {"status": "batch"}
