"""What a trial leaves behind: the answer cache, the trial's files, and its MLflow run.

- Cache: ``<runs>/cache/<key>.json`` holds a measured configuration's serve config, metrics and
  answers, keyed by everything that changes them (builds, prompt, engine, decode, mode, eval
  questions, judge sets). A repeated configuration in a later study reuses the answers (greedy
  decoding answers alike) and, with ``--reuse-cached-speed``, the speed too.
- Files: ``<runs>/studies/<study>/trials/<n>/``: ``answers.jsonl`` (the shipped build's answers),
  ``answers_unseen.jsonl`` (the honest build's, when measured), ``speed_post.jsonl`` (the speed
  POST as sent, with the first run's answers), ``serve_config.json``,
  ``metrics.json``, ``server.log``.
- MLflow: the trial's run, its metrics under MLflow names that sort together (`study/dashboard.py`).
- Every config written here or logged is scrubbed of secrets (`tournament.tracking.scrub`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tournament.files import write_answer_table, write_json_atomic, write_jsonl_atomic
from tournament.tracking import keep_end


class AnswerCache:
    def __init__(self, runs_dir: Path):
        self.dir = Path(runs_dir) / "cache"

    def get(self, key: str) -> dict[str, Any] | None:
        p = self.dir / f"{key}.json"
        if not p.exists():
            return None
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, serve_config: dict[str, Any], metrics: dict[str, Any], measurement) -> None:
        from tournament.tracking import scrub

        write_json_atomic(self.dir / f"{key}.json",
                          {"serve_config": scrub(serve_config), "metrics": metrics,
                           "questions": measurement.questions, "references": measurement.references,
                           "answers": measurement.answers, "scores": measurement.scores,
                           "unseen_answers": measurement.unseen_answers, "unseen_scores": measurement.unseen_scores,
                           "speed_questions": measurement.speed_questions, "speed_answers": measurement.speed_answers},
                          indent=None)


def write_trial_files(tdir: Path, measurement, serve_config: dict[str, Any] | None, metrics: dict[str, Any]) -> None:
    from tournament.tracking import scrub

    m = measurement
    if m is not None and m.answers:
        write_answer_table(tdir / "answers.jsonl", m.questions, m.references, m.answers, m.scores)
        if m.unseen_answers:
            write_answer_table(tdir / "answers_unseen.jsonl", m.questions, m.references, m.unseen_answers,
                               m.unseen_scores)
    if m is not None and m.speed_questions:
        write_jsonl_atomic(tdir / "speed_post.jsonl", [{"question": q, "answer": a}
                                                       for q, a in zip(m.speed_questions, m.speed_answers)])
    if serve_config is not None:
        write_json_atomic(tdir / "serve_config.json", scrub(serve_config))
    if metrics:
        write_json_atomic(tdir / "metrics.json", metrics)


def track_trial(tracker, run_id: str | None, trial, plan, serve_config, metrics: dict[str, Any], tdir: Path,
                status: str, reason: str | None, tags: dict[str, str], server_log: Path | None) -> None:
    """Finish the trial's MLflow run (on the tracker's background thread): metrics under their
    MLflow names (`judge/predicted_accuracy`, `study/dashboard.py`), the run named by what it served."""
    from tournament.study.dashboard import metric_name

    if not run_id:
        return
    params: dict[str, Any] = dict(trial.params)
    if plan is not None:
        params.update({"candidate": plan.candidate, "prompt_variant": plan.prompt_variant,
                       "engine": plan.engine.model_dump(), "decode": plan.decode.model_dump(), "mode": plan.mode})
    tags = dict(tags)
    if reason:
        tags["fail_reason"] = keep_end(reason, 4000)
    if serve_config is not None and not (tdir / "serve_config.json").exists():
        write_trial_files(tdir, None, serve_config, {})
    artifacts = {p.name: p for p in (tdir / "answers.jsonl", tdir / "answers_unseen.jsonl", tdir / "serve_config.json")
                 if p.exists()}
    if server_log is not None and server_log.exists():
        snap = tdir / "server.log"
        snap.write_bytes(server_log.read_bytes()[-2_000_000:])
        artifacts["server.log"] = snap
    if plan is not None:  # named by what it served, shown in MLflow's run list
        from tournament.study.dashboard import run_name

        build = (trial.user_attrs.get("candidate") or {}).get("build")
        tags["mlflow.runName"] = run_name(trial.number, plan.candidate, build, plan.prompt_variant, plan.mode,
                                          serve_config, set(trial.params))
    m = {metric_name(k): v for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
    tracker.finish_trial(run_id, params=params, metrics=m, tags=tags, artifacts=artifacts, status=status)
