"""winner.json: what the judge image serves. Written only here, atomically (temp + os.replace).

Model path: the judge image is built from the repository, and `download_model.py` fetches
``serve.model.modelscope_id`` @ ``revision`` into ``serve.model.path`` at build time; so by default
``path`` is the repo-relative ``models/winner`` and the absolute path of the local build is kept
only in ``provenance.local_model_path``. ``--local`` writes the absolute local path instead (serve
the winner on this machine without a download); such a file is not for a judge image.

The ``--auto`` rule (see docs/tournament.md): among COMPLETE trials that satisfy every constraint,
take those whose accuracy lower bound clears the pass mark with a margin — lower bound = accuracy
- 2 x standard error over the eval questions, or, once judge results exist, the calibrated judge
accuracy - 2 sd — and of those the fastest (chars/s); near-ties go to the study's further
objectives (beyond accuracy and speed), then to the simplest configuration. If none clears it, the most accurate
feasible trial; if nothing is feasible, the most accurate trial that finished.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any, Sequence

from tournament.study.objectives import DEFAULT_OBJECTIVES, PICK_RULE_METRICS, Objective
from tournament.study.record import TrialRecord, build_of, provenance_metrics

SCHEMA = 1
DEFAULT_MODEL_DEST = "models/winner"
DEFAULT_MARGIN = 0.02
MAX_REL_SPREAD = 0.10  # a config whose speed repeats spread more is not picked while another will do
SIMPLER_WITHIN = 0.01  # configs this close to the fastest are ties: the one nearer the defaults wins
ACCURACY_TIE = 0.005  # predicted accuracies closer than this are one accuracy (sd is ~0.04 on 100 questions)


def write_winner(doc: dict[str, Any], path: Path) -> Path:
    """Validate the serve block and replace `path` atomically (a reader never sees half a file)."""
    from tournament.serving.config import ServeConfig

    ServeConfig.model_validate(doc["serve"])  # never write a winner serve.py cannot read
    from tournament.files import write_json_atomic

    return write_json_atomic(path, doc)


def write_candidate_yaml(doc: dict[str, Any], out: Path) -> Path | None:
    """A drawn recipe's candidate YAML (winner.json's ``candidate.candidate_yaml``: the honest
    recipe, as `tournament train` reads it; `--dataset` gives the refit), written to
    ``<out's folder>/candidates/<id>.yaml`` and named in ``candidate.source``. None for a winner
    from a listed candidate (its YAML exists already)."""
    cand = doc.get("candidate") or {}
    if not cand.get("candidate_yaml"):
        return None
    import yaml

    from tournament.files import write_text_atomic

    path = Path(out).parent / "candidates" / f"{cand['candidate_yaml']['id']}.yaml"
    head = (f"# {cand.get('id')}: drawn by study {doc['provenance'].get('study')} trial "
            f"{doc['provenance'].get('trial')}. Rebuild the winner (its refit):\n"
            f"#   tournament train {path} --dataset <the sweep's refit.dataset>\n")
    write_text_atomic(path, head + yaml.safe_dump(cand["candidate_yaml"], allow_unicode=True, sort_keys=False))
    cand["source"] = str(path)
    return path


def changed_settings(serve_config: dict[str, Any] | None) -> dict[str, Any]:
    """The engine and decode settings that differ from serve.py's defaults (`decode.max_tokens`)."""
    from tournament.serving.config import DecodeSettings, EngineSettings

    out: dict[str, Any] = {}
    for section, model in (("engine", EngineSettings), ("decode", DecodeSettings)):
        defaults = model().model_dump()
        out.update({f"{section}.{k}": v for k, v in ((serve_config or {}).get(section) or {}).items()
                    if k in defaults and defaults[k] != v})
    return out


def non_default_settings(serve_config: dict[str, Any] | None) -> int:
    """How many engine and decode settings differ from serve.py's defaults (simpler is better)."""
    return len(changed_settings(serve_config))


def _accuracy(r: TrialRecord) -> tuple[float, float, str]:
    """(predicted judge accuracy, its sd, where it comes from) of a record."""
    if r.predicted:
        return r.predicted["accuracy"], r.predicted["accuracy_sd"], "calibrated judge accuracy - 2 sd"
    if r.predicted_accuracy is not None:
        return r.predicted_accuracy, r.predicted_accuracy_sd or 0.0, "predicted judge accuracy - 2 sd"
    return r.accuracy, r.accuracy_stderr or 0.0, "accuracy - 2 stderr"


def speed_score(r: TrialRecord) -> float:
    """Noise-aware speed: median - 1.4826 MAD of the repeats (the median alone without repeats)."""
    return r.chars_per_s_score if r.chars_per_s_score is not None else (r.chars_per_s or 0.0)


def _tie_break(objectives: Sequence[Objective]):
    """Among near-ties: the objectives beyond accuracy and speed, in their declared order (better
    first; a missing value last), then the fewest non-default settings, then speed."""
    extra = [o for o in objectives if o.metric not in PICK_RULE_METRICS]

    def key(r: TrialRecord):
        ranks = []
        for o in extra:
            v = r.value(o.metric)
            ranks.append(float("inf") if v is None else (-v if o.direction == "maximize" else v))
        return (*ranks, non_default_settings(r.serve_config), -speed_score(r))

    return key, extra


