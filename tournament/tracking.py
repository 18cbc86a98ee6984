"""MLflow helpers: one parent run per Optuna study, one child run per trial.

Store: ``sqlite:///<runs>/mlflow.db`` with artifacts under ``<runs>/artifacts`` (the experiment is
created with that artifact location), ``<runs>`` = ``mlruns`` by default. No plain file store
(MLflow 3 refuses it without ``MLFLOW_ALLOW_FILE_STORE``).

Secrets: nothing whose *name* contains TOKEN/KEY/SECRET/PASSWORD is ever logged, and the *value*
of every such environment variable is replaced by ``***`` in params, tags and text artifacts
(a token pasted into a prompt or a URL does not leak either). Database URLs lose their password.

Tracking is best effort: an MLflow error is logged as a warning and never fails a trial. Trial
logging runs on a background thread so that it does not add to a trial's measured overhead;
``flush()`` waits for it.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import queue
import re
import subprocess
import threading
from pathlib import Path
from typing import Any, Callable

from tournament.machine import library_versions

log = logging.getLogger(__name__)

EXPERIMENT = "tournament"
SECRET_NAME = re.compile(r"TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIAL", re.IGNORECASE)  # environment names
SECRET_KEY = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)  # config keys
TOKEN_LIKE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|ms-[A-Za-z0-9-]{20,}|sk-[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,})\b")
URL_PASSWORD = re.compile(r"(://[^/:@\s]+):[^@/\s]+@")


def runs_dir_default() -> Path:
    return Path(os.environ.get("TOURNAMENT_RUNS_DIR", "mlruns"))


def tracking_uri(runs_dir: Path) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


# -- scrubbing ------------------------------------------------------------------------------------
def _secret_values(env: dict[str, str] | None = None) -> list[str]:
    env = os.environ if env is None else env
    return sorted({v for k, v in env.items() if SECRET_NAME.search(k) and v and len(v) >= 6}, key=len, reverse=True)


def scrub_text(text: str, env: dict[str, str] | None = None) -> str:
    for v in _secret_values(env):
        text = text.replace(v, "***")
    text = TOKEN_LIKE.sub("***", text)
    return URL_PASSWORD.sub(r"\1:***@", text)


def secret_key(key: Any) -> bool:
    """A key that names a secret (HF_TOKEN, api_key, password), not a setting that counts tokens
    (max_tokens, stop_token_ids): its last dotted part ends in a secret word."""
    return bool(SECRET_KEY.search(str(key).rsplit(".", 1)[-1]))


def scrub(obj: Any, env: dict[str, str] | None = None) -> Any:
    """Drop secret-named keys and mask secret values, recursively."""
    if isinstance(obj, dict):
        return {k: scrub(v, env) for k, v in obj.items() if not secret_key(k)}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, env) for v in obj]
    if isinstance(obj, str):
        return scrub_text(obj, env)
    return obj


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


# -- environment tags -----------------------------------------------------------------------------
def git_commit(cwd: Path | None = None) -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        commit = out.stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return commit + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def gpu_name() -> str:
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10)
        names = [x.strip() for x in out.stdout.splitlines() if x.strip()]
        if names:
            return f"{len(names)}x {names[0]}"
    except (OSError, subprocess.SubprocessError):
        pass
    return f"cpu ({os.cpu_count()} cores)"


def environment_tags() -> dict[str, str]:
    tags = {"git_commit": git_commit(), "gpu": gpu_name(), "host": platform.node()}
    versions = library_versions(("torch", "transformers", "vllm", "optuna", "mlflow", "tournament"))
    tags.update({f"version.{k}": v for k, v in versions.items() if v is not None})
    return tags


# -- the tracker ----------------------------------------------------------------------------------
class Tracker:
    """Parent run per study, child run per trial. All calls are best effort."""

    def __init__(self, runs_dir: Path, experiment: str = EXPERIMENT, enabled: bool = True,
                 uri: str | None = None):
        self.runs_dir = Path(runs_dir)
        self.enabled = enabled
        self.uri = uri or tracking_uri(self.runs_dir)
        self.client = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        if enabled:
            self._safe(self._init, experiment)

    def _safe(self, fn: Callable, *a, **kw):
        try:
            return fn(*a, **kw)
        except Exception as e:  # tracking must never fail a trial
            log.warning("MLflow: %s failed: %s: %s", getattr(fn, "__name__", fn), type(e).__name__, e)
            return None

    def _init(self, experiment: str) -> None:
        from mlflow.tracking import MlflowClient

        self.runs_dir.mkdir(parents=True, exist_ok=True)
        art = (self.runs_dir / "artifacts").resolve()
        art.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                self.experiment_id = self.client.create_experiment(experiment, artifact_location=art.as_uri())
            except Exception:  # another worker created it first
                exp = self.client.get_experiment_by_name(experiment)
                self.experiment_id = exp.experiment_id
        else:
            self.experiment_id = exp.experiment_id

    @property
    def ok(self) -> bool:
        return self.enabled and self.client is not None and self.experiment_id is not None

    # parent ------------------------------------------------------------------------------
    def start_study(self, study: str, params: dict[str, Any], tags: dict[str, str], reopen: bool = True) -> str | None:
        if not self.ok:
            return None
        return self._safe(self._start_study, study, params, tags, reopen)

    def _start_study(self, study: str, params: dict[str, Any], tags: dict[str, str], reopen: bool = True) -> str:
        found = self.client.search_runs(
            [self.experiment_id], filter_string=f"tags.`tournament.study` = '{study}' and tags.`tournament.kind` = 'study'",
            max_results=1,
        )
        if found:
            self.parent_run_id = found[0].info.run_id
            if reopen and found[0].info.status != "RUNNING":
                self.client.update_run(self.parent_run_id, status="RUNNING")
            return self.parent_run_id
        all_tags = {"tournament.study": study, "tournament.kind": "study", "mlflow.runName": f"study-{study}"}
        all_tags.update(tags)
        run = self.client.create_run(self.experiment_id, tags=scrub(all_tags), run_name=f"study-{study}")
        self.parent_run_id = run.info.run_id
        self.log_params(self.parent_run_id, params)
        return self.parent_run_id

    def end_study(self) -> None:
        self.flush()
        if self.ok and self.parent_run_id:
            self._safe(self.client.set_terminated, self.parent_run_id, "FINISHED")

    # child -------------------------------------------------------------------------------
    def start_trial(self, study: str, number: int, tags: dict[str, str]) -> str | None:
        if not self.ok:
            return None

        def _create() -> str:
            t = {"tournament.study": study, "tournament.kind": "trial", "tournament.trial": str(number),
                 "mlflow.runName": f"{study}-trial-{number}"}
            if self.parent_run_id:
                t["mlflow.parentRunId"] = self.parent_run_id
            t.update(tags)
            return self.client.create_run(self.experiment_id, tags=scrub(t), run_name=f"{study}-trial-{number}").info.run_id

        return self._safe(_create)

    def finish_trial(self, run_id: str | None, *, params: dict[str, Any], metrics: dict[str, float],
                     tags: dict[str, str], artifacts: dict[str, Path], status: str) -> None:
        """Queue the trial's logging (background thread)."""
        if not self.ok or not run_id:
            return
        self._queue.put((run_id, params, metrics, tags, artifacts, status))
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._drain, name="mlflow-logger", daemon=True)
            self._thread.start()

    def _drain(self) -> None:
        while True:
            try:
                item = self._queue.get(timeout=1.0)
            except queue.Empty:
                return
            try:
                self._safe(self._log_trial, *item)
            finally:
                self._queue.task_done()

    def _log_trial(self, run_id, params, metrics, tags, artifacts, status) -> None:
        self.log_params(run_id, params)
        self.log_metrics(run_id, metrics)
        if tags:
            from mlflow.entities import RunTag

            self.client.log_batch(run_id, tags=[RunTag(k, str(v)[:5000]) for k, v in scrub(tags).items()])
        for name, path in artifacts.items():
            self.log_artifact(run_id, Path(path), name)
        self.client.set_terminated(run_id, status)

    def flush(self, timeout: float = 120.0) -> None:
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)
        while not self._queue.empty():  # thread exited on a race: finish here
            self._safe(self._log_trial, *self._queue.get())
            self._queue.task_done()

    # primitives --------------------------------------------------------------------------
    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = scrub(flatten(params))
        items = [Param(k[:250], json.dumps(v, ensure_ascii=False)[:6000] if not isinstance(v, str) else v[:6000])
                 for k, v in flat.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i:i + 100])

    def log_metrics(self, run_id: str, metrics: dict[str, float]) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and v == v]
        if items:
            self.client.log_batch(run_id, metrics=items)

    def log_artifact(self, run_id: str, path: Path, name: str | None = None) -> None:
        """Text artifacts are scrubbed on the way (a copy is logged, the file stays)."""
        import tempfile

        if not path.exists():
            return
        if path.suffix in (".json", ".jsonl", ".log", ".txt", ".yaml", ".html") and path.stat().st_size < 50_000_000:
            with tempfile.TemporaryDirectory() as d:
                tmp = Path(d) / (name or path.name)
                tmp.write_text(scrub_text(path.read_text(encoding="utf-8", errors="replace")), encoding="utf-8")
                self.client.log_artifact(run_id, str(tmp))
        else:
            self.client.log_artifact(run_id, str(path))

    def log_study_artifact(self, path: Path) -> None:
        if self.ok and self.parent_run_id:
            self._safe(self.log_artifact, self.parent_run_id, Path(path))

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        if self.ok and run_id:
            self._safe(self.client.set_tag, run_id, key, scrub_text(str(value)))


def ui_command(runs_dir: Path, port: int = 5000, host: str = "127.0.0.1") -> list[str]:
    import sys

    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", tracking_uri(runs_dir),
            "--default-artifact-root", (Path(runs_dir).resolve() / "artifacts").as_uri(),
            "--host", host, "--port", str(port)]
