"""Hand-written recipes in a recipe sweep: an `enqueue:` entry's recipe parameters, fixed as the
entry or its template writes them (a recipe is a build and a server pair: never left to the
sampler). Used by the sweep when it enqueues the file's entries (study/sweep.py)."""

from __future__ import annotations

import logging
from typing import Any

from tournament.study.config import Choices, SweepConfig, encode_choice, normalize_param, spec_values
from tournament.study.inputs import ResolvedCandidate
from tournament.study.recipes import LORA_FIELDS

log = logging.getLogger(__name__)


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
