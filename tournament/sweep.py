"""The Optuna sweep: candidates x engine settings x decode settings, measured like the judge.

Each trial serves a configuration with the real serve.py (a `ServerProcess`), runs the judge
emulator (`tournament.judge.judge`) against it on the held-out questions and reports two
objectives, both maximised: judge-metric accuracy and characters/s. Hard limits are Optuna
constraints (`trial.set_constraint`, feasible when <= 0), set on every path, failures included:

- ``accuracy``: pass_mark - accuracy
- ``predict_time``: predict seconds scaled to the judge's question count - the predict limit
- ``health``: seconds until GET / answered - the health limit

Engine grouping (ask/tell): a server process belongs to one (candidate, prompt variant, engine
settings) group. A worker asks Optuna for a trial with every parameter free; the group that trial
lands in is started, and the next ``decode_trials_per_engine - 1`` trials of this worker are asked
with the group's parameters fixed (``PartialFixedSampler`` over the same TPE sampler), so only
decode settings / mode change and they reach the running server through ``POST /admin/config``
(sweep mode only). Enqueued known-good configurations are sorted by group. A new group kills the
old server (its port and GPU memory are freed) before starting.

Resume: trials live in the Optuna storage. A RUNNING trial whose worker process is gone (same
host, pid dead; or a stale heartbeat from another host) is marked FAIL and its parameters are
enqueued again; ``--trials N`` counts finished trials, so re-running the same command finishes
the study. Server pids are kept in ``<runs>/servers/<worker pid>.json``; a new sweep kills the
servers of dead workers (servers also die with their parent through PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tournament.files import write_json_atomic
from tournament.sweep_config import (
    EMBEDDED_PREFIX,
    Choices,
    InlineCandidate,
    SweepConfig,
    decode_choice,
    encode_choice,
    normalize_param,
)

log = logging.getLogger(__name__)

OBJECTIVES = ["accuracy", "chars_per_s"]
CONSTRAINTS = ["accuracy", "predict_time", "health"]
HEARTBEAT_S = 10
GRACE_S = 60


def _sha(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()).hexdigest()[:n]


def _progress(message: str) -> None:
    """Fetching, importing or training a candidate takes minutes: say what is happening."""
    import sys

    print(f"  {message}", file=sys.stderr, flush=True)


def default_storage(runs_dir: Path) -> str:
    return f"sqlite:///{Path(runs_dir).resolve() / 'optuna.db'}"


def study_dir(runs_dir: Path, study: str) -> Path:
    return Path(runs_dir) / "studies" / study


# -- candidates -----------------------------------------------------------------------------------
@dataclass
class ResolvedCandidate:
    id: str
    prompt: dict[str, Any]
    engine: dict[str, Any]
    config_hash: str
    info: dict[str, Any]  # what winner.json's "candidate" holds
    decode: dict[str, Any] = field(default_factory=dict)  # the candidate's decode defaults
    model_path: str | None = None  # inline candidates
    gguf_file: str | None = None
    modelscope_id: str | None = None
    revision: str | None = None
    candidate_obj: Any = None  # tournament.candidates.Candidate for YAML candidates
    _dir: Path | None = None

    def model_dir(self) -> Path:
        """Where the weights are now (building/fetching them when needed)."""
        if self._dir is not None:
            return self._dir
        if self.candidate_obj is not None:
            from tournament.candidates import ensure_built

            self._dir = Path(ensure_built(self.candidate_obj, log=_progress))
        elif self.model_path and self.model_path.startswith(EMBEDDED_PREFIX):
            from tournament.models.embedded import ensure_gemma

            self._dir = Path(ensure_gemma(log=_progress))
        else:
            p = Path(self.model_path or "")
            if not p.exists():
                raise FileNotFoundError(f"model path {p} of candidate {self.id!r} does not exist")
            self._dir = p
        return self._dir


def resolve_candidates(cfg: SweepConfig) -> dict[str, ResolvedCandidate]:
    out: dict[str, ResolvedCandidate] = {}
    for entry in cfg.candidates:
        if isinstance(entry, InlineCandidate):
            rc = ResolvedCandidate(
                id=entry.id, prompt=entry.prompt.model_dump(), engine=dict(entry.engine), decode=dict(entry.decode),
                config_hash=_sha({"model_path": entry.model_path, "gguf": entry.gguf_file,
                                  "prompt": entry.prompt.model_dump(), "engine": entry.engine}),
                info={"id": entry.id, "base": entry.base or entry.model_path, "recipe": entry.recipe,
                      "modelscope_id": entry.modelscope_id, "revision": entry.revision},
                model_path=entry.model_path, gguf_file=entry.gguf_file,
                modelscope_id=entry.modelscope_id, revision=entry.revision,
            )
        else:
            from tournament.candidates import load_candidate

            c = load_candidate(cfg.resolve_path(entry))
            hints = c.serve_overrides("unused")
            publish, base = c.publish, c.base
            ms = base.modelscope
            # A trained candidate is fetched from where it was published; an untrained one is its base.
            ms_id = publish.modelscope_id if publish else (ms.id if ms and not c.needs_build() else None)
            rev = (getattr(publish, "revision", None) if publish else None) or (ms.revision if ms and not publish else None)
            chash = c.config_hash()
            rc = ResolvedCandidate(
                id=c.id, prompt=c.prompt.model_dump(), engine=dict(hints.get("engine") or {}),
                decode=dict(hints.get("decode") or {}), config_hash=chash,
                info={"id": c.id, "config_hash": chash, "source": str(entry), "base": base.describe(),
                      "recipe": c.recipe.model_dump(mode="json"), "quantization": c.quantization.model_dump(mode="json"),
                      "modelscope_id": ms_id, "revision": rev},
                modelscope_id=ms_id, revision=rev, candidate_obj=c,
            )
        if rc.id in out:
            raise ValueError(f"two candidates share the id {rc.id!r}")
        rc.info.setdefault("config_hash", rc.config_hash)
        out[rc.id] = rc
    return out


# -- eval questions -------------------------------------------------------------------------------
@dataclass
class EvalSet:
    questions: list[str]
    references: list[str]
    path: str
    hash: str
    sets: list[str | None] = field(default_factory=list)


def load_eval(cfg: SweepConfig) -> EvalSet:
    spec = cfg.eval
    path = cfg.resolve_path(spec.path)
    if not path.exists() and spec.split:
        from tournament.data.split import build_split, load_split_spec

        log.info("eval file %s missing: building split %s", path, spec.split)
        s = load_split_spec(cfg.resolve_path(spec.split))
        build_split(**{k: v for k, v in s.items() if k in (
            "sources", "eval_files", "out", "eval_fraction", "seed", "allow_leakage", "refit", "augment", "name")})
    if not path.exists():
        raise FileNotFoundError(f"eval file {path} not found" + ("" if spec.split else " (give eval.split to build it)"))
    rows: list[tuple[str, str, str | None]] = []
    if path.suffix == ".jsonl":
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                d = json.loads(line)
                if "question" in d and "answer" in d:
                    rows.append((str(d["question"]), str(d["answer"]), d.get("set")))
    if not rows:
        from tournament.data.ingest import read_qa
        from tournament.data.split import set_from_name

        rows = [(r.question, r.answer, r.meta.get("set") or set_from_name(r.source or path)) for r in read_qa(path)]
    if spec.set:
        want = "plus" if spec.set in ("plus", "bonus") else "basic"
        rows = [r for r in rows if (r[2] or "") in (want, "bonus" if want == "plus" else want)]
    rows = rows[spec.offset:]
    if spec.limit:
        rows = rows[: spec.limit]
    if not rows:
        raise ValueError(f"no eval questions left in {path} after set={spec.set} offset={spec.offset} limit={spec.limit}")
    qs, refs, sets = [r[0] for r in rows], [r[1] for r in rows], [r[2] for r in rows]
    return EvalSet(qs, refs, str(path), _sha([qs, refs]), sets)


# -- search space ---------------------------------------------------------------------------------
@dataclass
class TrialPlan:
    candidate: str
    prompt_variant: str | None
    engine: dict[str, Any]
    decode: dict[str, Any]
    mode: str

    @property
    def group(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "prompt": self.prompt_variant, "engine": self.engine}

    @property
    def group_key(self) -> str:
        return _sha(self.group, 12)


def _suggest(trial, name: str, spec: Any) -> Any:
    p = normalize_param(name, spec)
    if p is None:
        return spec
    if isinstance(p, Choices):
        encoded = [encode_choice(c) for c in p.choices]
        v = trial.suggest_categorical(name, encoded)
        return decode_choice(v, p.choices[encoded.index(v)])
    if p.is_int():
        return trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)
    return trial.suggest_float(name, p.low, p.high, step=p.step, log=p.log)


def group_param_names(cfg: SweepConfig, candidates: dict[str, ResolvedCandidate]) -> list[str]:
    names = []
    if len(cfg.space.candidate or candidates) > 1:
        names.append("candidate")
    if cfg.space.prompt and len(cfg.space.prompt) > 1:
        names.append("prompt")
    names += [f"engine.{k}" for k, v in cfg.space.engine.items() if normalize_param(f"engine.{k}", v) is not None]
    return names


def suggest_plan(trial, cfg: SweepConfig, candidates: dict[str, ResolvedCandidate]) -> TrialPlan:
    """Define-by-run: group parameters first, then decode settings and mode."""
    from tournament.serving.config import DecodeSettings, EngineSettings

    ids = cfg.space.candidate or list(candidates)
    unknown = [i for i in ids if i not in candidates]
    if unknown:
        raise ValueError(f"space.candidate names unknown candidate(s) {unknown}; known: {list(candidates)}")
    cand = trial.suggest_categorical("candidate", ids) if len(ids) > 1 else ids[0]
    variants = cfg.space.prompt
    pv = None
    if variants:
        names = list(variants)
        pv = trial.suggest_categorical("prompt", names) if len(names) > 1 else names[0]
    engine = {**EngineSettings().model_dump(), **candidates[cand].engine}
    for k, spec in cfg.space.engine.items():
        engine[k] = _suggest(trial, f"engine.{k}", spec)
    decode = {**DecodeSettings().model_dump(), **candidates[cand].decode}
    for k, spec in cfg.space.decode.items():
        decode[k] = _suggest(trial, f"decode.{k}", spec)
    mode = _suggest(trial, "mode", cfg.space.mode)
    engine = EngineSettings.model_validate(engine).model_dump()
    decode = DecodeSettings.model_validate(decode).model_dump()
    return TrialPlan(cand, pv, engine, decode, mode)


def serve_config(plan: TrialPlan, cfg: SweepConfig, rc: ResolvedCandidate, model_dir: str) -> dict[str, Any]:
    from tournament.prompting import PromptSpec
    from tournament.serving.config import ServeConfig, deep_merge

    prompt = dict(rc.prompt)
    if plan.prompt_variant is not None and cfg.space.prompt:
        prompt = deep_merge(prompt, cfg.space.prompt[plan.prompt_variant] or {})
    model = {"path": model_dir, "gguf_file": rc.gguf_file, "modelscope_id": rc.modelscope_id, "revision": rc.revision}
    sc = ServeConfig.model_validate({"model": model, "prompt": PromptSpec.model_validate(prompt).model_dump(),
                                     "engine": plan.engine, "decode": plan.decode, "mode": plan.mode})
    return sc.model_dump()


def enqueue_params(entry: dict[str, Any], cfg: SweepConfig, candidates) -> dict[str, Any]:
    """Turn a known-good config from the sweep file into Optuna parameter values."""
    params: dict[str, Any] = {}
    if "candidate" in entry:
        params["candidate"] = entry["candidate"]
    if "prompt" in entry:
        params["prompt"] = entry["prompt"]
    for section in ("engine", "decode"):
        for k, v in (entry.get(section) or {}).items():
            name = f"{section}.{k}"
            spec = cfg.space.params(section).get(k)
            if normalize_param(name, spec) is None:
                if spec is not None and spec != v:
                    log.warning("enqueue: %s=%r but the sweep fixes it to %r; ignored", name, v, spec)
                continue
            params[name] = encode_choice(v)
    if "mode" in entry and normalize_param("mode", cfg.space.mode) is not None:
        params["mode"] = entry["mode"]
    return params


# -- servers, pidfiles ----------------------------------------------------------------------------
def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
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
            if doc.get("host") != host or doc.get("owner") == os.getpid() or _pid_alive(int(doc.get("owner", 0))):
                continue
            if isinstance(doc.get("started_at"), (int, float)):
                dead_started.append(float(doc["started_at"]))
            for pid in doc.get("servers", []):
                if _pid_alive(pid) and "serve:app" in _cmdline(pid):
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
    key: str
    proc: Any  # ServerProcess
    health_seconds: float
    log_path: Path


# -- the worker -----------------------------------------------------------------------------------
@dataclass
class SweepOptions:
    trials: int
    study: str
    storage: str
    runs_dir: Path
    cache_speed: bool = True  # re-measure speed on a cache hit (False: reuse everything)
    tracking: bool = True


@dataclass
class SweepResult:
    study: str
    storage: str
    ran: list[int]
    complete: int
    failed: int
    overhead: list[dict[str, float]]

    def overhead_summary(self) -> dict[str, float] | None:
        ratios = [o["overhead_ratio"] for o in self.overhead if o.get("decode_only")]
        if not ratios:
            return None
        secs = [o["overhead_seconds"] for o in self.overhead if o.get("decode_only")]
        return {"decode_only_trials": len(ratios), "overhead_ratio_median": statistics.median(ratios),
                "overhead_ratio_max": max(ratios), "overhead_seconds_median": statistics.median(secs)}


class _Heartbeat:
    def __init__(self, storage, trial_id: int, interval: float = HEARTBEAT_S):
        self.storage, self.trial_id, self.interval = storage, trial_id, interval
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True, name="optuna-heartbeat")

    def _run(self):
        while not self._stop.wait(self.interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:
                log.debug("heartbeat failed", exc_info=True)

    def __enter__(self):
        try:
            self.storage.record_heartbeat(self.trial_id)
        except Exception:
            pass
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join(timeout=5)


def normalize_storage_url(url: str) -> str:
    """SQLAlchemy 2.1 maps ``postgresql://`` to psycopg 3; use psycopg2 when only it is installed."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            import importlib.util

            if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
                return "postgresql+psycopg2://" + url[len(prefix):]
    return url


