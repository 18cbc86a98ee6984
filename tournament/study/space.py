"""The search space: what a trial chooses (candidate, prompt variant, engine settings, decode
settings, mode). A drawn trial is validated once, here (`suggest_plan`), and travels as models
(`TrialPlan`) to the server config it becomes (`serve_config`). What a trial is scored on and the
limits it must keep are in objectives.py."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Callable

from tournament.files import json_hash
from tournament.study.config import (
    Choices,
    SweepConfig,
    decode_choice,
    encode_choice,
    normalize_param,
)
from tournament.serving.config import DecodeSettings, EngineSettings, ServeConfig
from tournament.study.inputs import ResolvedCandidate
from tournament.study.optuna_private import fixed_params

log = logging.getLogger(__name__)


@dataclass
class TrialPlan:
    """What one trial serves, validated: the settings travel as models from here on."""

    candidate: str
    prompt_variant: str | None
    engine: EngineSettings
    decode: DecodeSettings
    mode: str

    @property
    def group(self) -> dict[str, Any]:
        return {"candidate": self.candidate, "prompt": self.prompt_variant, "engine": self.engine.model_dump()}

    @property
    def group_key(self) -> str:
        return json_hash(self.group, 12)


def suggest_value(trial, name: str, spec: Any) -> Any:
    """Draw one setting in the sweep file's syntax (a fixed value is returned as is)."""
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


def group_param_names(cfg: SweepConfig, candidates: dict[str, ResolvedCandidate],
                      recipe_params: list[str] = ()) -> list[str]:
    names = []
    if len(cfg.space.candidate or candidates) > 1:
        names.append("candidate")
    names += list(recipe_params)  # a drawn recipe is a build: a new server
    if cfg.space.prompt and len(cfg.space.prompt) > 1:
        names.append("prompt")
    names += [f"engine.{k}" for k, v in cfg.space.engine.items() if normalize_param(f"engine.{k}", v) is not None]
    return names


def suggest_plan(trial, cfg: SweepConfig, candidates: dict[str, ResolvedCandidate],
                 draw_recipe: Callable[[Any, str], ResolvedCandidate] | None = None) -> TrialPlan:
    """Define-by-run: group parameters first, then decode settings and mode. The one validation of
    a drawn trial's settings. The sampler draws the candidate among `space.candidate`; an enqueued
    entry may name any listed candidate (a hand-written recipe beside a template the space draws on). `draw_recipe(trial, template)`: the recipe space's draw on the chosen
    candidate (study/recipes.py), which returns the drawn candidate."""
    ids = cfg.space.candidate or list(candidates)
    unknown = [i for i in ids if i not in candidates]
    if unknown:
        raise ValueError(f"space.candidate names unknown candidate(s) {unknown}; known: {list(candidates)}")
    named = fixed_params(trial).get("candidate")
    if named in candidates and named not in ids:  # enqueued by name: served, never drawn by the sampler
        cand = named
    else:
        cand = trial.suggest_categorical("candidate", ids) if len(ids) > 1 else ids[0]
    rc = draw_recipe(trial, cand) if draw_recipe is not None else candidates[cand]
    variants = cfg.space.prompt
    pv = None
    if variants:
        names = list(variants)
        pv = trial.suggest_categorical("prompt", names) if len(names) > 1 else names[0]
    engine = {**EngineSettings().model_dump(), **rc.engine}
    for k, spec in cfg.space.engine.items():
        engine[k] = suggest_value(trial, f"engine.{k}", spec)
    decode = {**DecodeSettings().model_dump(), **rc.decode}
    for k, spec in cfg.space.decode.items():
        decode[k] = suggest_value(trial, f"decode.{k}", spec)
    mode = suggest_value(trial, "mode", cfg.space.mode)
    return TrialPlan(rc.id, pv, EngineSettings.model_validate(engine), DecodeSettings.model_validate(decode), mode)


def serve_config(plan: TrialPlan, cfg: SweepConfig, rc: ResolvedCandidate, model_dir: str) -> ServeConfig:
    """The ServeConfig a trial's server runs for one build (`model_dir`)."""
    from tournament.prompting import PromptSpec
    from tournament.serving.config import ModelRef, deep_merge

    prompt = dict(rc.prompt)
    if plan.prompt_variant is not None and cfg.space.prompt:
        prompt = deep_merge(prompt, cfg.space.prompt[plan.prompt_variant] or {})
    model = ModelRef(path=model_dir, gguf_file=rc.gguf_file, modelscope_id=rc.modelscope_id, revision=rc.revision)
    return ServeConfig(model=model, prompt=PromptSpec.model_validate(prompt), engine=plan.engine,
                       decode=plan.decode, mode=plan.mode)


def enqueue_params(entry: dict[str, Any], cfg: SweepConfig, candidates) -> dict[str, Any]:
    """Turn a known-good config from the sweep file into Optuna parameter values.

    A group setting (candidate, prompt variant, engine setting) the entry leaves out takes its
    space's first choice: left to the sampler it would be drawn anew for every entry, and entries
    that name the same settings would each start their own servers instead of sharing one group.
    Decode settings left out are drawn (they cost no server start)."""
    params: dict[str, Any] = {}
    ids = cfg.space.candidate or list(candidates)
    if "candidate" in entry:
        params["candidate"] = entry["candidate"]
    elif len(ids) > 1:
        params["candidate"] = ids[0]
    if "prompt" in entry:
        params["prompt"] = entry["prompt"]
    elif cfg.space.prompt and len(cfg.space.prompt) > 1:
        params["prompt"] = next(iter(cfg.space.prompt))
    given = entry.get("engine") or {}
    for k, spec in cfg.space.engine.items():
        p = normalize_param(f"engine.{k}", spec)
        if k not in given and isinstance(p, Choices):
            params[f"engine.{k}"] = encode_choice(p.choices[0])
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


def grouped_in_file_order(entries: list[tuple[dict[str, Any], Any]]) -> list[tuple[dict[str, Any], Any]]:
    """Enqueued (params, entry) pairs with each group's entries together (one server start per
    group: the same params but decode and mode), the groups in the order the sweep file first
    names them: a sweep cut short by --timeout or --trials runs the groups the user put first."""
    order: dict[str, int] = {}
    for params, _ in entries:
        order.setdefault(_group_text(params), len(order))
    return sorted(entries, key=lambda pe: order[_group_text(pe[0])])  # stable: file order within a group


def _group_text(params: dict[str, Any]) -> str:  # a group's settings: all but decode and mode
    return json.dumps({k: v for k, v in params.items() if not k.startswith(("decode.", "mode"))},
                      sort_keys=True, default=str)
