"""MLflow helpers: one experiment per Optuna study (``tournament/<study>``) holding one run per
trial and the study's own run (board, plots, winner.json), and runs of their own for training
builds (`Tracker.start_run` -> `Run`). Every experiment the tool creates carries
``mlflow.experimentKind`` = ``custom_model_development``, so MLflow 3 opens it on its runs, not on
its GenAI (traces) overview.

Store: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI`` (as MLflow's own clients read it: workers
on several hosts log to one tracking server), else ``sqlite:///<runs>/mlflow.db`` with artifacts
under ``<runs>/artifacts`` (the experiment is created with that artifact location), ``<runs>`` =
``mlruns`` by default. No plain file store (MLflow 3 refuses it without ``MLFLOW_ALLOW_FILE_STORE``).

Secrets (`tournament.redact`, whose `scrub` / `scrub_text` are also importable from here): no
secret-named key (HF_TOKEN, api_key) is ever logged, and the *value* of every secret-named
environment variable is replaced by ``***`` in params, tags and text artifacts (a token pasted
into a prompt or a URL does not leak either). Database URLs lose their password.

Starting is strict, logging is best effort. ``Tracker(..., required=True)`` raises
`TrackingError` when MLflow cannot open its store (the message names what is missing, e.g.
``cryptography``), so a sweep or a training run stops before its first trial / step instead of
running untracked. Once started, an MLflow error never fails a trial or a training step: the first
one is logged as an error, later ones are counted and summed up at the end. Trial logging runs on
a background thread so that it does not add to a trial's measured overhead; ``flush()`` waits.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import queue
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable

from tournament.machine import library_versions
from tournament.redact import scrub, scrub_text  # also imported from here by the study's modules

log = logging.getLogger(__name__)

EXPERIMENT = "tournament"  # the experiment of studies from before one experiment per study
KIND_TAG, KIND = "mlflow.experimentKind", "custom_model_development"  # MLflow 3: open on the runs


def study_experiment(study: str) -> str:
    return f"{EXPERIMENT}/{study}"


# MLflow's shared view of a study's experiment (an experiment tag; `tournament ui` prints its link,
# `...runs?viewStateShareKey=tournament`): the judge's numbers as columns, best predicted first
VIEW_KEY = "tournament"
VIEW_METRICS = ("judge/predicted_accuracy", "judge/chars_per_s", "ledger/judge_accuracy_basic", "judge/seen_accuracy",
                "judge/unseen_accuracy", "judge/predicted_accuracy_sd", "judge/health_seconds")
VIEW_TAGS = ("winner",)


def study_view() -> dict[str, Any]:
    metrics = [f"metrics.`{m}`" for m in VIEW_METRICS]
    cols = [*metrics[:2], *(f"tags.`{t}`" for t in VIEW_TAGS), *metrics[2:]]  # accuracy, speed, the pick first
    return {"searchFilter": "", "orderByKey": metrics[0], "orderByAsc": False, "selectedColumns": cols,
            "columnOrder": cols, "columnWidths": {c: 165 for c in cols}}  # wide enough for the names


def view_url(base: str, experiment_id: str) -> str:
    # workflowType: MLflow 3's sidebar in its "Model training" mode (its GenAI mode is the default)
    return (f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?viewStateShareKey={VIEW_KEY}"
            "&workflowType=machine_learning")


def runs_dir_default() -> Path:
    return Path(os.environ.get("TOURNAMENT_RUNS_DIR", "mlruns"))


def tracking_uri(runs_dir: Path, uri: str | None = None) -> str:
    """Where MLflow lives: `uri` (--tracking-uri), else $MLFLOW_TRACKING_URI, else the runs
    folder's sqlite file."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path(runs_dir).resolve() / 'mlflow.db'}"


def artifact_root(uri: str) -> Path | None:
    """`sqlite:///DIR/mlflow.db` -> DIR/artifacts (the project's layout); None for other stores
    (a tracking server picks its own)."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).resolve().parent / "artifacts"
    return None


def keep_end(text: str, limit: int) -> str:
    """At most `limit` characters, keeping the end ("…" first when cut): a traceback's cause is last."""
    return text if len(text) <= limit else "…" + text[len(text) - limit + 1:]


class TrackingError(RuntimeError):
    """MLflow could not start; the message says what is missing (the CLI adds its way out)."""


PIP_NAMES = {"yaml": "pyyaml", "sklearn": "scikit-learn"}


