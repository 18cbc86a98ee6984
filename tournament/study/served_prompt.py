"""Which of the sweep's prompt variants a build actually serves.

serve.py renders a ``chat`` prompt with the tokenizer's chat template, and falls back to the plain
template when the tokenizer has none (`tournament.prompting.effective_spec`). On such a build
(the embedded gemma-3-270m, a base model) ``chat`` and ``plain`` are the same prompt: trials that
differ only in that name serve the same text, and measuring both only spends a server start and
reads run-to-run noise as a difference (one H100, 2026-12-07: identical answers measured at
29,349 and 40,136 chars/s under the two names).

So the sweep serves each variant as one that renders alike for the candidate's build (a variant
that renders as written, ``plain`` here): the trial shares that variant's servers and answer
cache, and is a repeat of a finished trial with the same served settings. The trial keeps the
drawn name in its parameters; ``prompt_served_as`` (a user attribute) names what was served.
What is not known for sure merges nothing: a build not in place yet, a tokenizer folder without a
config, a candidate served from a GGUF file (whose template lives in the file).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from tournament.study.config import SweepConfig
from tournament.study.inputs import ResolvedCandidate
from tournament.study.space import TrialPlan

SERVED_AS = "prompt_served_as"


def served_variants(cfg: SweepConfig, rc: ResolvedCandidate, has_template: bool) -> dict[str, str]:
    """Each prompt variant of the space -> the variant it is served as on `rc`'s build: of those
    that render alike, the first that renders as written (``plain`` rather than a ``chat`` that
    falls back to it), else the first."""
    from tournament.prompting import PromptSpec, effective_spec
    from tournament.serving.config import deep_merge

    alike: dict[str, list[tuple[str, bool]]] = {}  # rendered spec -> [(variant, renders as written)]
    out: dict[str, str] = {}
    for name, over in (cfg.space.prompt or {}).items():
        try:
            spec = PromptSpec.model_validate(deep_merge(dict(rc.prompt), over or {}))
        except ValueError:  # the trials that draw it fail with the reason; it stands for itself
            out[name] = name
            continue
        served = effective_spec(spec, has_template)
        alike.setdefault(served.model_dump_json(), []).append((name, served == spec))
    for names in alike.values():
        rep = next((n for n, as_written in names if as_written), names[0][0])
        out.update({n: rep for n, _ in names})
    return out


class ServedPrompts:
    """Per candidate, the variant each prompt name is served as (known once its build is in place)."""

    def __init__(self, cfg: SweepConfig, echo):
        self.cfg, self.echo = cfg, echo
        self._known: dict[str, dict[str, str]] = {}

    def aliases(self, rc: ResolvedCandidate) -> dict[str, str]:
        if rc.id in self._known:
            return self._known[rc.id]
        from tournament.prompting import tokenizer_dir_has_chat_template

        if rc.gguf_file:  # the transformers engine takes the template from the GGUF file's metadata
            return {}
        built = rc.ship.built_dir
        given = Path(rc.ship.model_path) if rc.ship.candidate_obj is None and rc.ship.model_path else None
        if built is None and given is not None and given.is_dir():  # a local model: nothing to fetch
            built = given
        has = tokenizer_dir_has_chat_template(built) if built is not None else None
        if has is None:  # not built yet, or a tokenizer this cannot read: every name as itself
            return {}
        self._known[rc.id] = alias = served_variants(self.cfg, rc, has)
        moved = {n: a for n, a in alias.items() if n != a}
        if moved:
            names = ", ".join(f"{n!r} served as {a!r}" for n, a in moved.items())
            why = "" if has else " (its tokenizer has no chat template)"
            self.echo(f"{rc.id}: prompt {names}{why}: the same prompt, so one set of servers, answers "
                      "and results")
        return alias

    def plan(self, trial, plan: TrialPlan, rc: ResolvedCandidate) -> TrialPlan:
        """`plan` with the prompt variant it is served as (recorded on the trial when it differs)."""
        served = self.aliases(rc).get(plan.prompt_variant, plan.prompt_variant)
        if served == plan.prompt_variant:
            return plan
        trial.set_user_attr(SERVED_AS, served)
        return replace(plan, prompt_variant=served)


def served_params(params: dict[str, Any], user_attrs: dict[str, Any]) -> dict[str, Any]:
    """A trial's parameters with the prompt variant it was served as (what a repeat compares)."""
    served = user_attrs.get(SERVED_AS)
    return {**params, "prompt": served} if served is not None and "prompt" in params else params