def auto_pick(records: list[TrialRecord], pass_mark: float, margin: float = DEFAULT_MARGIN,
              objectives: Sequence[Objective] = DEFAULT_OBJECTIVES) -> tuple[int, str]:
    done = [r for r in records if r.state == "COMPLETE" and r.accuracy is not None and r.duplicate_of is None]
    if not done:
        raise LookupError("no finished trial to pick from")
    feasible = [r for r in done if r.feasible]

    def lower(r) -> tuple[float, str]:
        acc, sd, how = _accuracy(r)
        return acc - 2 * sd, how

    clear = [r for r in feasible if lower(r)[0] >= pass_mark + margin]
    if clear:
        steady = [r for r in clear if (r.chars_per_s_rel_spread or 0.0) <= MAX_REL_SPREAD]
        pool = steady or clear
        top = max(speed_score(r) for r in pool)
        near = [r for r in pool if speed_score(r) >= top * (1 - SIMPLER_WITHIN)]
        tie_key, extra = _tie_break(objectives)
        best = min(near, key=tie_key)
        lb, how = lower(best)
        rule = (f"auto: fastest feasible trial (median - 1.4826 MAD of chars/s) whose {how} ({lb:.3f}) clears "
                f"pass mark {pass_mark} + margin {margin}")
        if not steady:
            rule += f"; every such trial's speed spread is above {MAX_REL_SPREAD:.0%}"
        if len(near) > 1:
            by = "".join(f"the best {o.name}, then " for o in extra)
            rule += (f"; of {len(near)} within {SIMPLER_WITHIN:.0%} of the fastest, {by}the simplest "
                     f"({non_default_settings(best.serve_config)} non-default settings)")
        return best.trial, rule
    if feasible:
        # accuracies this close are one accuracy: among them the noise-aware speed rule decides
        top = max(_accuracy(r)[0] for r in feasible)
        tied = [r for r in feasible if _accuracy(r)[0] >= top - ACCURACY_TIE]
        steady = [r for r in tied if (r.chars_per_s_rel_spread or 0.0) <= MAX_REL_SPREAD] or tied
        best = max(steady, key=speed_score)
        rule = "auto: no trial clears the pass mark with margin; the most accurate feasible trial"
        if len(tied) > 1:
            rule += (f" (of {len(tied)} within {ACCURACY_TIE} of the best, the fastest by median - 1.4826 MAD "
                     "with a steady speed)")
        return best.trial, rule
    best = max(done, key=lambda r: (_accuracy(r)[0], speed_score(r)))
    return best.trial, "auto: no feasible trial; most accurate finished trial (check the board!)"


class HonestBuildError(LookupError):
    """The trial served the honest build of a trained recipe: not the build to submit."""


def build_winner(study, number: int, *, rule: str, local: bool = False, allow_honest: bool = False,
                 model_dest: str = DEFAULT_MODEL_DEST, sweep_file: Path | None = None) -> tuple[dict[str, Any], list[str]]:
    """winner.json document for trial `number` of `study`; also returns warnings for the user. Its
    serve block is the config the trial's server ran (served.py; never the masked record)."""
    from optuna.trial import TrialState

    t = next((x for x in study.get_trials(deepcopy=False) if x.number == number), None)
    if t is None:
        raise LookupError(f"study {study.study_name} has no trial {number}")
    if t.state != TrialState.COMPLETE:
        raise LookupError(f"trial {number} is {t.state.name}, not COMPLETE")
    from tournament.study.served import real_candidate_yaml, real_serve_config

    sc = real_serve_config(study, t, sweep_file)
    cand = json.loads(json.dumps(t.user_attrs.get("candidate") or {}))
    real_candidate_yaml(study, t, cand, sweep_file)  # a drawn recipe's YAML as trained, not as masked
    cand["build"] = build_of(cand)
    if cand["build"] == "honest" and not allow_honest:
        raise HonestBuildError(
            f"trial {number} serves the honest build of {cand.get('id')!r} (trained without the public samples' "
            "variant groups): the build you submit is its refit (every row). Run the sweep with refit enabled (the "
            "default), or pass --allow-honest to write it anyway.")
    warnings: list[str] = []
    local_path = sc["model"]["path"]
    if not local:
        sc["model"]["path"] = model_dest
        sc["model"]["modelscope_id"] = cand.get("modelscope_id") or sc["model"].get("modelscope_id")
        sc["model"]["revision"] = cand.get("revision") or sc["model"].get("revision")
        if not sc["model"]["modelscope_id"]:
            warnings.append(f"candidate {cand.get('id')!r} has no ModelScope id: download_model.py cannot fetch it "
                            f"at image build time. Publish it (candidate `publish:`) or use --local to serve locally.")
    metrics = t.user_attrs.get("metrics", {})
    judge = study.user_attrs.get("judge", {})
    ev = study.user_attrs.get("eval", {})
    doc = {
        "schema": SCHEMA,
        "serve": sc,
        "candidate": cand,
        "provenance": {
            "study": study.study_name, "trial": number, "mlflow_run_id": t.user_attrs.get("mlflow_run_id"),
            "metrics": provenance_metrics(metrics),
            "constraints": dict(t.constraints), "judge": judge, "eval_set": ev,
            "config_hash": cand.get("config_hash"), "local_model_path": local_path,
            "picked_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "rule": rule,
        },
    }
    return doc, warnings