def startup_error(uri: str, e: BaseException) -> str:
    what = str(e) if isinstance(e, ImportError) else f"{type(e).__name__}: {e}"
    what = scrub_text((what.strip().splitlines() or [""])[0][:500])  # SQLAlchemy appends SQL and a link
    hint = ""
    if isinstance(e, ModuleNotFoundError) and e.name:
        top = e.name.split(".")[0]
        hint = f" (pip install {PIP_NAMES.get(top, top)})"
    return f"MLflow could not open {scrub_text(uri)}: {what}{hint}"


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
    """A study's experiment (`start_study` opens it), a run per trial, runs of training builds in
    `experiment`. `required`: raise `TrackingError` when MLflow cannot start (else: a warning, and
    every call is a no-op). After the start every call is best effort."""

    def __init__(self, runs_dir: Path | None = None, experiment: str | None = None, enabled: bool = True,
                 uri: str | None = None, required: bool = False):
        self.uri = tracking_uri(Path(runs_dir) if runs_dir is not None else runs_dir_default(), uri)
        self.enabled = enabled
        self.client = None
        self.experiment_id: str | None = None
        self.parent_run_id: str | None = None
        self.errors = 0  # logging calls that failed after the start
        self._first_error = ""
        self._lock = threading.Lock()
        self._queue: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        if enabled:
            try:
                self._init(experiment)
            except Exception as e:
                self.client = None
                if required:
                    raise TrackingError(startup_error(self.uri, e)) from e
                log.warning("%s; not logging to MLflow", startup_error(self.uri, e))

    def _safe(self, fn: Callable, *a, **kw):
        try:
            return fn(*a, **kw)
        except Exception as e:  # tracking must never fail a trial or a training step
            self._failed(getattr(fn, "__name__", str(fn)), e)
            return None

    def _failed(self, what: str, e: Exception) -> None:
        """Loud once (an error naming the cause), then counted (see `report`)."""
        msg = scrub_text(f"{what}: {type(e).__name__}: {e}")
        with self._lock:
            self.errors += 1
            first = self.errors == 1
            if first:
                self._first_error = msg
        if first:
            log.error("MLflow logging failed (%s). Trials and training go on, but their MLflow records are "
                      "incomplete from here; later MLflow errors are counted, not shown.", msg)
        else:
            log.debug("MLflow: %s", msg)

    def report(self) -> None:
        if self.errors:
            log.warning("MLflow: %d logging call(s) failed in this run (first: %s)", self.errors,
                        keep_end(self._first_error, 300))

    def _init(self, experiment: str | None) -> None:
        from mlflow.tracking import MlflowClient

        art = artifact_root(self.uri)
        if art is not None:
            art.mkdir(parents=True, exist_ok=True)
        self.client = MlflowClient(tracking_uri=self.uri)
        if experiment is None:  # the study's, once start_study names it; the store is checked now
            self.client.search_experiments(max_results=1)
        else:
            self.experiment_id = self.experiment(experiment)

    def experiment(self, name: str) -> str:
        """The id of experiment `name`, created (with the project's artifact folder) when missing;
        its kind tag set either way, so stores from older versions open on their runs too."""
        exp = self.client.get_experiment_by_name(name)
        if exp is None:
            art = artifact_root(self.uri)
            try:
                eid = self.client.create_experiment(name, artifact_location=art.as_uri() if art is not None else None,
                                                    tags={KIND_TAG: KIND})
            except Exception:  # another worker created it first
                eid = self.client.get_experiment_by_name(name).experiment_id
            return eid
        if exp.tags.get(KIND_TAG) != KIND:
            self.client.set_experiment_tag(exp.experiment_id, KIND_TAG, KIND)
        return exp.experiment_id

    @property
    def ok(self) -> bool:
        return self.enabled and self.client is not None

    # parent ------------------------------------------------------------------------------
    def start_study(self, study: str, params: dict[str, Any], tags: dict[str, str], reopen: bool = True) -> str | None:
        if not self.ok:
            return None
        return self._safe(self._start_study, study, params, tags, reopen)

    def _start_study(self, study: str, params: dict[str, Any], tags: dict[str, str], reopen: bool = True) -> str:
        query = f"tags.`tournament.study` = '{study}' and tags.`tournament.kind` = 'study'"
        found = []
        for name in (study_experiment(study), EXPERIMENT):  # a study begun by an older version stays where it is
            exp = self.client.get_experiment_by_name(name)
            found = self.client.search_runs([exp.experiment_id], filter_string=query, max_results=1) if exp else []
            if found:
                break
        self.experiment_id = self.experiment(name if found else study_experiment(study))
        self.client.set_experiment_tag(self.experiment_id, f"mlflow.sharedViewState.{VIEW_KEY}", json.dumps(study_view()))
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
        self.report()

    def kill_run(self, run_id: str | None, reason: str | None, status: str = "KILLED",
                 metrics: dict[str, float] | None = None) -> bool:
        """End a run its dead process left RUNNING: `status` + a `fail_reason` tag (when `reason`),
        and those of `metrics` it lacks. Runs already ended, and runs of another store, are left alone."""
        if not self.ok or not run_id:
            return False

        def _kill() -> bool:
            from mlflow.exceptions import MlflowException

            try:
                run = self.client.get_run(run_id)
            except MlflowException:  # not in this store
                return False
            if run.info.status != "RUNNING":
                return False
            missing = {k: v for k, v in (metrics or {}).items() if k not in run.data.metrics}
            if missing:
                self.log_metrics(run_id, missing)
            if reason:
                self.client.set_tag(run_id, "fail_reason", keep_end(scrub_text(reason), 4000))
            self.client.set_terminated(run_id, status)
            return True

        return bool(self._safe(_kill))

    # a run of its own (a training build) ---------------------------------------------------
    def start_run(self, name: str, params: dict[str, Any] | None = None,
                  tags: dict[str, str] | None = None) -> "Run":
        if not self.ok or self.experiment_id is None:
            return Run()

        def _create() -> str:
            t = {"mlflow.runName": name, **(tags or {})}
            return self.client.create_run(self.experiment_id, tags=scrub(t), run_name=name).info.run_id

        run = Run(self, self._safe(_create))
        if params:
            run.params(params)
        return run

    # child -------------------------------------------------------------------------------
    def start_trial(self, study: str, number: int, tags: dict[str, str]) -> str | None:
        if not self.ok or self.experiment_id is None:
            return None

        def _create() -> str:
            t = {"tournament.study": study, "tournament.kind": "trial", "tournament.trial": str(number),
                 "mlflow.runName": f"{study}-trial-{number}"}  # named by what it served once it ends
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

    def log_metrics(self, run_id: str, metrics: dict[str, float], step: int = 0) -> None:
        self.log_metric_points(run_id, [(metrics, step)])

    def log_metric_points(self, run_id: str, points: list[tuple[dict[str, float], int]]) -> None:
        """Metrics at their steps, in batches of 1000 (missing and NaN values are skipped)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, int(step)) for m, step in points for k, v in m.items()
                 if v is not None and v == v]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i:i + 1000])

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


class Run:
    """One MLflow run of its own (a training build): params, per-step metrics, artifacts, end.
    Metrics are buffered (one write per 200 points or 10 s, not one per step). Best effort; a
    no-op without a tracker (untracked builds)."""

    def __init__(self, tracker: Tracker | None = None, run_id: str | None = None):
        self.tracker, self.run_id = tracker, run_id
        self._buf: list[tuple[dict[str, float], int]] = []
        self._n = 0
        self._last = time.monotonic()

    @property
    def active(self) -> bool:
        return self.tracker is not None and self.run_id is not None

    def params(self, params: dict[str, Any]) -> None:
        if self.active:
            self.tracker._safe(self.tracker.log_params, self.run_id, params)

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        if not self.active:
            return
        self._buf.append((dict(metrics), int(step)))
        self._n += len(metrics)
        if self._n >= 200 or time.monotonic() - self._last > 10:
            self.flush()

    def flush(self) -> None:
        if not self.active or not self._buf:
            return
        buf, self._buf, self._n, self._last = self._buf, [], 0, time.monotonic()
        self.tracker._safe(self.tracker.log_metric_points, self.run_id, buf)

    def artifact(self, path: Path) -> None:
        if self.active:
            self.tracker._safe(self.tracker.log_artifact, self.run_id, Path(path))

    def end(self, status: str = "FINISHED") -> None:
        if not self.active:
            return
        self.flush()
        self.tracker._safe(self.tracker.client.set_terminated, self.run_id, status)
        self.tracker.report()
        self.run_id = None


def ui_command(runs_dir: Path, port: int = 5000, host: str = "127.0.0.1", uri: str | None = None) -> list[str] | None:
    """`mlflow ui` on the store; None when the store is already a tracking server (http[s]://)."""
    import sys

    uri = tracking_uri(runs_dir, uri)
    if uri.startswith(("http://", "https://")):
        return None
    art = artifact_root(uri)
    return [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri,
            *(["--default-artifact-root", art.as_uri()] if art is not None else []),
            "--host", host, "--port", str(port), "--workers", "1"]  # one person's dashboard: 1 is plenty