def make_storage(url: str):
    import optuna

    url = normalize_storage_url(url)

    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
    else:
        kwargs["engine_kwargs"] = {"pool_pre_ping": True}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(
            url, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
            heartbeat_stale_trial_callback=_retry_stale, **kwargs,
        )
    if url.startswith("sqlite"):
        # WAL + synchronous=NORMAL: each storage write costs ~1 ms instead of an fsync (~30 ms);
        # still safe against kill -9 (only a power cut can lose the last transaction).
        from sqlalchemy import event

        @event.listens_for(storage.engine, "connect")
        def _pragmas(dbapi_conn, _record):
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        storage.engine.dispose()
    return storage


def _retry_stale(study, trial) -> None:
    """Heartbeat went stale (a dead worker elsewhere): run its parameters again."""
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def make_sampler(seed: int):
    """TPE: multivariate (joint model of the parameters), group (parameters that appear together,
    e.g. per-engine settings, are modelled together), constraints read from the trials
    (`trial.set_constraint`, Optuna 5) so infeasible regions are avoided."""
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(multivariate=True, group=True, seed=seed, n_startup_trials=5,
                                          constant_liar=True)


def _quiet_optuna() -> None:
    import warnings

    import optuna

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def superseded(trials) -> set[int]:
    """FAIL trials whose parameters were enqueued again (they do not count towards --trials)."""
    out = set()
    for t in trials:
        r = t.user_attrs.get("retry_of")
        if r is not None:
            out.add(int(r))
        r = t.system_attrs.get("failed_trial")
        if r is not None:
            out.add(int(r))
    return out


