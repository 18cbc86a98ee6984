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
from tournament.study.config import Choices, SweepConfig, encode_choice, normalize_param, spec_values
from tournament.study.inputs import ResolvedCandidate, resolve_candidate
from tournament.study.recipe_builds import train_recipes
from tournament.study.space import suggest_value

log = logging.getLogger(__name__)
LORA_FIELDS = ("rank", "alpha", "dropout", "target_modules")
ATTR_PREFIX = "recipe:"


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

    @property
    def spent(self) -> bool:
        return ((self.limit_recipes is not None and self.built >= self.limit_recipes)
                or (self.limit_minutes is not None and self.minutes >= self.limit_minutes))

    def describe(self) -> str:
        of = f" of {self.limit_recipes}" if self.limit_recipes is not None else ""
        mins = f"{self.minutes:.1f}" + (f" of {self.limit_minutes:g}" if self.limit_minutes is not None else "")
        return (f"build budget: {self.built}{of} recipes built, {mins} min; {self.reused} reused, "
                f"{self.failed} failed" + (" (spent: further draws among built recipes)" if self.spent else ""))

    def to_dict(self) -> dict[str, Any]:
        return {"recipes_built": self.built, "minutes": round(self.minutes, 2), "reused": self.reused,
                "failed": self.failed, "limit_recipes": self.limit_recipes, "limit_minutes": self.limit_minutes,
                "spent": self.spent}


def param_names(cfg: SweepConfig) -> list[str]:
    """Every parameter a recipe draw may suggest (they belong to the engine group: a new build is a
    new server)."""
    names = ["base"] if cfg.space.base and len(cfg.space.base) > 1 else []
    names += [f"recipe.{k}" for k in cfg.space.recipe]
    if normalize_param("quantization", cfg.space.quantization) is not None:
        names.append("quantization")
    return names


def enqueue_recipe(entry: dict[str, Any], cfg: SweepConfig, candidates: dict[str, ResolvedCandidate],
                   template: str | None) -> dict[str, Any]:
    """The recipe parameters of a known-good configuration (`enqueue:` entry) in a recipe sweep.

    A recipe is a build and a server pair, so it is never left to the sampler (each entry would
    draw its own): a setting the entry's `recipe:` / `quantization:` / `base:` leaves out takes
    the template's own value, so `{candidate: X}` alone enqueues recipe X as written; a value the
    space cannot hold is an error when the entry names it, and the space's first choice (or
    nearest end) with a warning when it came from the template."""
    if not cfg.space.draws_recipes:
        bad = sorted({"recipe", "quantization", "base"} & set(entry))
        if bad:
            raise ValueError(f"enqueue: {bad} need a recipe space (space.recipe / quantization / base)")
        return {}
    rc = candidates.get(template or next(iter(cfg.space.candidate or candidates)))
    if rc is None or rc.candidate_obj is None:
        return {}  # an inline candidate: nothing is drawn for it
    own = rc.candidate_obj
    given = entry.get("recipe") or {}
    if not isinstance(given, dict):
        raise ValueError(f"enqueue: recipe must be a mapping of recipe fields, not {given!r}")
    unknown = sorted(set(given) - set(cfg.space.recipe))
    if unknown:
        raise ValueError(f"enqueue: recipe field(s) {unknown} are not in space.recipe ({sorted(cfg.space.recipe)})")
    params: dict[str, Any] = {}
    space = cfg.space
    if space.base and len(space.base) > 1:
        named = entry.get("base")
        if named is None:
            from tournament.candidates import BaseModelSpec

            named = next((n for n, b in space.base.items() if BaseModelSpec.model_validate(b) == own.base), None)
            if named is None:
                named = next(iter(space.base))
                log.warning("enqueue: %s's base is none of space.base (as written there); %r instead", own.id, named)
        elif named not in space.base:
            raise ValueError(f"enqueue: base {named!r} is not one of space.base {sorted(space.base)}")
        params["base"] = named
    method = own.recipe.method
    for k in sorted(space.recipe, key=lambda k: k != "method"):  # the method first: it decides the rest
        if k in LORA_FIELDS and method != "lora":
            continue  # as in a draw: LoRA fields mean nothing to a full fine-tune
        name, spec = f"recipe.{k}", space.recipe[k]
        v = _allowed(name, spec, given[k], named=True) if k in given else _allowed(name, spec, getattr(own.recipe, k))
        if v is _FIXED:
            if k in given and given[k] != spec:
                raise ValueError(f"enqueue: {name}={given[k]!r} but the sweep fixes it to {spec!r}")
            v = spec
        else:
            params[name] = v
        if k == "method":
            method = v
    if normalize_param("quantization", space.quantization) is not None:
        if "quantization" in entry:
            params["quantization"] = _allowed("quantization", space.quantization, entry["quantization"], named=True)
        else:  # the template's own quantization, written as the space writes it
            from tournament.candidates import Quantization

            choices = spec_values("quantization", space.quantization)
            same = [c for c in choices if Quantization.model_validate({"method": c} if isinstance(c, str) else c)
                    == own.quantization]
            params["quantization"] = _allowed("quantization", space.quantization,
                                              same[0] if same else own.quantization.model_dump(mode="json"))
    return params


_FIXED = object()  # a fixed setting in the space: not a parameter


