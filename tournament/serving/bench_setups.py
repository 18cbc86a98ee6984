"""P2: the serving setups people copy, side by side with the tournament's winner, on one model.

A setup is a file (``benchmarks/setups/*.yaml``, or JSON) holding a ``name`` and a ``serve``
object, a ServeConfig (tournament/serving/config.py); a winner.json is one too (its ``serve``).
Each setup runs as the real serve.py in its own process on the same model (``--model`` replaces
``serve.model.path``), judged by the judge emulator, which calls batch or serial mode as the server
announces. Numbers, never pass/fail: a setup that cannot start or fails the judge is a row with
its reason, and the others still run.

The judge's number is the first POST a fresh server answers (``chars_per_s``). ``again`` = N sends
the same POST N more times to a batch-mode setup, each after emptying the prefix cache, and keeps
their median (``chars_per_s_again``): what a sweep, which times a server that has answered before,
sees. On an H100 (2026-12-07, BENCHMARKS.md) a fresh server's first POST of 358 distinct questions
ran 17 % below the same POST to another server of the same winner.json that had answered five
before it: the two side by side, on one server, say whether that gap is the server's. In the
later run that day the first POSTs ran at 0.98-1.05x the same servers' later ones: no such gap.

``engine_override="transformers"`` replaces every setup's engine block with the transformers
engine: for smoke tests on a machine without vLLM (the CPU tests), never for numbers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tournament.serving.config import ServeConfig, read_winner_serve
from tournament.serving.process import COMPILE_CACHES, with_compile_cache

ENGINE_OVERRIDES = {"transformers": {"engine": "transformers"}}


@dataclass
class Setup:
    name: str
    serve: dict[str, Any]  # a ServeConfig as the file gives it
    source: str


def load_setup(path: Path) -> Setup:
    """A setup file (name + serve) or a winner.json; a ValueError naming the file when it is neither."""
    import yaml

    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: not a readable setup file ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("serve"), dict):
        raise ValueError(f'{path}: a setup needs a "serve" object (a ServeConfig; see benchmarks/setups/)')
    if "candidate" in doc or "schema" in doc:  # a winner.json: the checks serve.py makes of it
        return Setup("winner", read_winner_serve(path), str(path))
    return Setup(str(doc.get("name") or path.stem), doc["serve"], str(path))


def served_config(setup: Setup, model_dir: Path, engine_override: str | None = None) -> dict[str, Any]:
    """The ServeConfig a setup runs with here: its own, on `model_dir`, with its engine block
    replaced when `engine_override` names one (ENGINE_OVERRIDES). Invalid settings are a ValueError
    naming the setup."""
    from pydantic import ValidationError

    raw = dict(setup.serve)
    raw["model"] = {**(raw.get("model") or {}), "path": str(Path(model_dir).resolve())}
    if engine_override is not None:
        if engine_override not in ENGINE_OVERRIDES:
            raise ValueError(f"engine override {engine_override!r}: use one of {', '.join(ENGINE_OVERRIDES)}")
        raw["engine"] = dict(ENGINE_OVERRIDES[engine_override])
    try:
        return ServeConfig.model_validate(raw).model_dump()
    except ValidationError as e:
        where = "; ".join(f"serve.{'.'.join(map(str, err['loc']))}: {err['msg']}" for err in e.errors()[:3])
        raise ValueError(f"setup {setup.name} ({setup.source}): {where}") from None


def run_setup(name: str, config: dict[str, Any], questions: list[str], references: list[str], *,
              health_timeout: float, predict_timeout: float, compile_cache: str = "fresh",
              log_dir: Path | None = None, again: int = 0) -> dict[str, Any]:
    """Start serve.py with `config`, wait for GET /, judge it once (and `again` more times in batch
    mode, each from an empty prefix cache); one row of numbers."""
    from tournament.judge.emulator import judge
    from tournament.serving.process import ServerProcess

    row: dict[str, Any] = {"setup": name, "mode": config["mode"], "n": len(questions),
                           "distinct": len(set(questions)), "compile_cache": compile_cache}

    def measure(env: dict[str, str] | None) -> None:
        log = (log_dir / f"{name}.log") if log_dir else None
        # --again empties the prefix cache through serve.py's admin endpoint, which only sweep mode
        # opens; it changes nothing on the path a POST /predict takes
        with ServerProcess(config, log_path=log, env=env, sweep_mode=again > 0) as server:
            row["healthy_seconds"] = server.wait_healthy(health_timeout)
            rep = judge(server.url, questions, references, health_timeout=30, predict_timeout=predict_timeout, poll=0.2)
            row.update(mode=rep.mode or row["mode"], accuracy=rep.accuracy, chars_per_s=rep.chars_per_s,
                       predict_seconds=rep.predict_seconds, total_chars=rep.total_chars, answered=rep.answered,
                       failed=rep.failed, reason=rep.reason)
            # a serial setup's first-call cost is spread over its n calls: nothing to compare
            if again and not rep.failed and row["mode"] == "batch":
                _post_again(server.url, again, questions, references, predict_timeout, rep.chars_per_s, row)

    try:
        with_compile_cache(compile_cache, measure)
    except Exception as e:  # a setup that cannot start is a row with its reason; the others still run
        row.update(failed=True, reason=f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}")
    return row


def _post_again(url: str, times: int, questions: list[str], references: list[str], predict_timeout: float,
                first: float, row: dict[str, Any]) -> None:
    """The same POST `times` more times, each from an empty prefix cache, into `row`; a failure is
    noted there (``again_failed``) and leaves the first POST's numbers standing."""
    import statistics

    from tournament.judge.emulator import judge
    from tournament.serving.process import reset_prefix_cache

    speeds: list[float] = []
    try:
        for _ in range(times):
            reset_prefix_cache(url)
            rep = judge(url, questions, references, health_timeout=30, predict_timeout=predict_timeout, poll=0.2)
            if rep.failed:
                row["again_failed"] = rep.reason
                break
            speeds.append(rep.chars_per_s)
    except Exception as e:  # noqa: BLE001 - the first POST's row is the judge's number: keep it
        row["again_failed"] = f"{type(e).__name__}: {e}"
    if speeds:
        mid = statistics.median(speeds)
        row.update(chars_per_s_again=mid, chars_per_s_again_runs=speeds, first_vs_again=first / mid if mid else None)


