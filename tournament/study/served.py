"""The serve config a trial's server really ran, for `tournament pick`.

What a study records is masked (`tracking.scrub`): a secret-looking string in a prompt or a path
reads ``***`` in optuna.db, the cache and the trial files. Masking must never change what is
served, so a trial also records the SHA-256 of the config its server ran (``serve_config_sha256``,
a digest: it reveals nothing) and the study records its sweep file's path. When the recorded
config's digest differs (something was masked), `real_serve_config` rebuilds it from the sweep
file and the trial's parameters, exactly as the sweep built it, and accepts it only when the
digest matches: winner.json is the config that was measured, or pick says why it cannot be.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def config_digest(serve_config: dict[str, Any]) -> str:
    """SHA-256 of a serve config's canonical JSON (key order does not count)."""
    return hashlib.sha256(json.dumps(serve_config, sort_keys=True, ensure_ascii=False).encode("utf-8")).hexdigest()


def record_serve_config(trial, serve_config: dict[str, Any]) -> None:
    """On a trial: the config masked (what is shown) and the digest of the one served."""
    from tournament.tracking import scrub

    trial.set_user_attr("serve_config", scrub(serve_config))
    trial.set_user_attr("serve_config_sha256", config_digest(serve_config))


class ServedConfigError(LookupError):
    """The config a trial served cannot be restored: pick writes nothing rather than another one."""


def real_serve_config(study, trial, sweep_file: str | Path | None = None) -> dict[str, Any]:
    """The serve config trial `trial` (a FrozenTrial of `study`) ran, byte for byte."""
    stored = json.loads(json.dumps(trial.user_attrs["serve_config"]))
    digest = trial.user_attrs.get("serve_config_sha256")
    if digest is None or config_digest(stored) == digest:
        return stored  # recorded before digests were kept, or nothing was masked
    source = sweep_file or study.user_attrs.get("sweep_file")
    if not source or not Path(source).is_file():
        raise ServedConfigError(
            f"trial {trial.number}'s recorded serve config has masked (secret-looking) text, and its sweep file "
            f"{'(not recorded)' if not source else str(source) + ' is gone'}: give the sweep file with "
            "`tournament pick --config SWEEP` to rebuild the config the trial served")
    rebuilt = _rebuild(trial, stored, Path(source))
    if config_digest(rebuilt) != digest:
        raise ServedConfigError(
            f"trial {trial.number}'s recorded serve config has masked (secret-looking) text, and the config rebuilt "
            f"from {source} is not the one the trial served (the file or a candidate it names changed since): "
            "restore that sweep file, or pick another trial")
    return rebuilt


def real_candidate_yaml(study, trial, candidate: dict[str, Any], sweep_file: str | Path | None = None) -> None:
    """A drawn recipe's candidate YAML in `candidate` (the trial's record, masked like the rest):
    restored from the sweep file when masking changed it, so that `tournament train` on it
    rebuilds the very build the trial served (its config hash is the proof)."""
    from tournament.candidates import CandidateError, parse_candidate

    stored, want = candidate.get("candidate_yaml"), candidate.get("honest_config_hash")
    if not stored or not want:
        return
    try:
        if parse_candidate(stored, "<record>").config_hash() == want:
            return  # nothing was masked
    except CandidateError:
        pass  # a masked value may not even parse
    source = sweep_file or study.user_attrs.get("sweep_file")
    if not source or not Path(source).is_file():
        raise ServedConfigError(f"trial {trial.number}'s recipe record has masked (secret-looking) text and its "
                                "sweep file is not at hand: give it with `tournament pick --config SWEEP`")
    drawn = _plan(trial, Path(source))[3]
    if drawn is None or parse_candidate(drawn, str(source)).config_hash() != want:
        raise ServedConfigError(f"trial {trial.number}'s recipe, derived again from {source}, is not the one it "
                                "trained (the file or its template changed since): restore that sweep file")
    candidate["candidate_yaml"] = drawn


def _plan(trial, source: Path):
    """(plan, sweep config, its candidates, the drawn recipe's candidate YAML or None) of a finished
    trial, rebuilt from its sweep file exactly as the sweep drew it (nothing is built)."""
    from tournament.study.config import SweepConfigError, load_sweep_config
    from tournament.study.inputs import resolve_candidates
    from tournament.study.space import suggest_plan

    try:
        cfg = load_sweep_config(source)
        candidates = resolve_candidates(cfg)
        templates, draw = dict(candidates), None
        if cfg.space.draws_recipes:  # the trial's drawn recipe, derived again
            from tournament.study.recipes import RecipeBook

            book = RecipeBook(cfg, candidates)
            draw = lambda tr, template: book.draw(tr, template, None)  # noqa: E731
        plan = suggest_plan(trial, cfg, templates, draw)  # a FrozenTrial answers with its own parameters
    except (SweepConfigError, ValueError, KeyError) as e:
        raise ServedConfigError(f"cannot rebuild trial {trial.number}'s serve config from {source}: {e}") from None
    return plan, cfg, candidates, candidates[plan.candidate].info.get("candidate_yaml")


def _rebuild(trial, stored: dict[str, Any], source: Path) -> dict[str, Any]:
    from tournament.study.space import serve_config

    plan, cfg, candidates, _ = _plan(trial, source)
    # the model folder as recorded (the build the trial served; rebuilding it would retrain)
    model_dir = (stored.get("model") or {}).get("path", "")
    return serve_config(plan, cfg, candidates[plan.candidate], model_dir).model_dump()
