"""The Optuna sweep: candidates x engine settings x decode settings, measured like the judge.

Each trial serves a configuration with the real serve.py (`ServerProcess`es, see servers.py):
the build that ships (the refit of a trained recipe, or a single build) and, for a trained recipe,
its honest build. The judge emulator measures both on the eval questions (measure.py): seen
accuracy (refit), unseen accuracy (honest), chars/s of the shipped build. The judge model
(judge_model.py) blends seen and unseen into a predicted judge accuracy. The objectives (by
default predicted judge accuracy and characters/s, both maximised) and the hard limits (Optuna
constraints, feasible when <= 0, set on every path, failures included) are declared in
objectives.py; what a trial recorded is read back through record.py.

Repeats: a trial whose parameters equal a finished trial's is not measured again; it takes that
trial's results (user attr ``duplicate_of``) and does not count towards ``--trials``. After
``max_repeat_draws`` repeats in a row the search space is exhausted and the sweep stops.

Engine grouping (ask/tell): a server process belongs to one (candidate, prompt variant, engine
settings) group. A worker asks Optuna for a trial with every parameter free; the group that trial
lands in is started, and the next ``decode_trials_per_engine - 1`` trials of this worker are asked
with the group's parameters fixed (``PartialFixedSampler`` over the same TPE sampler), so only
decode settings / mode change and they reach the running server through ``POST /admin/config``
(sweep mode only). Enqueued known-good configurations run group by group, in the file's order. A
new group kills the old servers (their port and GPU memory are freed) before starting.

Resume: trials live in the Optuna storage. A RUNNING trial whose worker process is gone (same
host, pid dead; or a stale heartbeat from another host) is marked FAIL and its parameters are
enqueued again; ``--trials N`` counts finished trials, so re-running the same command finishes
the study. Server pids are kept in ``<runs>/servers/<host>-<worker pid>.json``; a new sweep kills
the servers of dead workers (servers also die with their parent through PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tournament.files import json_hash
from tournament.redact import scrub, scrub_text
from tournament.study.config import SweepConfig
from tournament.study.draw_ahead import DrawnAhead
from tournament.study.inputs import builds_ready, load_eval, prebuild, resolve_candidates, speed_plan
from tournament.study.ledger import judge_model_from_ledger
from tournament.study.measure import Measurement, measure
from tournament.study.sweep_result import SweepOptions, SweepResult
from tournament.study.records import AnswerCache, track_trial, write_trial_files
from tournament.study.objectives import constraint_values, violations
from tournament.study.optuna_private import fixed_params, retry_params, trial_id
from tournament.study.served import record_serve_config
from tournament.study.served_prompt import SERVED_AS, ServedPrompts, served_params
from tournament.study.optuna_storage import make_sampler, make_storage, quiet_optuna, study_dir
from tournament.study.recipes import OutOfTime, OverBudget, RecipeBook, param_names
from tournament.study.recovery import TrialHeartbeat, counted, finished_counts, recover_local_stale, worker_id
from tournament.study.servers import GroupServers, PidFile, failure_reason
from tournament.study.sweep_progress import SweepProgress, trial_heading, trial_line
from tournament.study.space import (
    TrialPlan,
    group_param_names,
    serve_config,
    suggest_plan,
)

log = logging.getLogger(__name__)
ACCURACY_KEYS = ("seen_", "unseen_", "predicted_", "accuracy", "zh_rougeL")
OVERHEAD_KEYS = ("overhead_seconds", "overhead_ratio", "overhead_reset_seconds", "overhead_judge_seconds",
                 "prefix_cache_resets", "prefix_cache_resets_early", "prefix_cache_reset_seconds")
GROUP_REPEATS = 3  # repeats in a row inside one engine group before the group is released


class Sweep:
    def __init__(self, cfg: SweepConfig, opts: SweepOptions, echo: Callable[[str], None] = print,
                 progress: SweepProgress | None = None):
        self.cfg, self.opts, self.progress = cfg, opts, progress or SweepProgress(live=False)
        self.echo = self.progress.wrap(lambda text: echo(scrub_text(text)))  # no secret reaches stdout
        self.runs_dir = Path(opts.runs_dir)
        self.sdir = study_dir(self.runs_dir, opts.study)
        self.sdir.mkdir(parents=True, exist_ok=True)
        self.eval = load_eval(cfg)  # first: it may build the split that trained candidates hash
        self.candidates = resolve_candidates(cfg)  # may build the refit dataset and its speed pool
        self.templates = dict(self.candidates)  # what `candidate` draws; drawn recipes join self.candidates
        self.recipes = RecipeBook(cfg, self.candidates, echo=self.echo, before_build=self._make_room,
                                  draw_ahead=self._draw_ahead) if cfg.space.draws_recipes else None
        self.speed_plan, self.speed_pool_path = speed_plan(cfg)
        sp = self.speed_plan
        self.speed_key = json_hash([sp.pool, sp.size, sp.seed, sp.cycled], 16) if sp else None
        self.judge_model = judge_model_from_ledger(opts.ledger)
        self.pidfile = PidFile(self.runs_dir)
        self.servers = GroupServers(self.sdir / "servers", self.pidfile, cfg.judge.start_timeout, failure_reason,
                                    together=cfg.start_builds_together, swap=cfg.swap_weights,
                                    keep=2 if cfg.swap_weights else 1,  # fp8 or not: two pairs to swap into
                                    check_questions=self.eval.questions[:8],
                                    compile_cache=self.sdir / "compile-cache" if cfg.judge.cold_start else None)
        self.cache = AnswerCache(self.runs_dir)
        self.prompts = ServedPrompts(cfg, self.echo)  # `chat` on a build without a chat template is `plain`
        self.overhead: list[dict[str, float]] = []
        self.sigint = threading.Event()  # set by run()'s SIGINT handler
        self.ran: list[int] = []
        self.repeats: list[int] = []

    # -- setup ---------------------------------------------------------------------------
    def _study(self):
        from tournament.study.study_setup import enqueue_entries, open_study

        quiet_optuna()
        self.storage = make_storage(self.opts.storage)
        self.base_sampler = make_sampler(self.cfg.seed)
        setup = {"judge_model": self.judge_model.to_dict(),
                 "eval": {"path": self.eval.path, "hash": self.eval.hash, "n": len(self.eval.questions)}}
        if self.speed_plan is not None:
            setup["speed"] = {"pool": self.speed_pool_path, "questions": self.speed_plan.size,
                              "seed": self.speed_plan.seed, "hash": self.speed_key}
        study = open_study(self.cfg, self.opts, self.storage, self.base_sampler, setup, self.echo)
        enqueue_entries(study, self.cfg, self.candidates)
        return study

    # -- the loop -------------------------------------------------------------------------
    def run(self):
        from tournament.study.sigint import noting_sigint

        with noting_sigint() as self.sigint:
            return self._run()

    def _run(self):
        import optuna
        from optuna.trial import TrialState

        from tournament.study.run_repair import note_tracking
        from tournament.tracking import Tracker, environment_tags

        t_start = time.monotonic()
        build_s = 0.0
        if self.recipes is not None and self.opts.timeout_s is not None:  # no batch of builds past it
            self.recipes.deadline = t_start + self.opts.timeout_s
        # first: MLflow that cannot start stops the sweep here (TrackingError), not trial by trial
        self.tracker = Tracker(self.runs_dir, enabled=self.opts.tracking, required=True)
        study = self._study()
        self.ahead = DrawnAhead(self.storage, self.echo)
        killed, dead_started = self.pidfile.kill_stale()
        if killed:
            self.echo(f"killed {len(killed)} orphan server(s) of dead sweeps: {killed}")
        recovered = recover_local_stale(study, dead_started)
        note_tracking(study, self.tracker, recovered)  # untracked mark; dead workers' runs -> KILLED
        self.pidfile.open()
        if recovered:
            self.echo(f"trials {recovered} were left RUNNING by a dead worker: marked FAIL and queued again")
        self.env_tags = environment_tags()
        if self.cfg.build_workers and self.recipes is None:  # drawn recipes are built on first use
            t0 = time.monotonic()
            failed = prebuild(self.candidates, self.cfg.build_workers, self.echo)
            build_s = time.monotonic() - t0
            self.echo(f"builds ready in {build_s:.0f} s ("
                      + ("as many at a time as fit" if self.cfg.build_workers == "auto" else
                         f"{self.cfg.build_workers} at a time") + ")"
                      + (f"; failed: {failed}" if failed else ""))
        self.tracker.start_study(self.opts.study, {"sweep": json.loads(self.cfg.model_dump_json()),
                                                   "eval_hash": self.eval.hash},
                                 {**self.env_tags, "storage": self.opts.storage})
        group_left = 0
        group_params: dict[str, Any] | None = None
        repeats_in_a_row = 0
        exhausted = False
        gnames = group_param_names(self.cfg, self.templates, param_names(self.cfg) if self.recipes else [])
        self.echo(f"study {self.opts.study!r}: {len(self.eval.questions)} eval questions, target {self.opts.trials} "
                  f"trials, storage {scrub_text(self.opts.storage)}")
        if self.speed_plan is not None:
            self.echo(f"speed POST: {self.speed_plan.size} distinct questions (the {self.cfg.judge.set} samples + "
                      f"questions no build saw, from {self.speed_pool_path})")
        else:
            self.echo("speed POST: the eval questions alone (no speed pool: see `speed` in docs/tournament.md); "
                      "the board's speed_n_questions says how many")
        self.progress.start(counted(study.get_trials(deepcopy=False)), self.opts.trials, builds_ready(self.candidates))
        try:
            while True:
                if self.sigint.is_set():  # a Ctrl-C that a library swallowed: no new trial
                    raise KeyboardInterrupt
                optuna.storages.fail_stale_trials(study)
                trials = study.get_trials(deepcopy=False)
                full = counted(trials) >= self.opts.trials  # drawn-ahead trials count from their draw
                if full and not self.ahead:
                    break
                if self.opts.timeout_s is not None and time.monotonic() - t_start >= self.opts.timeout_s:
                    self.echo(f"--timeout {self.opts.timeout_s:.0f} s reached: no new trial; resume to go on")
                    break
                waiting = any(t.state == TrialState.WAITING for t in trials)
                in_group = group_left > 0 and group_params and not waiting and self.servers.alive()
                if self.ahead and (full or not (waiting or in_group)):
                    trial = self.ahead.pop()  # a recipe drawn ahead, built with an earlier one
                else:
                    study.sampler = (optuna.samplers.PartialFixedSampler(group_params, self.base_sampler)
                                     if in_group else self.base_sampler)
                    trial = study.ask()
                    trial.set_user_attr("worker", worker_id())
                if gpu := os.environ.get("CUDA_VISIBLE_DEVICES"):  # which GPU measured it (sweep --gpus)
                    trial.set_user_attr("gpu", gpu)
                t_ask = time.monotonic()
                try:  # the sampler stays fixed while the trial suggests (define-by-run)
                    with TrialHeartbeat(self.storage, trial_id(trial)):
                        outcome = self._run_trial(study, trial, t_ask)
                finally:
                    study.sampler = self.base_sampler
                if outcome == "redirect":
                    continue
                if outcome == "stop":
                    break
                self.ran.append(trial.number)
                self.progress.update(counted(study.get_trials(deepcopy=False)), builds_ready(self.candidates))
                if outcome == "repeat":
                    repeats_in_a_row += 1
                    if repeats_in_a_row >= GROUP_REPEATS:
                        group_left = 0  # the group's decode space looks spent: draw another group
                    if repeats_in_a_row >= self.cfg.max_repeat_draws:
                        exhausted = True
                        self.echo(f"{repeats_in_a_row} repeated configurations in a row: the search space is "
                                  "exhausted; stopping")
                        break
                    continue
                repeats_in_a_row = 0
                if outcome == "new group":
                    group_params = {k: v for k, v in trial.params.items() if k in gnames}
                    # a candidate enqueued by name outside space.candidate is never drawn: only
                    # trials enqueued for it run in its group
                    named = fixed_params(trial).get("candidate")
                    drawable = named is None or named in (self.cfg.space.candidate or self.templates)
                    group_left = self.cfg.decode_trials_per_engine - 1 if drawable else 0
                else:
                    group_left -= 1
                if not self.servers.alive():
                    group_left = 0
        finally:
            try:  # drawn ahead, never run: enqueued again for a resume (else the next one's recovery does)
                self.ahead.release(study)
            except Exception:  # noqa: BLE001 - the servers must still stop
                log.exception("could not hand the trials drawn ahead back to the queue")
            self.progress.close()
            self.servers.stop()
            self.pidfile.close()
            self.tracker.end_study()
        n = finished_counts(study.get_trials(deepcopy=False))
        if self.recipes:
            self.recipes.deadline = None  # the summary tells the study's budget, not this run's clock
        builds = self.recipes.budget(study) if self.recipes else None
        if builds is not None:
            self.echo(builds.describe())
        return SweepResult(self.opts.study, self.opts.storage, self.ran, n["complete"], n["failed"], self.overhead,
                           distinct=n["distinct"], queued_again=n["queued_again"], repeats=self.repeats,
                           exhausted=exhausted, seconds=time.monotonic() - t_start,
                           build_seconds=build_s + (self.recipes.build_seconds if self.recipes else 0.0),
                           builds=builds.to_dict() if builds else None)

    # -- one trial --------------------------------------------------------------------------
    def _earlier(self, study, trial, plan: TrialPlan):
        """A finished trial of this study with the same parameters as served (measured, not itself
        a repeat)."""
        from optuna.trial import TrialState

        mine = served_params(trial.params, {SERVED_AS: plan.prompt_variant})
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if (t.number != trial.number and served_params(t.params, t.user_attrs) == mine
                    and "duplicate_of" not in t.user_attrs):
                return t
        return None

    def _run_trial(self, study, trial, t_ask: float) -> str:
        """Run one trial to its end (tell). Returns "new group", "same group" or "repeat"."""
        tdir = self.sdir / "trials" / f"{trial.number:04d}"
        attempt = _Attempt()
        try:
            try:
                attempt.plan = plan = suggest_plan(trial, self.cfg, self.templates, self.recipes and (
                    lambda tr, template: self.recipes.draw(tr, template, study)))
            except OverBudget as e:  # the budget is spent: the nearest built recipe instead
                return self.recipes.redirect(study, trial, e)
            except OutOfTime as e:  # a given recipe, no time left to build it: queued for the next sweep
                return self.recipes.postpone(study, trial, e)
            self.progress.trial(heading := trial_heading(trial.number, plan, trial.params))
            if plan.candidate in self.candidates:
                attempt.plan = plan = self.prompts.plan(trial, plan, self.candidates[plan.candidate])
            earlier = self._earlier(study, trial, plan)
            if earlier is not None:
                return self._repeat(study, trial, earlier)
            tdir.mkdir(parents=True, exist_ok=True)
            attempt.run_id = self.tracker.start_trial(self.opts.study, trial.number, {"worker": worker_id()})
            if attempt.run_id:
                trial.set_user_attr("mlflow_run_id", attempt.run_id)
            candidate = self.candidates[plan.candidate]
            trial.set_user_attr("candidate", scrub(candidate.info))
            trial.set_user_attr("group_key", plan.group_key)
            cache_key = json_hash({"builds": {r: b.config_hash for r, b in candidate.builds.items()},
                                   "prompt": plan.prompt_variant, "engine": plan.engine.model_dump(),
                                   "decode": plan.decode.model_dump(), "mode": plan.mode, "eval": self.eval.hash,
                                   "sets": self.cfg.judge.sets, **({"speed": self.speed_key} if self.speed_key else {})},
                                  24)
            trial.set_user_attr("cache_key", cache_key)
            cached = self.cache.get(cache_key)
            if self._speed_reusable(cached):
                measurement = self._from_cache(trial, cached, attempt)  # the cache holds the config masked:
                attempt.serve_config = serve_config(plan, self.cfg, candidate, cached["serve_config"]["model"]["path"]).model_dump()
            else:
                if self.recipes:  # a drawn recipe: built on first use, within the budget
                    t_build = time.monotonic()
                    self.recipes.ensure_built(study, trial, plan.candidate)
                    attempt.build_seconds = time.monotonic() - t_build
                measurement = self._measure(trial, plan, candidate, cached, cache_key, attempt, t_ask)
            metrics = measurement.metrics
            broken = self._tell(study, trial, attempt.serve_config, metrics, attempt.health_seconds)
            write_trial_files(tdir, measurement, attempt.serve_config, metrics)
            self.echo(trial_line(heading, metrics, broken, attempt.started))
            self._track(trial, attempt, metrics, tdir, "FINISHED", None)
            return "new group" if attempt.new_group else "same group"
        except KeyboardInterrupt:
            self._fail(study, trial, "interrupted (Ctrl-C)", attempt, tdir)
            study.enqueue_trial(retry_params(trial), user_attrs={"retry_of": trial.number})
            raise
        except Exception as e:
            if self.sigint.is_set():  # Ctrl-C, turned into another error by a library (noting_sigint)
                self._fail(study, trial, f"interrupted (Ctrl-C, seen as {type(e).__name__})", attempt, tdir)
                study.enqueue_trial(retry_params(trial), user_attrs={"retry_of": trial.number})
                raise KeyboardInterrupt from e
            reason = failure_reason(e)
            self.servers.mark_bad_if_dead(reason)
            self._fail(study, trial, reason, attempt, tdir)
            return "new group" if attempt.new_group else "same group"

    def _make_room(self, recipes: int = 1) -> None:
        """Before `recipes` recipes train: running servers stay while their builds fit beside them
        as well as on the whole card (train/memory.room_for_builds; a new recipe is then swapped
        in); else the parked servers stop first, then the active ones."""
        from tournament.train.memory import room_for_builds

        for stop in (self.servers.stop_parked, self.servers.stop):
            if self.cfg.swap_weights and self.servers.alive() and room_for_builds(Path("builds"), recipes):
                return
            stop()

    def _draw_ahead(self, study, n: int) -> list[tuple[Any, str]]:
        """Up to `n` new recipes drawn now to train beside the one being built (study/draw_ahead.py),
        no more than the trial target leaves beside the trials waiting in the queue (they run
        too): [(trial, candidate key)]."""
        from optuna.trial import TrialState

        trials = study.get_trials(deepcopy=False)
        n = min(n, self.opts.trials - counted(trials) - sum(t.state == TrialState.WAITING for t in trials))
        return self.ahead.draw(study, self.base_sampler, n, lambda trial: suggest_plan(
            trial, self.cfg, self.templates, lambda tr, template: self.recipes.draw(tr, template, study)).candidate)

    def _speed_reusable(self, cached: dict[str, Any] | None) -> bool:
        """A cached configuration whose speed may stand for this trial: asked for, and, when cold
        starts are, its health time was a cold start too."""
        return (cached is not None and self.opts.reuse_cached_speed
                and (not self.cfg.judge.cold_start or bool(cached["metrics"].get("cold_start"))))

    def _from_cache(self, trial, cached: dict[str, Any], attempt: "_Attempt") -> Measurement:
        """The cached path: everything from an earlier measurement of this configuration."""
        attempt.serve_config = cached["serve_config"]
        metrics = {k: v for k, v in cached["metrics"].items() if k not in OVERHEAD_KEYS}  # not this trial's
        attempt.health_seconds = metrics.get("health_seconds")
        metrics["cached_speed"] = 1.0
        trial.set_user_attr("cache", "answers+speed")
        return Measurement(metrics, cached.get("questions", []), cached.get("references", []),
                           cached.get("answers", []), cached.get("scores", []),
                           cached.get("unseen_answers", []), cached.get("unseen_scores", []),
                           cached.get("speed_questions", []), cached.get("speed_answers", []))

    def _measure(self, trial, plan: TrialPlan, candidate, cached: dict[str, Any] | None, cache_key: str,
                 attempt: "_Attempt", t_ask: float) -> Measurement:
        """The measured path: the group's servers (started when the group changes), then the judge
        emulator on them. A started server already runs the trial's decode settings and mode; a
        running one is told them (POST /admin/config)."""
        t_build = time.monotonic()  # builds are not trial overhead: timed apart
        configs = {"ship": serve_config(plan, self.cfg, candidate, str(candidate.ship.model_dir().resolve()))}
        if candidate.unseen is not None:
            configs["unseen"] = serve_config(plan, self.cfg, candidate, str(candidate.unseen.model_dir().resolve()))
        build_s = attempt.build_seconds + time.monotonic() - t_build
        attempt.serve_config = configs["ship"].model_dump()
        t_servers = time.monotonic()
        attempt.started = self.servers.ensure(plan.group_key, configs)
        attempt.swapped, attempt.new_group = self.servers.swapped, self.servers.changed
        if self.servers.swap_note:  # the first swap's check, said once
            self.echo(self.servers.swap_note)
            self.servers.swap_note = None
        attempt.health_seconds = self.servers.ship.health_seconds
        start_cost = (time.monotonic() - t_servers) if attempt.started or attempt.swapped is not None else 0.0
        if not attempt.started:
            self.servers.configure(plan.decode, plan.mode)
        judge = self.cfg.judge
        unseen = self.servers.servers.get("unseen")
        measurement = measure(self.servers.ship.proc.url, unseen.proc.url if unseen else None,
                              self.eval.questions, self.eval.references, self.eval.sets, sets=judge.sets,
                              track=judge.set, speed_repeats=self.cfg.speed_repeats,
                              judge_model=self.judge_model, health_timeout=judge.health_timeout,
                              predict_timeout=judge.local_predict_timeout, health_seconds=attempt.health_seconds,
                              speed=self.speed_plan)
        metrics = measurement.metrics
        metrics["cold_start"] = 1.0 if judge.cold_start else 0.0
        if cached is not None:  # same config measured before: keep its answers for accuracy
            metrics.update({k: v for k, v in cached["metrics"].items() if k.startswith(ACCURACY_KEYS)})
            trial.set_user_attr("cache", "answers")
        else:
            self.cache.put(cache_key, attempt.serve_config, metrics, measurement)
        metrics["build_seconds"], metrics["start_seconds"] = build_s, start_cost
        if attempt.swapped is not None:  # a new build on the running servers (their health time stands)
            metrics["weights_swap_seconds"] = attempt.swapped
        elapsed = time.monotonic() - t_ask - start_cost - build_s
        metrics["overhead_seconds"] = max(0.0, elapsed - metrics["predict_seconds_total"])
        metrics["overhead_ratio"] = metrics["overhead_seconds"] / max(metrics["predict_seconds_total"], 1e-9)
        self.overhead.append({"trial": trial.number, "decode_only": not attempt.started,
                              **{k: metrics[k] for k in OVERHEAD_KEYS if k in metrics}})
        return measurement

    def _tell(self, study, trial, serve_config, metrics: dict[str, Any], health_s: float | None) -> list[str]:
        """Constraints, the record's attributes, and the objectives' values to Optuna; the limits
        the trial breaks, in words (none: feasible)."""
        judge = self.cfg.judge
        # the speed POST's time, scaled to the judge's count (the same when the POST is judge-sized)
        posted = metrics.get("speed_n_questions") or metrics.get("n_questions") or 1.0
        metrics["predict_seconds_scaled"] = metrics["predict_seconds"] * judge.questions / max(1.0, posted)
        cons = constraint_values(metrics, health_s, judge)
        for k, v in cons.items():
            trial.set_constraint(k, v)
        missing = [o.metric for o in self.cfg.objectives if not isinstance(metrics.get(o.metric), (int, float))]
        if missing:
            raise ValueError(f"objective metric(s) {missing} were not measured")
        feasible = all(v <= 0 for v in cons.values())
        trial.set_user_attr("metrics", metrics)
        record_serve_config(trial, serve_config)
        trial.set_user_attr("feasible", feasible)
        study.tell(trial, [float(metrics[o.metric]) for o in self.cfg.objectives])
        return violations(cons)

    def _repeat(self, study, trial, earlier) -> str:
        """Same parameters as a finished trial: take its results, measure nothing."""
        trial.set_user_attr("duplicate_of", earlier.number)
        for k in ("candidate", "group_key", "cache_key", "mlflow_run_id", "recipe", "serve_config_sha256"):
            if k in earlier.user_attrs:
                trial.set_user_attr(k, earlier.user_attrs[k])
        for k, v in earlier.constraints.items():
            trial.set_constraint(k, v)
        trial.set_user_attr("metrics", earlier.user_attrs.get("metrics", {}))
        trial.set_user_attr("serve_config", earlier.user_attrs.get("serve_config"))
        trial.set_user_attr("feasible", earlier.user_attrs.get("feasible", False))
        study.tell(trial, list(earlier.values))
        self.repeats.append(trial.number)
        self.echo(f"trial {trial.number}: repeats trial {earlier.number}; its results reused, nothing measured")
        return "repeat"

    def _fail(self, study, trial, reason: str, attempt: "_Attempt", tdir: Path) -> None:
        from optuna.trial import TrialState

        from tournament.tracking import keep_end

        try:
            for k, v in constraint_values(None, attempt.health_seconds, self.cfg.judge).items():
                trial.set_constraint(k, v)
            trial.set_user_attr("fail_reason", keep_end(reason, 2000))  # the cause is at the end
            trial.set_user_attr("feasible", False)
            if attempt.serve_config is not None:
                record_serve_config(trial, attempt.serve_config)
            study.tell(trial, state=TrialState.FAIL)
        except Exception:
            log.exception("could not record the failure of trial %d", trial.number)
        self.echo(f"trial {trial.number}: FAIL: {reason.splitlines()[0][:300]}")
        self._track(trial, attempt, {}, tdir, "FAILED", reason)

    def _track(self, trial, attempt: "_Attempt", metrics, tdir: Path, status: str, reason: str | None) -> None:
        tags = dict(self.env_tags)
        tags["eval_hash"] = self.eval.hash
        plan = attempt.plan
        if plan is not None:
            candidate = self.candidates[plan.candidate]
            tags["candidate_hash"] = candidate.config_hash
            tags["build"] = candidate.ship.role
            tags["group_key"] = plan.group_key
            if self.recipes:
                self.recipes.track(trial, tags, metrics)
        track_trial(self.tracker, attempt.run_id, trial, plan, attempt.serve_config, metrics, tdir, status, reason,
                    tags, self.servers.log_path())


@dataclass
class _Attempt:
    """What a trial got to before it ended (a failure records as much as there was)."""

    plan: TrialPlan | None = None
    run_id: str | None = None
    serve_config: dict[str, Any] | None = None  # the shipped server's, as started
    health_seconds: float | None = None
    started: bool = False  # this trial started the group's servers
    swapped: float | None = None  # or swapped its build's weights into them (seconds)
    new_group: bool = False  # the servers it ran on were not the previous trial's group
    build_seconds: float = 0.0  # training a drawn recipe on first use (not trial overhead)


def run_sweep(cfg: SweepConfig, opts: SweepOptions, echo: Callable[[str], None] = print,
              progress: SweepProgress | None = None) -> SweepResult:
    return Sweep(cfg, opts, echo, progress).run()