def combine_starts(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from several fresh starts of a setup: a single first POST is a noisy number (one
    setup read 24,442 and 18,434 chars/s on two H100 sessions), so chars/s, time to healthy and the
    `--again` figures are the medians over the starts that answered, each start's value kept in a
    ``*_starts`` list; accuracy is the first such start's (greedy setups answer alike). A start
    that failed is counted in ``failed_starts`` with its reason; the row fails only if all did."""
    import statistics

    if len(runs) == 1:
        return runs[0]
    ok = [r for r in runs if not r.get("failed")]
    row = dict(ok[0] if ok else runs[-1])
    row["starts"] = len(runs)
    if len(ok) < len(runs):
        row["failed_starts"] = [r.get("reason") for r in runs if r.get("failed")]
    again_failed = [r["again_failed"] for r in ok if r.get("again_failed")]
    row.pop("again_failed", None)
    if again_failed:
        row["again_failed"] = again_failed[0] + (f" (and {len(again_failed) - 1} more starts)" if len(again_failed) > 1 else "")
    for key in ("chars_per_s", "healthy_seconds", "predict_seconds", "chars_per_s_again"):
        values = [r[key] for r in ok if r.get(key) is not None]
        if values:
            row[key] = statistics.median(values)
            row[f"{key}_starts"] = values
    row.pop("first_vs_again", None)
    if row.get("chars_per_s_again") and row.get("chars_per_s") is not None:  # a 0 again median gives no ratio
        row["first_vs_again"] = row["chars_per_s"] / row["chars_per_s_again"]
    row.pop("chars_per_s_again_runs", None)  # per start; the medians above stand for them
    return row


def bench_setups(setups: list[Setup], model_dir: Path, questions: list[str], references: list[str], *,
                 engine_override: str | None = None, health_timeout: float = 900.0,
                 predict_timeout: float | None = None, compile_cache: str = "fresh",
                 log_dir: Path | None = None, on_row: Callable[[dict[str, Any]], None] | None = None,
                 again: int = 0, starts: int = 1) -> list[dict[str, Any]]:
    """Every setup, one after another, on the same model and questions; one row each (with the
    config it ran), in order. `predict_timeout` None: the judge's limit; `again`: run_setup's;
    `starts`: fresh servers per setup, one after another (`combine_starts`)."""
    if again < 0:
        raise ValueError(f"again must be 0 or more, not {again}")
    if starts < 1:
        raise ValueError(f"starts must be 1 or more, not {starts}")
    from tournament.judge.rules import PREDICT_TIMEOUT

    if compile_cache not in COMPILE_CACHES:
        raise ValueError(f"compile cache must be one of {COMPILE_CACHES}, not {compile_cache!r}")
    configs = [(s, served_config(s, model_dir, engine_override)) for s in setups]  # all valid before the first start
    rows: list[dict[str, Any]] = []
    names: set[str] = set()
    for setup, config in configs:
        name = setup.name if setup.name not in names else f"{setup.name}-{len(rows) + 1}"  # one log file each
        names.add(name)
        row = combine_starts([
            run_setup(name, config, questions, references, health_timeout=health_timeout,
                      predict_timeout=PREDICT_TIMEOUT if predict_timeout is None else predict_timeout,
                      compile_cache=compile_cache, log_dir=log_dir, again=again)
            for _ in range(starts)])
        row.update(source=setup.source, engine=config["engine"]["engine"], config=config)
        rows.append(row)
        if on_row:
            on_row(row)
    return rows


def setups_table(rows: Sequence[dict[str, Any]], model_name: str, questions: Sequence[str], compile_cache: str):
    """The P2 rows as a rich table."""
    from rich.table import Table

    starts = max((r.get("starts", 1) for r in rows), default=1)
    table = Table(title=f"P2: setups on {model_name}, {len(questions)} questions ({len(set(questions))} distinct), "
                        f"{compile_cache} compile cache"
                        + (f"; medians of {starts} fresh starts per setup" if starts > 1 else ""))
    again = any(r.get("chars_per_s_again") is not None for r in rows)
    cols = ("setup", "engine", "mode", "n", "distinct", "accuracy", "chars/s", "predict s", "healthy s", "status")
    if again:  # the judge's first POST, then the same POST on the warm server
        cols = cols[:7] + ("again chars/s", "1st / again") + cols[7:]
    for col in cols:
        table.add_column(col, justify="left" if col in ("setup", "engine", "mode", "status") else "right")
    for r in rows:
        num = lambda k, fmt: fmt.format(r[k]) if r.get(k) is not None else "-"  # noqa: E731
        cells = [r["setup"], r["engine"], r["mode"], str(r["n"]), str(r["distinct"]), num("accuracy", "{:.4f}"),
                 num("chars_per_s", "{:.0f}")]
        if again:
            cells += [num("chars_per_s_again", "{:.0f}"), num("first_vs_again", "{:.2f}")]
        status = f"failed: {r.get('reason')}" if r.get("failed") else "ok"
        if not r.get("failed") and r.get("failed_starts"):
            status = f"ok ({len(r['failed_starts'])}/{r['starts']} starts failed)"
        table.add_row(*cells, num("predict_seconds", "{:.2f}"), num("healthy_seconds", "{:.1f}"), status)
    return table
