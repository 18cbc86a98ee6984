"""winner.json: what the judge image serves. Written only here, atomically (temp + os.replace).

Model path: the judge image is built from the repository, and `download_model.py` fetches
``serve.model.modelscope_id`` @ ``revision`` into ``serve.model.path`` at build time; so by default
``path`` is the repo-relative ``models/winner`` and the absolute path of the local build is kept
only in ``provenance.local_model_path``. ``--local`` writes the absolute local path instead (serve
the winner on this machine without a download); such a file is not for a judge image.

The ``--auto`` rule (see docs/tournament.md): among COMPLETE trials that satisfy every constraint,
take those whose accuracy lower bound clears the pass mark with a margin — lower bound = accuracy
- 2 x standard error over the eval questions, or, once judge results exist, the calibrated judge
accuracy - 2 sd — and of those the fastest (chars/s). If none clears it, the most accurate
feasible trial; if nothing is feasible, the most accurate trial that finished.
"""

from __future__ import annotations

import datetime as _dt
import json
from pathlib import Path
from typing import Any

SCHEMA = 1
DEFAULT_MODEL_DEST = "models/winner"
DEFAULT_MARGIN = 0.02


def write_winner(doc: dict[str, Any], path: Path) -> Path:
    """Validate the serve block and replace `path` atomically (a reader never sees half a file)."""
    from tournament.serving.config import ServeConfig

    ServeConfig.model_validate(doc["serve"])  # never write a winner serve.py cannot read
    from tournament.files import write_json_atomic

    return write_json_atomic(path, doc)


def auto_pick(rows: list[dict[str, Any]], pass_mark: float, margin: float = DEFAULT_MARGIN) -> tuple[int, str]:
    done = [r for r in rows if r["state"] == "COMPLETE" and r.get("accuracy") is not None]
    if not done:
        raise LookupError("no finished trial to pick from")
    feasible = [r for r in done if r["feasible"]]

    def lower(r) -> tuple[float, str]:
        p = r.get("predicted")
        if p:
            return p["accuracy"] - 2 * p["accuracy_sd"], "calibrated judge accuracy - 2 sd"
        return r["accuracy"] - 2 * (r.get("accuracy_stderr") or 0.0), "accuracy - 2 stderr"

    clear = [r for r in feasible if lower(r)[0] >= pass_mark + margin]
    if clear:
        best = max(clear, key=lambda r: (r["chars_per_s"] or 0.0, r["accuracy"]))
        lb, how = lower(best)
        return best["trial"], (f"auto: fastest feasible trial whose {how} ({lb:.3f}) clears pass mark "
                               f"{pass_mark} + margin {margin}")
    if feasible:
        best = max(feasible, key=lambda r: (r["accuracy"], r["chars_per_s"] or 0.0))
        return best["trial"], "auto: no trial clears the pass mark with margin; most accurate feasible trial"
    best = max(done, key=lambda r: (r["accuracy"], r["chars_per_s"] or 0.0))
    return best["trial"], "auto: no feasible trial; most accurate finished trial (check the board!)"


def build_winner(study, number: int, *, rule: str, local: bool = False,
                 model_dest: str = DEFAULT_MODEL_DEST) -> tuple[dict[str, Any], list[str]]:
    """winner.json document for trial `number` of `study`; also returns warnings for the user."""
    from optuna.trial import TrialState

    t = next((x for x in study.get_trials(deepcopy=False) if x.number == number), None)
    if t is None:
        raise LookupError(f"study {study.study_name} has no trial {number}")
    if t.state != TrialState.COMPLETE:
        raise LookupError(f"trial {number} is {t.state.name}, not COMPLETE")
    sc = json.loads(json.dumps(t.user_attrs["serve_config"]))
    cand = dict(t.user_attrs.get("candidate") or {})
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
            "metrics": {k: metrics.get(k) for k in ("accuracy", "accuracy_stderr", "zh_rougeL", "chars_per_s",
                                                    "predict_seconds", "predict_seconds_scaled", "health_seconds",
                                                    "n_questions")},
            "constraints": dict(t.constraints), "judge": judge, "eval_set": ev,
            "config_hash": cand.get("config_hash"), "local_model_path": local_path,
            "picked_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "rule": rule,
        },
    }
    return doc, warnings
