"""Drawn recipes: the sweep file's recipe space (`space.recipe`, `space.quantization`,
`space.base`) turns its trained candidates into templates. A trial draws a template (`candidate`),
then a base model, a recipe (method first; the LoRA fields only for `lora`) and a quantization;
the drawn candidate gets an id derived from its config hash (`<template>-<hash8>`), its refit and
honest builds (inputs.resolve_candidate), and is built on first use in a child process
(`Build.model_dir`). Builds are found by config hash under `builds/`, so trials, studies and
workers on one machine reuse them, and the build lock keeps two workers from training one build.

The build budget (`build_budget: {recipes, minutes}`) counts the recipes this study trained (a
recipe = its refit + honest builds) and their wall minutes, in the study's user attributes
(`recipe:<hash12>`, shared by every worker). A recipe found built (by another study, say) costs
nothing. Once the budget is spent, a draw of an unbuilt recipe is redirected: the trial is PRUNED
(not counted, and the TPE learns to avoid the region) and the nearest built recipe is enqueued
with the same template. A recipe that failed to build is not trained again: its trials fail at
once with the first failure's reason.

A recipe this process trains takes along the recipes of the trials waiting in the queue (every
recipe parameter fixed: enqueued, redirected, retried), within the budget: all their builds share
the `build_workers` slots, and none runs while a trial measures."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from tournament.files import json_hash
from tournament.study.config import SweepConfig, normalize_param
from tournament.study.inputs import ResolvedCandidate, resolve_candidate
from tournament.study.optuna_private import fixed_params, retry_params
from tournament.study.recipe_builds import train_recipes
from tournament.study.space import suggest_value

log = logging.getLogger(__name__)
LORA_FIELDS = ("rank", "alpha", "dropout", "target_modules")
ATTR_PREFIX = "recipe:"


class OutOfTime(Exception):
    """A trial whose recipe was given (enqueued, retried) needs a batch of builds the sweep's
    --timeout leaves no time for: it waits in the queue for the next sweep (`postpone`)."""


class OverBudget(Exception):
    """The draw needs a new build and the build budget is spent: `redirect` holds the trial
    parameters of the nearest built recipe (None when none is built)."""

    def __init__(self, message: str, redirect: dict[str, Any] | None):
        super().__init__(message)
        self.redirect = redirect


@dataclass
class BudgetState:
    built: int  # recipes this study trained (or is training, or failed to)
    minutes: float
    reused: int
    failed: int
    limit_recipes: int | None
    limit_minutes: float | None
    seconds_left: float | None = None  # before the sweep's --timeout
    batch_seconds: float | None = None  # the longest batch of builds so far (wall)

    @property
    def out_of_time(self) -> bool:
        """A batch of builds that starts now would likely end after the sweep's --timeout."""
        return self.seconds_left is not None and self.batch_seconds is not None and self.seconds_left < self.batch_seconds

    @property
    def limits_spent(self) -> bool:
        return ((self.limit_recipes is not None and self.built >= self.limit_recipes)
                or (self.limit_minutes is not None and self.minutes >= self.limit_minutes))

    @property
    def spent(self) -> bool:
        return self.limits_spent or self.out_of_time

    def describe(self) -> str:
        of = f" of {self.limit_recipes}" if self.limit_recipes is not None else ""
        mins = f"{self.minutes:.1f}" + (f" of {self.limit_minutes:g}" if self.limit_minutes is not None else "")
        late = (f"; {self.seconds_left:.0f} s to --timeout, less than the longest batch of builds so far "
                f"({self.batch_seconds:.0f} s)") if self.out_of_time else ""
        return (f"build budget: {self.built}{of} recipes built, {mins} min; {self.reused} reused, "
                f"{self.failed} failed{late}" + (" (spent: further draws among built recipes)" if self.spent else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"recipes_built": self.built, "minutes": round(self.minutes, 2), "reused": self.reused,
                "failed": self.failed, "limit_recipes": self.limit_recipes, "limit_minutes": self.limit_minutes,
                "spent": self.spent, "out_of_time": self.out_of_time}


def param_names(cfg: SweepConfig) -> list[str]:
    """Every parameter a recipe draw may suggest (they belong to the engine group: a new build is a
    new server)."""
    names = ["base"] if cfg.space.base and len(cfg.space.base) > 1 else []
    names += [f"recipe.{k}" for k in cfg.space.recipe]
    if normalize_param("quantization", cfg.space.quantization) is not None:
        names.append("quantization")
    return names


class RecipeBook:
    """The drawn recipes of one sweep process: derives them, keeps them in `candidates` (shared
    with the sweep, keyed by the id a trial's plan names), builds them within the budget."""

    def __init__(self, cfg: SweepConfig, candidates: dict[str, ResolvedCandidate], builds_dir: Path = Path("builds"),
                 echo: Callable[[str], None] = print, before_build: Callable[[int], None] = lambda n: None,
                 draw_ahead: Callable[[Any, int], list[tuple[Any, str]]] | None = None):
        self.cfg, self.candidates, self.builds_dir, self.echo = cfg, candidates, Path(builds_dir), echo
        # called with the number of recipes before this process trains them: the sweep keeps its
        # servers when their builds fit beside them, else stops them (GPU memory builds need)
        self.before_build = before_build
        # (study, n) -> up to n trials drawn now, [(trial, candidate key)]: study/draw_ahead.py
        self.draw_ahead = draw_ahead
        self.templates = {k: rc for k, rc in candidates.items() if rc.candidate_obj is not None}
        self.drawn: dict[str, dict[str, Any]] = {}  # candidate key -> the drawn values
        self.built_once = False
        self.build_seconds = 0.0  # this process's batches of builds, wall time (not sweeping: trials per minute)
        self.deadline: float | None = None  # time.monotonic() of the sweep's --timeout: no batch that would end past it

    # -- drawing ---------------------------------------------------------------------------------
    def draw(self, trial, template: str, study) -> ResolvedCandidate:
        """Draw a recipe on `template` (define-by-run) and return its candidate (in `candidates`
        under its id); raises OverBudget when it needs a new build and the budget is spent (no
        `study`: no budget, e.g. a finished trial's recipe derived again for `pick`)."""
        return self.candidates[self.draw_key(trial, template, study)]

    def draw_key(self, trial, template: str, study) -> str:
        """`draw`, returning the key of the drawn candidate in `candidates`."""
        rc = self.templates.get(template)
        if rc is None:  # an inline candidate (a model given by path): nothing to draw
            return template
        space = self.cfg.space
        drawn: dict[str, Any] = {}
        if space.base:
            names = list(space.base)
            drawn["base"] = trial.suggest_categorical("base", names) if len(names) > 1 else names[0]
        method = rc.candidate_obj.recipe.method
        if "method" in space.recipe:
            method = drawn["recipe.method"] = suggest_value(trial, "recipe.method", space.recipe["method"])
        for k, spec in space.recipe.items():
            if k == "method" or (k in LORA_FIELDS and method != "lora"):
                continue  # LoRA fields mean nothing to a full fine-tune: not drawn, not in its hash
            drawn[f"recipe.{k}"] = suggest_value(trial, f"recipe.{k}", spec)
        if space.quantization is not None:
            drawn["quantization"] = suggest_value(trial, "quantization", space.quantization)
        key = self.derive(rc, drawn)
        if study is not None:
            self._check_budget(study, trial, key)
        return key

    def derive(self, template: ResolvedCandidate, drawn: dict[str, Any]) -> str:
        """The candidate of a drawn recipe on `template`, registered in `candidates`; its key."""
        from tournament.candidates import parse_candidate

        c = template.candidate_obj
        doc = c.model_dump(mode="json", exclude={"publish"})  # a drawn recipe is not the template's upload
        if "base" in drawn:
            doc["base"] = self.cfg.space.base[drawn["base"]]
        for name, v in drawn.items():
            if name.startswith("recipe."):
                doc["recipe"][name.split(".", 1)[1]] = v
        if "quantization" in drawn:
            q = drawn["quantization"]
            doc["quantization"] = {"method": q} if isinstance(q, str) else q
        probe = parse_candidate(doc, c.source)
        # A draw that lands on the template's own recipe (an enqueued hand-written recipe, say) is
        # the template: its id, its builds (shared with `tournament train` and other sweeps), its
        # upload and its YAML, which pick names instead of writing a copy.
        as_written = probe.config_hash() == c.config_hash()
        if as_written:
            doc["publish"] = c.model_dump(mode="json")["publish"]
        else:
            doc["id"] = f"{c.id[:88]}-{probe.config_hash()[:8]}"
            doc["description"] = f"drawn from {c.id}: " + json.dumps(drawn, sort_keys=True, default=str)
        cand = parse_candidate(doc, c.source)
        q = cand.quantization
        key = cand.id + (f"+{q.method}" if q.method != "none" and not q.needs_checkpoint else "")
        held = self.candidates.get(key)
        if held is not None and held.candidate_obj is not None and held.candidate_obj != cand:
            # the same build served another way than the candidate under this key (a template with
            # on-the-fly fp8, drawn without it): a key of its own
            key = f"{key}+{json_hash(cand.model_dump(mode='json'), 8)}"
        if key not in self.candidates:
            rc = resolve_candidate(self.cfg, cand, template.info.get("source") or c.id, key=key)
            rc.info.update({"template": c.id, "drawn": drawn})
            if not as_written:
                rc.info["candidate_yaml"] = cand.model_dump(mode="json")
            self.candidates[key] = rc
        self.candidates[key].info.setdefault("template", c.id)
        self.candidates[key].info.setdefault("drawn", drawn)
        self.drawn.setdefault(key, drawn)  # built (and counted) on first use, as every drawn recipe
        return key

    # -- the budget ------------------------------------------------------------------------------
    def _attr_key(self, rc: ResolvedCandidate) -> str:
        return ATTR_PREFIX + rc.config_hash[:12]

    def _entry(self, study, attr: str) -> dict[str, Any] | None:
        """A recipe's record in the study; None when there is none or its training was interrupted
        (Ctrl-C, a crash mid-batch: trained again when drawn, not counted)."""
        entry = study.user_attrs.get(attr)
        return None if not isinstance(entry, dict) or entry.get("status") == "interrupted" else entry

    def _built(self, rc: ResolvedCandidate) -> bool:
        from tournament.train.build import is_built

        return all(is_built(b.candidate_obj, self.builds_dir) for b in rc.builds.values() if b.candidate_obj is not None)

    def budget(self, study) -> BudgetState:
        entries = [v for k, v in study.user_attrs.items() if k.startswith(ATTR_PREFIX) and isinstance(v, dict)]
        trained = [e for e in entries if e.get("status") in ("building", "built", "failed")]
        b = self.cfg.build_budget
        walls = [e.get("batch_seconds") or e.get("seconds") or 0.0 for e in trained]
        return BudgetState(built=len(trained), minutes=sum(e.get("seconds") or 0.0 for e in trained) / 60,
                           reused=sum(e.get("status") == "reused" for e in entries),
                           failed=sum(e.get("status") == "failed" for e in entries),
                           limit_recipes=b.recipes, limit_minutes=b.minutes,
                           seconds_left=None if self.deadline is None else self.deadline - time.monotonic(),
                           batch_seconds=max(walls) if any(walls) else None)

    def _check_budget(self, study, trial, key: str) -> None:
        rc = self.candidates[key]
        if self._entry(study, self._attr_key(rc)) is not None or self._built(rc):
            return
        state = self.budget(study)
        if not state.spent:
            return
        if not state.limits_spent and set(fixed_params(trial)) & {"candidate", *param_names(self.cfg)}:
            raise OutOfTime(f"{state.describe()}; {rc.id} is not built")  # a given recipe: not swapped for another
        built = [e for k, e in study.user_attrs.items() if k.startswith(ATTR_PREFIX) and isinstance(e, dict)
                 and e.get("status") in ("built", "reused") and e.get("params")]
        template = trial.params.get("candidate")
        same = [e for e in built if e["params"].get("candidate") == template] or built
        mine = {k: v for k, v in trial.params.items() if k in param_names(self.cfg)}
        target = dict(min(same, key=lambda e: _distance(mine, e["params"]))["params"]) if same else None
        if target and "quantization" in mine and _engine_side(mine["quantization"]) \
                and _engine_side(target.get("quantization", "none")):
            target["quantization"] = mine["quantization"]  # vLLM quantizes on load: no build needed
        raise OverBudget(f"{state.describe()}; {rc.id} is not built", target)

    def redirect(self, study, trial, e: OverBudget) -> str:
        """An over-budget draw: PRUNED (not counted towards --trials), and the nearest built recipe
        enqueued in its place. Without a built recipe the draw fails the trial."""
        from optuna.trial import TrialState

        if e.redirect is None:
            raise RuntimeError(f"{e}, and no recipe is built yet to draw instead (raise build_budget)")
        trial.set_user_attr("over_budget", str(e))
        study.tell(trial, state=TrialState.PRUNED)
        study.enqueue_trial(e.redirect, user_attrs={"redirect_of": trial.number})
        self.echo(f"trial {trial.number}: {e}: drawing the nearest built recipe instead (pruned, not counted)")
        return "redirect"

    def postpone(self, study, trial, e: OutOfTime) -> str:
        """A given recipe the --timeout leaves no time to build: the trial is failed and enqueued
        again as it was given (`retry_of`: it counts once), and the sweep stops ("stop")."""
        from optuna.trial import TrialState

        trial.set_user_attr("fail_reason", f"not run: {e}")
        study.tell(trial, state=TrialState.FAIL)
        study.enqueue_trial(retry_params(trial), user_attrs={"retry_of": trial.number})
        self.echo(f"trial {trial.number}: {e}: enqueued again for the next sweep; stopping")
        return "stop"

    def track(self, trial, tags: dict[str, str], metrics: dict[str, Any]) -> None:
        """The recipe of a trial in its MLflow run: the drawn values are its params already; the
        build's id and hashes as tags, its training seconds and peak memory as metrics."""
        rec = trial.user_attrs.get("recipe")
        if not rec:
            return
        tags.update({"recipe_id": str(rec.get("id")), "recipe_hash": str(rec.get("config_hash")),
                     "recipe_honest_hash": str(rec.get("honest_config_hash"))})
        for k in ("train_seconds", "peak_memory_gib"):
            if rec.get(k) is not None:
                metrics[f"recipe_{k}"] = rec[k]

    # -- building --------------------------------------------------------------------------------
    def ensure_built(self, study, trial, key: str) -> None:
        """Build a drawn recipe's refit and honest builds (reused when built), counting it against
        the budget; record what the trial's board row and MLflow run show (`recipe` user attr).
        A recipe this process trains takes the recipes of the trials waiting in the queue with it
        (`queued`), as far as the budget allows: their builds share the GPU's build slots."""
        rc = self.candidates.get(key)
        if key not in self.drawn or rc is None:
            return
        attr = self._attr_key(rc)
        entry = self._entry(study, attr)
        if entry and entry.get("status") == "failed":
            raise RuntimeError(f"recipe {rc.id} failed to build before (trial {entry.get('trial')}); not retried: "
                               f"{entry.get('reason')}")
        params = {k: v for k, v in trial.params.items() if k == "candidate" or k in param_names(self.cfg)}
        if entry is None and not self._built(rc):  # this process trains it
            batch = {attr: (key, trial.number, params), **self.queued(study, attr)}
            batch.update(self.ahead(study, batch))
            for a, (k, number, p) in batch.items():
                _record(study, a, self.candidates[k].id, "building", number, p)
            beside = [self.candidates[k].id for a, (k, _, _) in batch.items() if a != attr]
            self.echo(f"recipe {rc.id}: building" + (f", with the queued {', '.join(beside)}" if beside else "")
                      + f" ({self.budget(study).describe()})")
            t0 = time.monotonic()
            try:
                self.before_build(len(batch))
                errors = self._train([k for k, _, _ in batch.values()])
            except BaseException:  # Ctrl-C or a crash: none of them is failed, all are trained again
                for a, (k, number, p) in batch.items():
                    _record(study, a, self.candidates[k].id, "interrupted", number, p)
                raise
            took = time.monotonic() - t0
            self.build_seconds += took
            share = took / len(batch)  # the batch's wall time, shared: minutes add up to it
            for a, (k, number, p) in batch.items():
                e = errors.get(k)
                _record(study, a, self.candidates[k].id, "failed" if e else "built", number, p, share, e,
                        batch_seconds=share * len(batch))
            if key in errors:
                raise errors[key]
            self.echo(f"recipe {rc.id}: built in {share * len(batch):.0f} s"
                      + (f" with {len(beside)} more" if beside else "") + f" ({self.budget(study).describe()})")
        else:  # built (reused), or another worker trains it: its build lock makes this wait
            if not self._built(rc):  # it may be this process that trains it, beside no server
                self.before_build(1)
            errors = self._train([key])
            if key in errors:
                if entry is None:
                    _record(study, attr, rc.id, "failed", trial.number, params, error=errors[key])
                raise errors[key]
            if entry is None:
                _record(study, attr, rc.id, "reused", trial.number, params)
        trial.set_user_attr("recipe", recipe_info(rc, self.drawn[key]))

    def queued(self, study, attr: str) -> dict[str, tuple[str, int, dict[str, Any]]]:
        """The unbuilt recipes of the trials waiting in the queue (enqueued: hand-written recipes,
        redirects, retries), whose every recipe parameter is fixed, in queue order and within the
        budget left after the recipe `attr`: {attr: (key, trial number, params)}."""
        from optuna.trial import FixedTrial, TrialState

        room = self.room(study)
        if room is not None and room <= 0:
            return {}
        out: dict[str, tuple[str, int, dict[str, Any]]] = {}
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            fixed = dict(t.system_attrs.get("fixed_params") or {})
            template = fixed.get("candidate", next(iter(self.templates)) if len(self.templates) == 1 else None)
            if template not in self.templates:
                continue
            try:  # a parameter left to the sampler: that trial's recipe is not known yet
                k = self.draw_key(FixedTrial(fixed), template, None)
            except Exception:  # noqa: BLE001 - nor one that cannot be derived: that trial will say why
                continue
            a = self._attr_key(self.candidates[k])
            if a == attr or a in out or self._entry(study, a) is not None or self._built(self.candidates[k]):
                continue
            out[a] = (k, t.number, {p: v for p, v in fixed.items() if p == "candidate" or p in param_names(self.cfg)})
            if room is not None and len(out) >= room:
                break
        return out

    def room(self, study, taken: int = 1) -> int | None:
        """How many more recipes the budget lets a batch train beside the `taken` ones it holds
        (None: no limit): the recipes left, and as many as the minutes left hold at this study's
        mean so far."""
        state = self.budget(study)
        if state.spent:
            return 0
        room = None if state.limit_recipes is None else state.limit_recipes - state.built - taken
        if state.limit_minutes is not None:
            done = [e["seconds"] for e in study.user_attrs.values() if isinstance(e, dict)
                    and e.get("status") == "built" and e.get("seconds")]
            if done:
                left = int((state.limit_minutes - state.minutes) * 60 / (sum(done) / len(done))) - taken
                room = left if room is None else min(room, left)
        return room

    def ahead(self, study, batch: dict[str, tuple[str, int, dict[str, Any]]]
              ) -> dict[str, tuple[str, int, dict[str, Any]]]:
        """New recipes drawn now to train beside `batch` (`build_budget.ahead` of them, within the
        budget): {attr: (key, trial number, params)}. A draw of a built recipe, or of one in the
        batch, adds no build (its trial still runs later, on the builds there are)."""
        room = self.room(study, len(batch))
        n = self.cfg.build_budget.ahead if room is None else min(self.cfg.build_budget.ahead, room)
        if self.draw_ahead is None or n <= 0:
            return {}
        out: dict[str, tuple[str, int, dict[str, Any]]] = {}
        for trial, k in self.draw_ahead(study, n):
            a = self._attr_key(self.candidates[k])
            if k in self.drawn and a not in batch and a not in out and self._entry(study, a) is None \
                    and not self._built(self.candidates[k]):
                out[a] = (k, trial.number, {p: v for p, v in trial.params.items()
                                            if p == "candidate" or p in param_names(self.cfg)})
        return out

    def _train(self, keys: list[str]) -> dict[str, Exception]:
        errors, self.built_once = train_recipes(self.candidates, keys, self.cfg.build_workers, self.built_once, self.echo)
        return errors


def _record(study, attr: str, recipe_id: str, status: str, trial: int, params: dict[str, Any],
            seconds: float = 0.0, error: Exception | None = None, batch_seconds: float | None = None) -> None:
    """A recipe's record in the study's user attributes (`recipe:<hash12>`, read by `budget`):
    `seconds` its share of its batch's wall time, `batch_seconds` that batch's."""
    study.set_user_attr(attr, {"id": recipe_id, "status": status, "trial": trial, "params": params, "seconds": seconds,
                               **({"batch_seconds": batch_seconds} if batch_seconds else {}),
                               **({"reason": f"{type(error).__name__}: {error}"[-2000:]} if error else {})})


def recipe_info(rc: ResolvedCandidate, drawn: dict[str, Any]) -> dict[str, Any]:
    """What the board and MLflow show of a trial's recipe: the drawn values, the build's id and
    hashes, its training seconds and peak memory (from the builds' candidate.json; None when the
    training did not record them)."""
    train_s: float | None = None
    peak: float | None = None
    for b in rc.builds.values():
        manifest = _manifest(b)
        tr = manifest.get("train") or {}
        if tr.get("train_seconds") is not None:
            train_s = (train_s or 0.0) + float(tr["train_seconds"])
        # the trainer's record (train/memory.py): on CUDA the allocated peak, on a CPU the peak RSS
        got = (tr.get("peak_memory") or {}).get("bytes")
        if isinstance(got, (int, float)):
            peak = max(peak or 0.0, float(got) / 2**30)
    return {"id": rc.info.get("id"), "template": rc.info.get("template"), "drawn": drawn,
            "config_hash": rc.config_hash, "honest_config_hash": rc.info.get("honest_config_hash"),
            "train_seconds": train_s, "peak_memory_gib": peak}


def _manifest(build) -> dict[str, Any]:
    d = getattr(build, "_dir", None)
    if d is None:
        return {}
    p = Path(d).parent / "candidate.json"
    try:
        return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}
    except ValueError:
        return {}


def _engine_side(encoded: Any) -> bool:
    """Is a drawn quantization (as Optuna holds it) done by the engine on load, weights unchanged?"""
    from tournament.candidates import Quantization

    q = json.loads(encoded) if isinstance(encoded, str) and encoded.startswith("{") else encoded
    return not Quantization.model_validate({"method": q} if isinstance(q, str) else q).needs_checkpoint


def _distance(drawn: dict[str, Any], params: dict[str, Any]) -> float:
    """How far a built recipe's parameters are from a draw: log-distance for numbers, 1 per other
    difference."""
    d = 0.0
    for k in set(drawn) | (set(params) - {"candidate"}):
        a, b = drawn.get(k), params.get(k)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and a > 0 and b > 0:
            d += abs(math.log(a) - math.log(b))
        elif a != b:
            d += 1.0
    return d
