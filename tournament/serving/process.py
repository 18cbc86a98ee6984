"""Start and stop a real `uvicorn serve:app` subprocess on a free loopback port.

Used by tests, sweeps and benchmarks: the server under test is always the exact serve.py the
judge runs, in its own process (vLLM has no public shutdown, so one engine configuration per
process), and stopping it frees its port and GPU memory."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from tournament.machine import die_with_parent
from tournament.paths import REPO_ROOT


def stop_group(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group `proc` leads (started with start_new_session=True), SIGKILL it
    after `grace` seconds; children that the leader started (workers, consumers) go with it."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=grace)


def compile_cache_env(root: Path) -> dict[str, str]:
    """Environment that gives a server (or any vLLM process) the compile cache in `root`: vLLM's
    own (`VLLM_CACHE_ROOT`: torch.compile artifacts) and the torch inductor and Triton kernel caches,
    which otherwise live in the user's home and /tmp and outlive the process. An empty `root` is the
    cold start of the judge's fresh container; a filled one, a cache baked into the image."""
    return {"VLLM_CACHE_ROOT": str(root), "TORCHINDUCTOR_CACHE_DIR": str(root / "inductor"),
            "TRITON_CACHE_DIR": str(root / "triton")}


COMPILE_CACHES = ("fresh", "shared")


def with_compile_cache(mode: str, run: Callable[[dict[str, str] | None], Any]) -> Any:
    """`run(env)` under a compile cache: fresh, a new, empty folder (`compile_cache_env`), removed
    afterwards (the judge's fresh container); shared, env None (this environment's caches)."""
    if mode not in COMPILE_CACHES:
        raise ValueError(f"compile cache must be one of {COMPILE_CACHES}, not {mode!r}")
    if mode == "shared":
        return run(None)
    import shutil
    import tempfile

    root = Path(tempfile.mkdtemp(prefix="compile-cache-"))
    try:
        return run(compile_cache_env(root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def reset_prefix_cache(url: str) -> None:
    """Empty a running serve.py's prefix cache (``POST /admin/reset_prefix_cache``), so the next POST
    is timed as on a fresh server: the judge sends each question once, but a sweep or a bench sends
    the same POST again and again."""
    from tournament.judge.emulator import http_client

    with http_client() as client:
        r = client.post(url + "/admin/reset_prefix_cache", timeout=60)
    if r.status_code != 200:
        raise RuntimeError(f"POST /admin/reset_prefix_cache answered {r.status_code}: {r.text[:200]}")


class ServerProcess:
    """A serve.py subprocess. Use as a context manager; `stop()` kills the whole process group."""

    def __init__(
        self,
        serve_config: dict[str, Any] | None = None,
        *,
        winner: Path | None = None,
        env: dict[str, str] | None = None,
        sweep_mode: bool = False,
        log_path: Path | None = None,
        host: str = "127.0.0.1",
        port: int | None = None,
        cwd: Path = REPO_ROOT,
    ):
        self.host, self.port = host, port or free_port(host)
        self.url = f"http://{host}:{self.port}"
        self.env = dict(os.environ)
        # A caller's explicit config must not be mixed with whatever winner.json the repo holds.
        self.env["TOURNAMENT_WINNER"] = str(winner) if winner else "none"
        if serve_config is not None:
            self.env["TOURNAMENT_SERVE_CONFIG"] = json.dumps(serve_config)
        if sweep_mode:
            self.env["TOURNAMENT_SWEEP_MODE"] = "1"
        self.env.update(env or {})
        self.env["PYTHONPATH"] = os.pathsep.join(p for p in (str(cwd), self.env.get("PYTHONPATH", "")) if p)
        self.log_path = log_path
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self.started_at: float | None = None

    def start(self) -> "ServerProcess":
        if self.log_path:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log_file = open(self.log_path, "ab")
        out = self._log_file or subprocess.DEVNULL
        self.started_at = time.time()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "serve:app", "--host", self.host, "--port", str(self.port),
             "--log-level", "warning"],
            cwd=str(self.cwd), env=self.env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: stop() takes vLLM's workers down too
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None,
        )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_healthy(self, timeout: float) -> float:
        """Poll GET / until it answers 200; return seconds since start. Raises on death/timeout."""
        import httpx

        assert self.started_at is not None
        deadline = self.started_at + timeout
        # one client for the whole wait; loopback, so never through a proxy from the environment
        with httpx.Client(trust_env=False) as client:
            while time.time() < deadline:
                if not self.alive():
                    raise RuntimeError(f"server exited with code {self.proc.returncode} before it was healthy"
                                       + self._log_tail())
                try:
                    r = client.get(self.url + "/", timeout=2.0)
                    if r.status_code == 200:
                        return time.time() - self.started_at
                except httpx.HTTPError:
                    pass
                time.sleep(0.25)
        raise TimeoutError(f"server not healthy after {timeout:.0f} s" + self._log_tail())

    def _log_tail(self, n: int = 3000) -> str:
        if not self.log_path or not self.log_path.exists():
            return ""
        return "\n--- server log tail ---\n" + self.log_path.read_bytes()[-n:].decode("utf-8", "replace")

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is not None:
            stop_group(self.proc, grace)
        if self._log_file:
            self._log_file.close()
            self._log_file = None

    def __enter__(self) -> "ServerProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