def counted(trials) -> int:
    """Finished (COMPLETE or real FAIL) and in-flight trials, against the --trials target."""
    from optuna.trial import TrialState

    sup = superseded(trials)
    n = 0
    for t in trials:
        if t.state in (TrialState.COMPLETE, TrialState.RUNNING):
            n += 1
        elif t.state == TrialState.FAIL and t.number not in sup:
            n += 1
    return n


# A live worker names itself (user attr "worker") milliseconds after `ask`; a trial still unnamed
# after this long was asked by a worker that died in between.
UNNAMED_GRACE_S = 5.0


def _unnamed_orphans(study, dead_started: list[float]) -> list[Any]:
    """RUNNING trials with no worker, asked after a now-dead worker of this host started (it was
    killed between `ask` and naming the trial). Waits until each is UNNAMED_GRACE_S old, so that a
    live worker's trial in that same millisecond window is never taken."""
    import datetime as _dt

    from optuna.trial import TrialState

    if not dead_started:
        return []
    # the dead worker recorded its start before its first ask; optuna stores naive local times
    since = _dt.datetime.fromtimestamp(min(dead_started))

    def unnamed():
        return [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if "worker" not in t.user_attrs and t.datetime_start is not None and t.datetime_start >= since]

    found = unnamed()
    if found:
        youngest = max(t.datetime_start for t in found)
        wait = UNNAMED_GRACE_S - (_dt.datetime.now() - youngest).total_seconds()
        if wait > 0:
            time.sleep(wait)
        found = unnamed()
    return found


