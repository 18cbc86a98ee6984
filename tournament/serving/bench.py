"""Benchmarks (numbers, never assertions): serve.py through the judge emulator vs the same engine's
raw `generate` on the same prompts, and time from process start to a healthy `GET /`.

Each engine configuration runs in its own process (vLLM has no public shutdown): the raw
measurement in `python -m tournament.serving.bench raw CONFIG_JSON QUESTIONS_JSON`, the server as a real
`uvicorn serve:app` subprocess. Both use the same prompt rendering and answer cleaning.

Compile cache (``compile_cache``): ``shared`` (default) leaves the environment's caches as they are
(VLLM_CACHE_ROOT, default ~/.cache/vllm): a configuration compiled before starts warm. ``fresh``
gives the server and the raw child each a new, empty cache folder (``compile_cache_env``),
removed afterwards, so ``healthy_seconds`` is a cold start, as in the judge's fresh container.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from tournament.paths import REPO_ROOT
from tournament.serving.config import ServeConfig
from tournament.serving.process import with_compile_cache


def raw_generate(config: dict[str, Any], questions: list[str], repeats: int) -> dict[str, Any]:
    """In this process: load the engine, warm it, then time `generate` on every prompt (no dedup)."""
    from tournament.prompting import final_answer, render_prompt
    from tournament.serving.engines import load_engine

    cfg = ServeConfig.model_validate(config)
    t0 = time.perf_counter()
    engine = load_engine(cfg.resolved_model_path(), cfg.model, cfg.engine)
    load_s = time.perf_counter() - t0
    decode = cfg.effective_decode()
    prompts = [render_prompt(cfg.prompt, q, engine.tokenizer) for q in questions]
    engine.generate(prompts[:4], decode)  # warm-up, as the server does
    runs = []
    for _ in range(repeats):
        t = time.perf_counter()
        raw = engine.generate(prompts, decode)
        dt = time.perf_counter() - t
        chars = sum(len(final_answer(q, text, decode.stop)) for q, text in zip(questions, raw))
        runs.append({"seconds": dt, "chars": chars, "chars_per_s": chars / dt})
    return {"load_seconds": load_s, "runs": runs, "cache_root": os.environ.get("VLLM_CACHE_ROOT")}


def _raw_in_subprocess(config: dict[str, Any], questions: list[str], repeats: int, log: Path | None,
                       env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        cfg_path, q_path, out_path = (Path(tmp) / n for n in ("cfg.json", "q.json", "out.json"))
        cfg_path.write_text(json.dumps(config))
        q_path.write_text(json.dumps(questions, ensure_ascii=False))
        env = {**os.environ, **(env_extra or {}),
               "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
        with open(log or os.devnull, "ab") as logf:
            subprocess.run(
                [sys.executable, "-m", "tournament.serving.bench", "raw", str(cfg_path), str(q_path), str(out_path), str(repeats)],
                check=True, stdout=logf, stderr=subprocess.STDOUT, env=env, cwd=str(REPO_ROOT),
            )
        return json.loads(out_path.read_text())


def serve_vs_raw(
    config: dict[str, Any],
    questions: list[str],
    references: list[str],
    *,
    repeats: int = 3,
    log_dir: Path | None = None,
    health_timeout: float = 600,
    skip_raw: bool = False,
    compile_cache: Literal["shared", "fresh"] = "shared",
) -> dict[str, Any]:
    """P1 (serve/raw chars/s ratio) and P4 (seconds from process start to healthy)."""
    from tournament.judge.emulator import judge
    from tournament.serving.process import ServerProcess

    if compile_cache not in ("shared", "fresh"):
        raise ValueError(f"compile_cache must be shared or fresh, not {compile_cache!r}")
    log_dir = log_dir or Path(tempfile.mkdtemp(prefix="bench-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    raw = None if skip_raw else with_compile_cache(compile_cache, lambda env: _raw_in_subprocess(
        config, questions, repeats, log_dir / "raw.log", env))

    def serve(env: dict[str, str] | None) -> tuple[float, list[dict[str, Any]]]:
        served = []
        with ServerProcess({**config, "mode": "batch"}, log_path=log_dir / "server.log", env=env) as server:
            healthy_s = server.wait_healthy(health_timeout)
            for _ in range(repeats):
                rep = judge(server.url, questions, references, health_timeout=30, predict_timeout=3600, poll=0.2)
                served.append({"seconds": rep.predict_seconds, "chars": rep.total_chars,
                               "chars_per_s": rep.chars_per_s, "accuracy": rep.accuracy, "failed": rep.failed,
                               "reason": rep.reason})
        return healthy_s, served

    healthy_s, served = with_compile_cache(compile_cache, serve)
    out: dict[str, Any] = {"n": len(questions), "healthy_seconds": healthy_s, "compile_cache": compile_cache,
                           "cache_root": None if compile_cache == "fresh" else os.environ.get("VLLM_CACHE_ROOT"),
                           "served": served, "served_chars_per_s": _stats([r["chars_per_s"] for r in served]),
                           "accuracy": served[-1]["accuracy"] if served else None}
    if raw is not None:
        out["raw"] = raw
        out["raw_chars_per_s"] = _stats([r["chars_per_s"] for r in raw["runs"]])
        out["ratio"] = out["served_chars_per_s"]["median"] / out["raw_chars_per_s"]["median"]
    return out


def _stats(xs: list[float]) -> dict[str, float]:
    if not xs:
        return {"median": 0.0, "min": 0.0, "max": 0.0}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def results_table(n_prompts: int, repeats: int, compile_cache: str):
    """The empty table `tournament bench serve` prints, one `result_row` per run."""
    from rich.table import Table

    table = Table(title=f"serve.py vs raw generate, {n_prompts} prompts, {repeats} repeats (median \\[min-max]), "
                        f"{compile_cache} compile cache")
    for col in ("run", "engine", "healthy s", "served chars/s", "raw chars/s", "ratio", "accuracy"):
        table.add_column(col, justify="right")
    return table


def result_row(name: str, result: dict[str, Any]) -> tuple[str, ...]:
    """The table cells of one run: its `serve_vs_raw` numbers and config, or its error."""
    if "error" in result:  # "TypeName: message"
        return (name, "-", "-", f"error: {result['error'].split(':', 1)[0]}", "-", "-", "-")
    cfg, s, raw = result["config"], result["served_chars_per_s"], result.get("raw_chars_per_s")
    return (
        name, cfg.get("engine", {}).get("engine", "vllm"), f"{result['healthy_seconds']:.1f}",
        f"{s['median']:.0f} [{s['min']:.0f}-{s['max']:.0f}]",
        f"{raw['median']:.0f} [{raw['min']:.0f}-{raw['max']:.0f}]" if raw else "-",
        f"{result['ratio']:.3f}" if "ratio" in result else "-", f"{result['accuracy']:.4f}",
    )


def main(argv: list[str]) -> None:
    if len(argv) == 5 and argv[0] == "raw":
        cfg, qs = json.loads(Path(argv[1]).read_text()), json.loads(Path(argv[2]).read_text())
        Path(argv[3]).write_text(json.dumps(raw_generate(cfg, qs, int(argv[4]))))
        return
    raise SystemExit("usage: python -m tournament.serving.bench raw CONFIG.json QUESTIONS.json OUT.json REPEATS")


if __name__ == "__main__":
    main(sys.argv[1:])
