"""`tournament serve` as a user runs it: the installed console script, from another directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tournament.serving.process import free_port


def _tournament_cmd() -> list[str]:
    script = Path(sys.executable).parent / "tournament"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "tournament.cli"]


def test_installed_serve_command_works_from_another_directory(tiny_model_dir, tmp_path):
    winner = tmp_path / "w.json"
    winner.write_text(json.dumps({"schema": 1, "serve": {
        "model": {"path": str(tiny_model_dir)},
        "engine": {"engine": "transformers", "device": "cpu", "batch_size": 4, "max_model_len": 512},
        "decode": {"max_tokens": 6}}}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TOURNAMENT_") and k != "PYTHONPATH"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*_tournament_cmd(), "serve", "--winner", "w.json", "--port", str(port)],
                                cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 120
        health = None
        with httpx.Client(trust_env=False, timeout=60) as client:
            while time.time() < deadline and proc.poll() is None:
                try:
                    health = client.get(url + "/").json()
                    break
                except httpx.HTTPError:
                    time.sleep(0.3)
            assert health == {"status": "batch"}, f"rc={proc.poll()}\n" + log.read_text(errors="replace")[-3000:]
            r = client.post(url + "/predict", json={"prompt": ["什么是 warp？", "SM 是什么？"]})
            assert r.status_code == 200
            answers = r.json()["response"]
            assert len(answers) == 2 and all(answers)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