def recover_local_stale(study, dead_started: list[float] = ()) -> list[int]:
    """RUNNING trials of dead workers on this host: FAIL (reason recorded) + enqueue again. These
    are the trials a dead worker named, and the unnamed ones it asked just before dying."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    out = []
    stale = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        w = str(t.user_attrs.get("worker", ""))
        h, _, pid = w.rpartition(":")
        if h != host or not pid.isdigit() or int(pid) == os.getpid():
            continue
        if _pid_alive(int(pid)):
            continue
        stale.append((t, f"worker {w} died while the trial was running"))
    stale += [(t, "a worker of this host died between asking for the trial and naming it")
              for t in _unnamed_orphans(study, list(dead_started))]
    for t, reason in stale:
        st = study._storage
        try:
            st.set_trial_user_attr(t._trial_id, "fail_reason", reason)
            for c in CONSTRAINTS:
                key = f"constraints:{c}"
                if key not in t.system_attrs:
                    st.set_trial_system_attr(t._trial_id, key, 1.0)
            if st.set_trial_state_values(t._trial_id, TrialState.FAIL):
                # a worker killed between two suggest calls left part of a plan: the retry keeps
                # those choices and Optuna draws the rest (nothing was measured yet)
                study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})
                out.append(t.number)
        except Exception as e:  # another worker got there first
            log.debug("stale trial %d: %s", t.number, e)
    return out


class Sweep:
    def __init__(self, cfg: SweepConfig, opts: SweepOptions, echo: Callable[[str], None] = print):
        self.cfg, self.opts, self.echo = cfg, opts, echo
        self.runs_dir = Path(opts.runs_dir)
        self.sdir = study_dir(self.runs_dir, opts.study)
        self.sdir.mkdir(parents=True, exist_ok=True)
        self.eval = load_eval(cfg)  # first: it may build the split that trained candidates hash
        self.candidates = resolve_candidates(cfg)
        self.server: GroupServer | None = None
        self.bad_groups: dict[str, str] = {}
        self.pidfile = PidFile(self.runs_dir)
        self.overhead: list[dict[str, float]] = []
        self.ran: list[int] = []

    # -- setup ---------------------------------------------------------------------------
    def _study(self):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        _quiet_optuna()
        self.storage = make_storage(self.opts.storage)
        self.base_sampler = make_sampler(self.cfg.seed)
        study = optuna.create_study(study_name=self.opts.study, storage=self.storage, sampler=self.base_sampler,
                                    directions=["maximize", "maximize"], load_if_exists=True)
        attrs = study.user_attrs
        if "sweep_config" not in attrs:
            study.set_metric_names(OBJECTIVES)
            study.set_user_attr("sweep_config", json.loads(self.cfg.model_dump_json()))
            study.set_user_attr("fingerprint", self.cfg.fingerprint())
            study.set_user_attr("judge", self.cfg.judge.model_dump())
            study.set_user_attr("eval", {"path": self.eval.path, "hash": self.eval.hash, "n": len(self.eval.questions)})
        elif attrs.get("fingerprint") != self.cfg.fingerprint():
            self.echo(f"warning: study {self.opts.study!r} was started with another sweep file "
                      f"(fingerprint {attrs.get('fingerprint')} != {self.cfg.fingerprint()}); trials are mixed")
        if not attrs.get("enqueued"):
            entries = [(enqueue_params(e, self.cfg, self.candidates), e) for e in self.cfg.enqueue]
            # grouped order: one server start per group of known-good configs
            entries.sort(key=lambda pe: json.dumps({k: v for k, v in pe[0].items() if not k.startswith(("decode.", "mode"))},
                                                   sort_keys=True, default=str))
            for params, _ in entries:
                study.enqueue_trial(params, skip_if_exists=True)
            study.set_user_attr("enqueued", True)
        return study

    # -- servers ------------------------------------------------------------------------
    def _stop_server(self) -> None:
        if self.server is not None:
            pid = self.server.proc.proc.pid if self.server.proc.proc else None
            self.server.proc.stop()
            if pid:
                self.pidfile.remove(pid)
            self.server = None

    def _ensure_server(self, plan: TrialPlan, sc: dict[str, Any]) -> GroupServer:
        from tournament.serving.process import ServerProcess

        if self.server is not None and self.server.key == plan.group_key and self.server.proc.alive():
            return self.server
        self._stop_server()
        if plan.group_key in self.bad_groups:
            raise RuntimeError(f"engine group failed before: {self.bad_groups[plan.group_key]}")
        log_path = self.sdir / "servers" / f"{plan.group_key}-{int(time.time())}.log"
        proc = ServerProcess(sc, sweep_mode=True, log_path=log_path)
        try:
            proc.start()
            self.pidfile.add(proc.proc.pid)
            health = proc.wait_healthy(self.cfg.judge.start_timeout)
        except BaseException as e:
            if proc.proc is not None:
                self.pidfile.remove(proc.proc.pid)
            proc.stop()
            if not isinstance(e, KeyboardInterrupt):
                self.bad_groups[plan.group_key] = _reason(e)
            raise
        self.server = GroupServer(plan.group_key, proc, health, log_path)
        return self.server

    def _configure(self, url: str, plan: TrialPlan) -> None:
        from tournament.judge import http_client

        with http_client() as client:
            r = client.post(url + "/admin/config", json={"decode": plan.decode, "mode": plan.mode}, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"POST /admin/config answered {r.status_code}: {r.text[:300]}")

    # -- one trial ----------------------------------------------------------------------
    def run(self):
        from optuna.trial import TrialState

        study = self._study()
        killed, dead_started = self.pidfile.kill_stale()
        if killed:
            self.echo(f"killed {len(killed)} orphan server(s) of dead sweeps: {killed}")
        recovered = recover_local_stale(study, dead_started)
        self.pidfile.open()
        if recovered:
            self.echo(f"trials {recovered} were left RUNNING by a dead worker: marked FAIL and queued again")
        self.tracker = None
        from tournament.tracking import Tracker, environment_tags

        self.env_tags = environment_tags()
        self.tracker = Tracker(self.runs_dir, enabled=self.opts.tracking)
        self.tracker.start_study(self.opts.study, {"sweep": json.loads(self.cfg.model_dump_json()),
                                                   "eval_hash": self.eval.hash},
                                 {**self.env_tags, "storage": self.opts.storage})
        group_left = 0
        group_params: dict[str, Any] | None = None
        gnames = group_param_names(self.cfg, self.candidates)
        self.echo(f"study {self.opts.study!r}: {len(self.eval.questions)} eval questions, target {self.opts.trials} "
                  f"trials, storage {_safe_url(self.opts.storage)}")
        try:
            while True:
                import optuna

                optuna.storages.fail_stale_trials(study)
                trials = study.get_trials(deepcopy=False)
                if counted(trials) >= self.opts.trials:
                    break
                waiting = any(t.state == TrialState.WAITING for t in trials)
                if group_left > 0 and group_params and not waiting and self.server is not None:
                    study.sampler = optuna.samplers.PartialFixedSampler(group_params, self.base_sampler)
                else:
                    study.sampler = self.base_sampler
                trial = study.ask()
                trial.set_user_attr("worker", _worker_id())
                t_ask = time.monotonic()
                try:  # the sampler stays fixed while the trial suggests (define-by-run)
                    with _Heartbeat(self.storage, trial._trial_id):
                        new_group = self._run_trial(study, trial, t_ask)
                finally:
                    study.sampler = self.base_sampler
                self.ran.append(trial.number)
                if new_group:
                    group_params = {k: v for k, v in trial.params.items() if k in gnames}
                    group_left = self.cfg.decode_trials_per_engine - 1
                else:
                    group_left -= 1
                if self.server is None:
                    group_left = 0
        finally:
            self._stop_server()
            self.pidfile.close()
            self.tracker.end_study()
        trials = study.get_trials(deepcopy=False)
        return SweepResult(self.opts.study, self.opts.storage, self.ran,
                           sum(t.state == TrialState.COMPLETE for t in trials),
                           sum(t.state == TrialState.FAIL for t in trials), self.overhead)

    def _run_trial(self, study, trial, t_ask: float) -> bool:
        """Run one trial to its end (tell). Returns True when it started a new server."""
        tdir = self.sdir / "trials" / f"{trial.number:04d}"
        tdir.mkdir(parents=True, exist_ok=True)
        run_id = self.tracker.start_trial(self.opts.study, trial.number, {"worker": _worker_id()})
        if run_id:
            trial.set_user_attr("mlflow_run_id", run_id)
        plan: TrialPlan | None = None
        sc: dict[str, Any] | None = None
        started = False
        health_s: float | None = None
        try:
            plan = suggest_plan(trial, self.cfg, self.candidates)
            rc = self.candidates[plan.candidate]
            trial.set_user_attr("candidate", rc.info)
            trial.set_user_attr("group_key", plan.group_key)
            key_doc = {"cand": rc.config_hash, "prompt": plan.prompt_variant, "engine": plan.engine,
                       "decode": plan.decode, "mode": plan.mode, "eval": self.eval.hash}
            cache_key = _sha(key_doc, 24)
            trial.set_user_attr("cache_key", cache_key)
            cached = self._cache_get(cache_key)
            if cached is not None and not self.opts.cache_speed:
                sc = cached["serve_config"]
                health_s = cached["metrics"].get("health_seconds")
                metrics, answers, scores = dict(cached["metrics"]), cached["answers"], cached["scores"]
                metrics["cached_speed"] = 1.0
                trial.set_user_attr("cache", "answers+speed")
            else:
                model_dir = str(Path(rc.model_dir()).resolve())
                sc = serve_config(plan, self.cfg, rc, model_dir)
                started = self.server is None or self.server.key != plan.group_key or not self.server.proc.alive()
                t_srv = time.monotonic()
                srv = self._ensure_server(plan, sc)
                health_s = srv.health_seconds
                t_after_start = time.monotonic()
                self._configure(srv.proc.url, plan)
                metrics, answers, scores = self._measure(srv)
                if cached is not None:  # same config measured before: keep its answers for accuracy
                    answers, scores = cached["answers"], cached["scores"]
                    for k in ("accuracy", "zh_rougeL", "accuracy_stderr"):
                        metrics[k] = cached["metrics"][k]
                    trial.set_user_attr("cache", "answers")
                else:
                    self._cache_put(cache_key, sc, metrics, answers, scores)
                start_cost = (t_after_start - t_srv) if started else 0.0
                elapsed = time.monotonic() - t_ask - start_cost
                metrics["overhead_seconds"] = max(0.0, elapsed - metrics["predict_seconds_total"])
                metrics["overhead_ratio"] = metrics["overhead_seconds"] / max(metrics["predict_seconds_total"], 1e-9)
                self.overhead.append({"trial": trial.number, "decode_only": not started,
                                      "overhead_seconds": metrics["overhead_seconds"],
                                      "overhead_ratio": metrics["overhead_ratio"]})
            # constraints, then tell
            j = self.cfg.judge
            scaled = metrics["predict_seconds"] * j.questions / max(1, len(self.eval.questions))
            metrics["predict_seconds_scaled"] = scaled
            cons = {"accuracy": j.pass_mark - metrics["accuracy"],
                    "predict_time": scaled - j.predict_timeout,
                    "health": (health_s or 0.0) - j.health_timeout}
            for k, v in cons.items():
                trial.set_constraint(k, v)
            trial.set_user_attr("metrics", metrics)
            trial.set_user_attr("serve_config", sc)
            trial.set_user_attr("feasible", all(v <= 0 for v in cons.values()))
            self._write_trial_files(tdir, trial.number, plan, sc, metrics, answers, scores)
            study.tell(trial, [metrics["accuracy"], metrics["chars_per_s"]])
            self.echo(f"trial {trial.number}: {plan.candidate}/{plan.prompt_variant or '-'} "
                      f"max_tokens={plan.decode['max_tokens']} acc={metrics['accuracy']:.3f} "
                      f"chars/s={metrics['chars_per_s']:.0f} {'feasible' if all(v <= 0 for v in cons.values()) else 'infeasible'}"
                      f"{' (new server)' if started else ''}")
            self._track(run_id, trial, plan, sc, metrics, tdir, "FINISHED", None)
            return started
        except KeyboardInterrupt:
            self._fail(study, trial, "interrupted (Ctrl-C)", health_s, run_id, plan, sc, tdir)
            study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
            raise
        except Exception as e:
            reason = _reason(e)
            if self.server is not None and not self.server.proc.alive():
                self.bad_groups.setdefault(self.server.key, f"server died: {reason}")
                self._stop_server()
            self._fail(study, trial, reason, health_s, run_id, plan, sc, tdir)
            return started

    def _fail(self, study, trial, reason, health_s, run_id, plan, sc, tdir) -> None:
        from optuna.trial import TrialState

        j = self.cfg.judge
        cons = {"accuracy": j.pass_mark, "predict_time": j.predict_timeout,
                "health": (health_s - j.health_timeout) if health_s is not None else j.health_timeout}
        try:
            for k, v in cons.items():
                trial.set_constraint(k, v)
            trial.set_user_attr("fail_reason", reason[:2000])
            trial.set_user_attr("feasible", False)
            if sc is not None:
                trial.set_user_attr("serve_config", sc)
            study.tell(trial, state=TrialState.FAIL)
        except Exception:
            log.exception("could not record the failure of trial %d", trial.number)
        self.echo(f"trial {trial.number}: FAIL: {reason.splitlines()[0][:300]}")
        self._track(run_id, trial, plan, sc, {}, tdir, "FAILED", reason)

    # -- measurement ---------------------------------------------------------------------
    def _measure(self, srv: GroupServer):
        from tournament.judge import judge

        j = self.cfg.judge
        reports = []
        for i in range(self.cfg.speed_repeats):
            # Only the first run is scored: greedy repeats answer alike, and scoring is CPU time
            # that would otherwise count as decode-only trial overhead.
            rep = judge(srv.proc.url, self.eval.questions, self.eval.references, health_timeout=j.health_timeout,
                        predict_timeout=j.local_predict_timeout, poll=0.05, score=i == 0)
            if rep.failed:
                raise RuntimeError(f"judge run failed: {rep.reason}")
            reports.append(rep)
        first = reports[0]
        speeds = [r.chars_per_s for r in reports]
        lens = [len(a) for a in first.answers]
        n = len(first.scores)
        sd = statistics.pstdev(first.scores) if n > 1 else 0.0
        metrics = {
            "accuracy": first.accuracy, "zh_rougeL": first.zh_rougeL,
            "accuracy_stderr": sd / (n ** 0.5) if n > 1 else 0.5,
            "chars_per_s": statistics.median(speeds), "chars_per_s_min": min(speeds), "chars_per_s_max": max(speeds),
            "chars_per_s_std": statistics.pstdev(speeds) if len(speeds) > 1 else 0.0,
            "predict_seconds": statistics.median([r.predict_seconds for r in reports]),
            "predict_seconds_total": sum(r.predict_seconds for r in reports),
            "health_seconds": srv.health_seconds, "n_questions": float(n),
            "answer_chars_mean": statistics.mean(lens), "answer_chars_median": statistics.median(lens),
            "answer_chars_max": float(max(lens)), "answer_chars_min": float(min(lens)),
            "empty_answers": float(sum(1 for a in first.answers if not a)), "speed_repeats": float(len(reports)),
        }
        return metrics, list(first.answers), list(first.scores)

    # -- cache ---------------------------------------------------------------------------
    def _cache_path(self, key: str) -> Path:
        return self.runs_dir / "cache" / f"{key}.json"

    def _cache_get(self, key: str) -> dict[str, Any] | None:
        p = self._cache_path(key)
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def _cache_put(self, key, sc, metrics, answers, scores) -> None:
        write_json_atomic(self._cache_path(key),
                          {"serve_config": sc, "metrics": metrics, "answers": answers, "scores": scores}, indent=None)

    # -- files + tracking ----------------------------------------------------------------
    def _write_trial_files(self, tdir: Path, number: int, plan, sc, metrics, answers, scores) -> None:
        from tournament.tracking import scrub

        with open(tdir / "answers.jsonl", "w", encoding="utf-8") as f:
            for q, ref, a, s in zip(self.eval.questions, self.eval.references, answers, scores):
                f.write(json.dumps({"question": q, "reference": ref, "answer": a, "score": s, "chars": len(a)},
                                   ensure_ascii=False) + "\n")
        (tdir / "serve_config.json").write_text(json.dumps(scrub(sc), indent=2, ensure_ascii=False), encoding="utf-8")
        (tdir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")

    def _track(self, run_id, trial, plan, sc, metrics, tdir: Path, status: str, reason: str | None) -> None:
        if not run_id:
            return
        params: dict[str, Any] = dict(trial.params)
        if plan is not None:
            params.update({"candidate": plan.candidate, "prompt_variant": plan.prompt_variant,
                           "engine": plan.engine, "decode": plan.decode, "mode": plan.mode})
        tags = dict(self.env_tags)
        tags["eval_hash"] = self.eval.hash
        if plan is not None:
            tags["candidate_hash"] = self.candidates[plan.candidate].config_hash
            tags["group_key"] = plan.group_key
        if reason:
            tags["fail_reason"] = reason[:4000]
        if sc is not None and not (tdir / "serve_config.json").exists():
            from tournament.tracking import scrub

            (tdir / "serve_config.json").write_text(json.dumps(scrub(sc), indent=2), encoding="utf-8")
        artifacts = {p.name: p for p in (tdir / "answers.jsonl", tdir / "serve_config.json") if p.exists()}
        srv_log = self.server.log_path if self.server is not None else None
        if srv_log is None and self.sdir.joinpath("servers").exists():
            logs = sorted(self.sdir.joinpath("servers").glob("*.log"), key=lambda p: p.stat().st_mtime)
            srv_log = logs[-1] if logs else None
        if srv_log is not None and srv_log.exists():
            snap = tdir / "server.log"
            snap.write_bytes(srv_log.read_bytes()[-2_000_000:])
            artifacts["server.log"] = snap
        m = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        self.tracker.finish_trial(run_id, params=params, metrics=m, tags=tags, artifacts=artifacts, status=status)


def _reason(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}"
    low = text.lower()
    if "out of memory" in low or "outofmemory" in low or "cuda oom" in low:
        text = "OOM: " + text
    return text


def _safe_url(url: str) -> str:
    from tournament.tracking import scrub_text

    return scrub_text(url)


def run_sweep(cfg: SweepConfig, opts: SweepOptions, echo: Callable[[str], None] = print) -> SweepResult:
    return Sweep(cfg, opts, echo).run()