def _allowed(name: str, spec: Any, v: Any, named: bool = False) -> Any:
    """`v` as the parameter Optuna holds for `name` (a choice as its encoded text); a value outside
    the space: an error when the entry named it, else the first choice / nearest end, warned."""
    p = normalize_param(name, spec)
    if p is None:
        return _FIXED
    if isinstance(p, Choices):
        encoded = [encode_choice(c) for c in p.choices]
        if encode_choice(v) in encoded:
            return encode_choice(v)
        if named:
            raise ValueError(f"enqueue: {name}={v!r} is not one of the space's choices {p.choices}")
        log.warning("enqueue: the template's %s=%r is not in the space; %r instead", name, v, p.choices[0])
        return encoded[0]
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        if named:
            raise ValueError(f"enqueue: {name}={v!r} is not a number (the space draws it from [{p.low}, {p.high}])")
        log.warning("enqueue: the template's %s=%r is not a number of the space's range; %r instead", name, v, p.low)
        return int(p.low) if p.is_int() else float(p.low)
    if p.low <= v <= p.high:
        return int(v) if p.is_int() else float(v)
    if named:
        raise ValueError(f"enqueue: {name}={v!r} is outside the space's range [{p.low}, {p.high}]")
    end = p.low if v < p.low else p.high
    log.warning("enqueue: the template's %s=%r is outside the space; %r instead", name, v, end)
    return int(end) if p.is_int() else float(end)


class RecipeBook:
    """The drawn recipes of one sweep process: derives them, keeps them in `candidates` (shared
    with the sweep, keyed by the id a trial's plan names), builds them within the budget."""

    def __init__(self, cfg: SweepConfig, candidates: dict[str, ResolvedCandidate], builds_dir: Path = Path("builds"),
                 echo: Callable[[str], None] = print, before_build: Callable[[], None] = lambda: None):
        self.cfg, self.candidates, self.builds_dir, self.echo = cfg, candidates, Path(builds_dir), echo
        # called before this process trains a recipe: the sweep stops the running group's servers,
        # whose GPU memory the builds need (the new recipe is a new group: they would stop anyway)
        self.before_build = before_build
        self.templates = {k: rc for k, rc in candidates.items() if rc.candidate_obj is not None}
        self.drawn: dict[str, dict[str, Any]] = {}  # candidate key -> the drawn values
        self.built_once = False

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
        return BudgetState(built=len(trained), minutes=sum(e.get("seconds") or 0.0 for e in trained) / 60,
                           reused=sum(e.get("status") == "reused" for e in entries),
                           failed=sum(e.get("status") == "failed" for e in entries),
                           limit_recipes=b.recipes, limit_minutes=b.minutes)

    def _check_budget(self, study, trial, key: str) -> None:
        rc = self.candidates[key]
        if self._entry(study, self._attr_key(rc)) is not None or self._built(rc):
            return
        state = self.budget(study)
        if not state.spent:
            return
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
            for a, (k, number, p) in batch.items():
                _record(study, a, self.candidates[k].id, "building", number, p)
            beside = [self.candidates[k].id for a, (k, _, _) in batch.items() if a != attr]
            self.echo(f"recipe {rc.id}: building" + (f", with the queued {', '.join(beside)}" if beside else "")
                      + f" ({self.budget(study).describe()})")
            t0 = time.monotonic()
            try:
                self.before_build()
                errors = self._train([k for k, _, _ in batch.values()])
            except BaseException:  # Ctrl-C or a crash: none of them is failed, all are trained again
                for a, (k, number, p) in batch.items():
                    _record(study, a, self.candidates[k].id, "interrupted", number, p)
                raise
            share = (time.monotonic() - t0) / len(batch)  # the batch's wall time, shared: minutes add up to it
            for a, (k, number, p) in batch.items():
                e = errors.get(k)
                _record(study, a, self.candidates[k].id, "failed" if e else "built", number, p, share, e)
            if key in errors:
                raise errors[key]
            self.echo(f"recipe {rc.id}: built in {share * len(batch):.0f} s"
                      + (f" with {len(beside)} more" if beside else "") + f" ({self.budget(study).describe()})")
        else:  # built (reused), or another worker trains it: its build lock makes this wait
            if not self._built(rc):  # it may be this process that trains it, beside no server
                self.before_build()
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

        state = self.budget(study)
        room = None if state.limit_recipes is None else state.limit_recipes - state.built - 1
        if state.limit_minutes is not None:  # as many as the minutes left hold at this study's mean so far
            done = [e["seconds"] for e in study.user_attrs.values() if isinstance(e, dict)
                    and e.get("status") == "built" and e.get("seconds")]
            if done:
                left = (state.limit_minutes - state.minutes) * 60 / (sum(done) / len(done)) - 1
                room = int(left) if room is None else min(room, int(left))
        if (room is not None and room <= 0) or state.spent:
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

    def _train(self, keys: list[str]) -> dict[str, Exception]:
        errors, self.built_once = train_recipes(self.candidates, keys, self.cfg.build_workers, self.built_once, self.echo)
        return errors


def _record(study, attr: str, recipe_id: str, status: str, trial: int, params: dict[str, Any],
            seconds: float = 0.0, error: Exception | None = None) -> None:
    """A recipe's record in the study's user attributes (`recipe:<hash12>`, read by `budget`)."""
    study.set_user_attr(attr, {"id": recipe_id, "status": status, "trial": trial, "params": params, "seconds": seconds,
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
