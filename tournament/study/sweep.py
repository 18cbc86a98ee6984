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

import json
import logging
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tournament.files import json_hash, write_answer_table, write_json_atomic
from tournament.study.config import SweepConfig
from tournament.study.inputs import load_eval, resolve_candidates
from tournament.study.space import (
    OBJECTIVES,
    TrialPlan,
    enqueue_params,
    group_param_names,
    serve_config,
    suggest_plan,
)
from tournament.study.storage import (
    PidFile,
    TrialHeartbeat,
    counted,
    make_sampler,
    make_storage,
    quiet_optuna,
    recover_local_stale,
    study_dir,
    worker_id,
)

log = logging.getLogger(__name__)


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
        quiet_optuna()
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
        from tournament.judge.emulator import http_client

        with http_client() as client:
            r = client.post(url + "/admin/config", json={"decode": plan.decode, "mode": plan.mode}, timeout=30)
        if r.status_code != 200:
            raise RuntimeError(f"POST /admin/config answered {r.status_code}: {r.text[:300]}")

    # -- one trial ----------------------------------------------------------------------
    def run(self):
        import optuna
        from optuna.trial import TrialState

        from tournament.study.storage import note_tracking
        from tournament.tracking import Tracker, environment_tags

        # first: MLflow that cannot start stops the sweep here (TrackingError), not trial by trial
        self.tracker = Tracker(self.runs_dir, enabled=self.opts.tracking, required=True)
        study = self._study()
        killed, dead_started = self.pidfile.kill_stale()
        if killed:
            self.echo(f"killed {len(killed)} orphan server(s) of dead sweeps: {killed}")
        recovered = recover_local_stale(study, dead_started)
        note_tracking(study, self.tracker, recovered)  # untracked mark; dead workers' runs -> KILLED
        self.pidfile.open()
        if recovered:
            self.echo(f"trials {recovered} were left RUNNING by a dead worker: marked FAIL and queued again")
        self.env_tags = environment_tags()
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
                trial.set_user_attr("worker", worker_id())
                t_ask = time.monotonic()
                try:  # the sampler stays fixed while the trial suggests (define-by-run)
                    with TrialHeartbeat(self.storage, trial._trial_id):
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
        run_id = self.tracker.start_trial(self.opts.study, trial.number, {"worker": worker_id()})
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
            cache_key = json_hash(key_doc, 24)
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
            from tournament.tracking import keep_end

            trial.set_user_attr("fail_reason", keep_end(reason, 2000))  # the cause is at the end
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
        from tournament.judge.emulator import judge

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

        write_answer_table(tdir / "answers.jsonl", self.eval.questions, self.eval.references, answers, scores)
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
            from tournament.tracking import keep_end

            tags["fail_reason"] = keep_end(reason, 4000)
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
