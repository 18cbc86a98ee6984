"""The running servers of one engine group: the shipped build's and, for a trained recipe, the
honest build's, both real `uvicorn serve:app` processes in sweep mode.

A group is (candidate, prompt variant, engine settings); decode settings and mode reach running
servers through ``POST /admin/config``, so decode-only trials start nothing. A new group stops the
old servers first (their port and GPU memory are freed), unless they are parked (below).

Two vLLM servers share one GPU: each is started with half the trial's ``gpu_memory_utilization``
(vLLM checks at start-up that the fraction it asks for is free). The shipped build starts first
and alone, so its time to healthy is measured as the judge would see it; the honest build starts
once it is healthy. ``start_builds_together`` starts both at once (half the wall time), which is
safe for the transformers engine but not for vLLM 0.26: an engine profiles its memory while the
other allocates and counts that against itself (seen on an H200: "Available KV cache memory:
-0.14 GiB", the LoRA group failed while its twin got 32 GiB). winner.json keeps the trial's full fraction: the
judge runs one server. Only the shipped server's predict calls are timed for speed, and the
honest server sits idle meanwhile.

A new build of the same architecture on the same engine settings (a drawn recipe) is swapped into
the running servers instead (``swap_weights``; study/weight_swap.py says when and why that is the
same measurement); a swap that is refused or fails starts new servers as before. With ``keep`` > 1
a group that steps aside stays running, idle, so that draws alternating between two engine
settings (on-the-fly fp8 or not) swap into the pair of their settings instead of starting one; a
start that fails beside parked servers is tried once more without them.

Cold starts (``judge.cold_start``): each server gets a new, empty compile cache folder under
``compile_cache`` (vLLM's VLLM_CACHE_ROOT and the inductor / Triton caches, see
``compile_cache_env``), removed when the server stops, so its time to healthy is what the judge's
fresh container pays. Without it every server shares this machine's caches.

The pid file (`PidFile`, ``<runs>/servers/<host>-<pid>.json``): the worker records itself when it
starts and each server as it starts or stops it, so the next sweep on this host kills the servers
a dead worker left running (`kill_stale`) and learns when that worker started (to claim the trial
it asked for but had not named, recovery.py).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tournament.serving.config import DecodeSettings, ServeConfig
from tournament.files import pid_alive, write_json_atomic
from tournament.study.weight_swap import check_round_trip, engine_settings_key, swap_weights, why_not_swap

log = logging.getLogger(__name__)


def _cmdline(pid: int) -> str:
    import psutil

    try:
        return " ".join(psutil.Process(pid).cmdline())
    except psutil.Error:
        return ""


class PidFile:
    """``<runs>/servers/<host>-<pid>.json``: this worker, when it started, and the servers it
    started (for stale cleanup and for claiming the trials a dead worker left behind)."""

    def __init__(self, runs_dir: Path):
        self.dir = Path(runs_dir) / "servers"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / f"{socket.gethostname()}-{os.getpid()}.json"
        self.servers: list[int] = []
        self.started_at = time.time()

    def _write(self) -> None:
        write_json_atomic(self.path, {"owner": os.getpid(), "host": socket.gethostname(),
                                      "started_at": self.started_at, "servers": self.servers})

    def open(self) -> None:
        """Record this worker before it asks for its first trial."""
        self._write()

    def add(self, pid: int) -> None:
        self.servers.append(pid)
        self._write()

    def remove(self, pid: int) -> None:
        self.servers = [p for p in self.servers if p != pid]
        self._write()

    def close(self) -> None:
        self.path.unlink(missing_ok=True)

    def kill_stale(self) -> tuple[list[int], list[float]]:
        """Kill servers recorded by dead workers of this host; return their pids and the start
        times of those dead workers."""
        killed: list[int] = []
        dead_started: list[float] = []
        host = socket.gethostname()
        for f in self.dir.glob("*.json"):
            try:
                doc = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if doc.get("host") != host or doc.get("owner") == os.getpid() or pid_alive(int(doc.get("owner", 0))):
                continue
            if isinstance(doc.get("started_at"), (int, float)):
                dead_started.append(float(doc["started_at"]))
            for pid in doc.get("servers", []):
                if pid_alive(pid) and "serve:app" in _cmdline(pid):
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                    killed.append(pid)
            f.unlink(missing_ok=True)
        return killed, dead_started


@dataclass
class GroupServer:
    role: str  # "ship" | "unseen"
    proc: Any  # tournament.serving.process.ServerProcess
    health_seconds: float
    log_path: Path
    config: ServeConfig  # what it serves now (the model path changes with a weight swap)
    cache_dir: Path | None = None  # its own compile cache (cold starts), removed when it stops


class GroupServers:
    def __init__(self, log_dir: Path, pidfile: PidFile, start_timeout: float, reason: Callable[[BaseException], str],
                 together: bool = True, compile_cache: Path | None = None, swap: bool = False, keep: int = 1,
                 check_questions: list[str] | None = None):
        self.log_dir, self.pidfile, self.start_timeout, self.reason = log_dir, pidfile, start_timeout, reason
        self.together, self.swap, self.keep = together, swap, max(1, keep)
        # groups kept running, idle, beside the active one (newest first; at most keep - 1): a later
        # group on the same engine settings takes one over by a swap instead of a start
        self.parked: list[tuple[str, dict[str, GroupServer]]] = []
        self.swapped: float | None = None  # seconds of the weight swap the last `ensure` made instead of a start
        self.changed = False  # the last `ensure` changed the active group (a start, a swap, a parked one taken back)
        # the first swap on each engine settings goes there and back on these questions
        # (weight_swap.check_round_trip): the settings' keys that passed, and those that failed (why)
        self.check_questions, self.swap_note = list(check_questions or []), None
        self.swap_checked: set[str] = set()
        self.swap_off: dict[str, str] = {}
        # absolute: the server runs in another folder (and mkdtemp keeps a relative dir relative)
        self.compile_cache = Path(compile_cache).resolve() if compile_cache is not None else None
        # None: servers share this machine's compile caches
        self.key: str | None = None
        self.servers: dict[str, GroupServer] = {}
        self.bad_groups: dict[str, str] = {}

    @property
    def ship(self) -> GroupServer | None:
        return self.servers.get("ship")

    def alive(self) -> bool:
        return bool(self.servers) and all(s.proc.alive() for s in self.servers.values())

    def running(self, key: str, roles) -> bool:
        return self.key == key and set(self.servers) == set(roles) and self.alive()

    def stop(self) -> None:
        """Stop every server: the active group's and the parked ones."""
        self.stop_parked()
        self._stop(self.servers)
        self.servers, self.key = {}, None

    def stop_parked(self) -> None:
        while self.parked:
            self._stop(self.parked.pop()[1])

    def _stop(self, servers: dict[str, GroupServer]) -> None:
        for s in servers.values():
            pid = s.proc.proc.pid if s.proc.proc else None
            s.proc.stop()
            if pid:
                self.pidfile.remove(pid)
            _remove(s.cache_dir)

    def _park(self) -> None:
        """The active group steps aside: kept running, idle, when `keep` allows (the oldest parked
        one beyond it stops), else stopped."""
        if self.servers:
            if self.keep > 1 and self.alive():
                self.parked.insert(0, (self.key, self.servers))
            else:
                self._stop(self.servers)
        self.servers, self.key = {}, None
        while len(self.parked) > self.keep - 1:
            self._stop(self.parked.pop()[1])

    def mark_bad_if_dead(self, reason: str) -> None:
        """A server that died mid-trial condemns its group (no restart loop on a broken config)."""
        if self.key is not None and self.servers and not self.alive():
            self.bad_groups.setdefault(self.key, f"server died: {reason}")
            self.stop()

    def ensure(self, key: str, configs: dict[str, ServeConfig | dict[str, Any]]) -> bool:
        """Servers for `configs` (role -> ServeConfig) of group `key`; True if started now (then
        they already run the configs' decode settings and mode); False if they run already: the
        active group, a parked one taken back, or a group `key`'s build was swapped into
        (`swapped` holds that swap's seconds)."""
        # a ServeConfig passes as it is (no second validation); a plain dict is validated here
        configs = {role: ServeConfig.model_validate(c) for role, c in configs.items()}
        self.swapped, self.changed = None, False
        if self.running(key, configs):
            return False
        self.changed = True
        if key in self.bad_groups:
            self.stop()
            raise RuntimeError(f"engine group failed before: {self.bad_groups[key]}")
        configs = _share_gpu(configs)
        if self._reuse(key, configs):
            return False
        self._park()
        try:
            self._start_group(key, configs)
        except Exception:
            if not self.parked:
                raise
            # parked servers hold GPU memory a start may need: free it and try once more
            log.warning("group %s did not start beside %d parked group(s): stopping them and retrying",
                        key, len(self.parked))
            self.stop_parked()
            self.bad_groups.pop(key, None)
            self._start_group(key, configs)
        return True

    def _start_group(self, key: str, configs: dict[str, ServeConfig]) -> None:
        roles = [r for r in ("ship", "unseen") if r in configs]
        procs: dict[str, tuple[Any, Path, Path | None]] = {}
        try:
            # Together: the two cold starts overlap; the shipped server's time to healthy then
            # includes the honest one's start beside it (no better than what the judge sees).
            for role in roles if self.together else roles[:1]:
                procs[role] = self._start(key, role, configs[role])
            for role in roles:
                if role not in procs:
                    procs[role] = self._start(key, role, configs[role])
                proc, log_path, cache_dir = procs[role]
                health = proc.wait_healthy(self.start_timeout)
                self.servers[role] = GroupServer(role, proc, health, log_path, configs[role], cache_dir)
        except BaseException as e:
            for proc, _, cache_dir in procs.values():
                if proc.proc is not None:
                    self.pidfile.remove(proc.proc.pid)
                proc.stop()
                _remove(cache_dir)
            self.servers, self.key = {}, None
            if not isinstance(e, KeyboardInterrupt):
                self.bad_groups[key] = self.reason(e)
            raise
        self.key = key

    def _reuse(self, key: str, configs: dict[str, ServeConfig]) -> bool:
        """Serve group `key` on servers already running: a parked group of that key as it is, or
        (weight swaps allowed) the active or a parked group whose engine settings take the new
        build's weights. False: start new servers."""
        for i, (held_key, servers) in enumerate([(self.key, self.servers)] + self.parked):
            if not servers or set(servers) != set(configs) or not all(s.proc.alive() for s in servers.values()):
                continue
            same = held_key == key
            why = None if same else "weight swaps are off" if not self.swap else next(
                (w for r in configs if (w := self.swap_off.get(engine_settings_key(configs[r]))
                                        or why_not_swap(servers[r].config, configs[r]))), None)
            if why is not None:
                log.info("group %s: not on the servers of %s (%s)", key, held_key, why)
                continue
            if i > 0:  # a parked group becomes the active one; the active one is parked
                del self.parked[i - 1]
                self._park()
                self.servers, self.key = servers, held_key
            if same:
                return True
            t0 = time.monotonic()
            try:
                for role, server in servers.items():
                    self._swap_in(role, server, configs[role])
                    server.config = configs[role]
            except Exception as e:  # noqa: BLE001 - new servers instead; the reason goes to the log
                log.warning("group %s: the weight swap failed (%s); starting new servers", key, e)
                self._stop(self.servers)
                self.servers, self.key = {}, None
                return False
            self.key, self.swapped = key, time.monotonic() - t0
            return True
        return False

    def _swap_in(self, role: str, server: GroupServer, config: ServeConfig) -> None:
        """Swap `config`'s build into `server`; the first such swap on a greedy shipped server of
        each engine settings goes there and back on `check_questions`, and a failed check turns
        swaps on those settings off and raises."""
        greedy = server.config.decode.temperature == 0 and config.decode.temperature == 0
        settings = engine_settings_key(config)
        if role != "ship" or not self.check_questions or not greedy or settings in self.swap_checked:
            swap_weights(server.proc.url, config.model.path, self.start_timeout)
            return
        passed, self.swap_note = check_round_trip(server.proc.url, server.config.model.path, config.model.path,
                                                  self.check_questions, self.start_timeout)
        self.swap_checked.add(settings)  # once a sweep for these settings
        if not passed:
            self.swap_off[settings] = "their weight swap failed its check: " + self.swap_note
            raise RuntimeError(self.swap_note)

    def _start(self, key: str, role: str, config: ServeConfig):
        from tournament.serving.process import ServerProcess, compile_cache_env

        log_path = self.log_dir / f"{key}-{role}-{int(time.time())}.log"
        cache_dir = None
        if self.compile_cache is not None:
            self.compile_cache.mkdir(parents=True, exist_ok=True)
            cache_dir = Path(tempfile.mkdtemp(prefix=f"{key}-{role}-", dir=self.compile_cache))
        proc = ServerProcess(config.model_dump(), sweep_mode=True, log_path=log_path,
                             env=compile_cache_env(cache_dir) if cache_dir else None)
        try:
            proc.start()
        except BaseException:
            _remove(cache_dir)
            raise
        self.pidfile.add(proc.proc.pid)
        return proc, log_path, cache_dir

    def configure(self, decode: DecodeSettings, mode: str) -> None:
        """Running servers take a decode-only trial's settings (freshly started ones have them)."""
        from tournament.judge.emulator import http_client

        body = {"decode": decode.model_dump(), "mode": mode}
        with http_client() as client:
            for s in self.servers.values():
                r = client.post(s.proc.url + "/admin/config", json=body, timeout=30)
                if r.status_code != 200:
                    raise RuntimeError(f"POST /admin/config ({s.role}) answered {r.status_code}: {r.text[:300]}")

    def log_path(self) -> Path | None:
        s = self.ship
        if s is not None:
            return s.log_path
        logs = sorted(self.log_dir.glob("*.log"), key=lambda p: p.stat().st_mtime) if self.log_dir.exists() else []
        return logs[-1] if logs else None


def failure_reason(e: BaseException) -> str:
    """An exception as a trial's (or a group's) failure reason; out-of-memory errors say OOM first."""
    text = f"{type(e).__name__}: {e}"
    low = text.lower()
    return ("OOM: " + text) if "out of memory" in low or "outofmemory" in low or "cuda oom" in low else text


def _remove(cache_dir: Path | None) -> None:
    if cache_dir is not None:
        shutil.rmtree(cache_dir, ignore_errors=True)


def _share_gpu(configs: dict[str, ServeConfig]) -> dict[str, ServeConfig]:
    """Two vLLM servers: each asks for half the GPU memory fraction."""
    if len(configs) < 2 or any(c.engine.engine != "vllm" for c in configs.values()):
        return configs
    return {role: c.model_copy(update={"engine": c.engine.model_copy(
        update={"gpu_memory_utilization": round(c.engine.gpu_memory_utilization / 2, 4)})})
        for role, c in configs.items()}
