"""The serving commands: `tournament serve` (serve.py exactly as the judge image runs it),
`tournament bench serve` (serve.py vs the raw engine: chars/s and time to healthy, numbers only)
and `tournament bench setups` (the setups people copy vs the winner, P2)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import List, Optional

import typer

app = typer.Typer()
bench_app = typer.Typer(no_args_is_help=True, help="Benchmarks that print numbers (never pass/fail).")


def _load_config(config: str) -> dict:
    # inline JSON first: a long one is no valid file name (stat would fail with ENAMETOOLONG)
    doc = json.loads(config if config.lstrip().startswith("{") else Path(config).read_text())
    return doc.get("serve", doc)  # a winner.json or a bare ServeConfig


def port_problem(host: str, port: int) -> Optional[str]:
    """Why uvicorn could not listen on host:port, found in a second (before a model loads), or None."""
    import errno
    import socket

    try:
        family, kind, proto, _, addr = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        return f"--host {host}: not an address of this machine ({e.strerror})"
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no conflict
        try:
            sock.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return f"port {port} on {host} is already in use (another server?): stop it or pass --port N"
            if e.errno == errno.EACCES:
                return f"port {port} on {host} needs root (ports below 1024): pass --port 8000 or above"
            return f"cannot listen on {host}:{port}: {e.strerror}"
    return None


def model_problem() -> Optional[str]:
    """Why the configured model cannot be served here (winner.json broken, weights missing), or None."""
    from tournament.serving.config import WinnerFileError, load_serve_config, winner_path

    try:
        cfg, base = load_serve_config()
    except WinnerFileError as e:
        return str(e)
    model_dir = cfg.resolved_model_path(base)
    if model_dir.exists():
        return None
    wp = winner_path()
    source = str(wp) if wp.is_file() else "the defaults (no winner.json)"
    fix = ("fetch it as the image does with `python download_model.py`"
           + (f" {wp}" if os.environ.get("TOURNAMENT_WINNER") else "") if cfg.model.modelscope_id else
           "no published model is named (serve.model.modelscope_id) for download_model.py to fetch")
    return (f"{source} serves the model at {cfg.model.path}, which is not there ({model_dir}): {fix}; or "
            "write a winner.json that serves a build on this machine with `tournament pick --local` "
            "(then --winner FILE)")


@app.command("serve")
def serve(
    winner: Optional[Path] = typer.Option(None, "--winner", help="winner.json to serve (default: the repo's)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port", min=1, max=65535),
) -> None:
    """Start `uvicorn serve:app` with winner.json (plus TOURNAMENT_* environment overrides)."""
    from tournament.paths import REPO_ROOT

    if not (REPO_ROOT / "serve.py").is_file():
        raise typer.BadParameter(f"no serve.py in {REPO_ROOT}: `tournament serve` needs a checkout "
                                 "installed with `pip install -e .`")
    if winner:
        if not winner.is_file():
            raise typer.BadParameter(f"{winner}: no such file", param_hint="--winner")
        os.environ["TOURNAMENT_WINNER"] = str(winner.resolve())
    # both checks take a second; loading the model first would make a user wait minutes for them
    problem = port_problem(host, port) or model_problem()
    if problem:
        typer.secho(f"serve: {problem}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    import uvicorn

    os.chdir(REPO_ROOT)  # the image's working directory
    # The console script's sys.path holds the venv's bin, not the checkout: app_dir puts the
    # root (where serve.py sits) first, so "serve:app" imports from any directory.
    uvicorn.run("serve:app", host=host, port=port, app_dir=str(REPO_ROOT))


@bench_app.command("serve")
def bench_serve(
    config: str = typer.Option(..., "--config", help="ServeConfig JSON (inline or file; a winner.json works)."),
    questions: Path = typer.Option(..., "--questions", exists=True, dir_okay=False),
    variant: Optional[List[str]] = typer.Option(None, "--variant", help="JSON overlay on --config; repeatable. NAME=JSON names it."),
    limit: Optional[int] = typer.Option(None, "--limit"),
    repeat_to: Optional[int] = typer.Option(None, "--repeat-to", help="Cycle questions up to N (bonus set: 358)."),
    repeats: int = typer.Option(3, "--repeats"),
    skip_raw: bool = typer.Option(False, "--skip-raw", help="Only the served numbers (settings table)."),
    raw_for: Optional[List[str]] = typer.Option(None, "--raw-for", help="Measure raw generate only for these runs (repeatable)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write all results as JSON here."),
    log_dir: Optional[Path] = typer.Option(None, "--log-dir"),
    compile_cache: str = typer.Option(
        "shared", "--compile-cache",
        help="shared: this environment's vLLM compile cache (VLLM_CACHE_ROOT; a run compiled before starts "
             "warm). fresh: every server and raw child gets its own new, empty cache, removed afterwards "
             "(healthy s = the judge's cold start)."),
) -> None:
    """P1: serve.py batch chars/s / raw generate chars/s on the same prompts; P4: seconds to healthy."""
    from rich.console import Console

    from tournament.data.ingest import load_questions
    from tournament.serving.bench import result_row, results_table, serve_vs_raw
    from tournament.serving.config import deep_merge

    if compile_cache not in ("shared", "fresh"):
        raise typer.BadParameter("shared or fresh", param_hint="--compile-cache")
    base = _load_config(config)
    qs, refs = load_questions(questions, limit, repeat_to)
    runs = [("base", base)]
    for i, v in enumerate(variant or []):
        head, body = v[: v.find("{")], v[v.find("{") :]  # "NAME={...}" or "{...}"
        name = head[:-1] if head.endswith("=") else f"v{i + 1}"
        runs.append((name, deep_merge(base, json.loads(body))))
    results = {}
    table = results_table(len(qs), repeats, compile_cache)
    for name, cfg in runs:
        try:
            no_raw = skip_raw or (bool(raw_for) and name not in raw_for)
            r = serve_vs_raw(cfg, qs, refs, repeats=repeats, skip_raw=no_raw,
                             log_dir=(log_dir / name) if log_dir else None, compile_cache=compile_cache)
        except Exception as e:  # one broken variant must not lose the others' numbers
            results[name] = {"error": f"{type(e).__name__}: {e}", "config": cfg, "compile_cache": compile_cache}
            table.add_row(*result_row(name, results[name]))
            continue
        results[name] = {"config": cfg, **r}
        table.add_row(*result_row(name, results[name]))
        if out:
            out.write_text(json.dumps(results, indent=1, ensure_ascii=False))
    Console(width=max(160, Console().width)).print(table)
    if out:
        out.write_text(json.dumps(results, indent=1, ensure_ascii=False))


@bench_app.command("setups")
def bench_setups_cmd(
    model: Path = typer.Option(..., "--model", exists=True, file_okay=False,
                               help="Model directory every setup serves (replaces each setup's model.path)."),
    questions: Path = typer.Option(..., "--questions", exists=True, dir_okay=False,
                                   help="QA file (any format the data loader reads), sent as the judge would."),
    setup: List[Path] = typer.Option([], "--setup", exists=True, dir_okay=False,
                                     help="Setup file (name + serve: a ServeConfig; benchmarks/setups/); repeatable."),
    winner: Optional[Path] = typer.Option(None, "--winner", exists=True, dir_okay=False,
                                          help="winner.json: its serve config runs as one more setup, 'winner'."),
    engine: Optional[str] = typer.Option(
        None, "--engine",
        help="transformers: replace every setup's engine block with the transformers engine. For smoke "
             "tests without vLLM (CPU) only: the numbers then say nothing about the setups."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N questions."),
    health_timeout: float = typer.Option(900.0, "--health-timeout", help="Seconds to wait for GET / (the MetaX judge allows 180)."),
    compile_cache: str = typer.Option(
        "fresh", "--compile-cache",
        help="fresh (default): each server starts from a new, empty vLLM compile cache, as in the judge's "
             "fresh container; shared: this environment's cache."),
    again: int = typer.Option(
        0, "--again", min=0,
        help="Send a batch setup's POST N more times, each from an empty prefix cache: their median beside "
             "the first POST (the judge's number) says how far a warm server's figure, as a sweep times "
             "it, sits above the judge's."),
    starts: int = typer.Option(
        1, "--starts", min=1,
        help="Fresh servers per setup, one after another: chars/s and time to healthy are their medians "
             "(one first POST is a noisy number)."),
    as_json: bool = typer.Option(False, "--json", help="Print the rows as one JSON list."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write the rows (with each setup's config) as JSON here."),
    log_dir: Optional[Path] = typer.Option(None, "--log-dir", help="Keep each server's log here."),
) -> None:
    """P2: each setup as the real serve.py on the same model, judged like the judge: mode, accuracy,
    chars/s, predict seconds, time to healthy. Numbers, never pass/fail."""
    from rich.console import Console

    from tournament.data.ingest import load_questions
    from tournament.serving import bench_setups
    from tournament.serving.process import COMPILE_CACHES

    if compile_cache not in COMPILE_CACHES:
        raise typer.BadParameter(" or ".join(COMPILE_CACHES), param_hint="--compile-cache")
    if engine is not None and engine not in bench_setups.ENGINE_OVERRIDES:
        raise typer.BadParameter(f"only {', '.join(bench_setups.ENGINE_OVERRIDES)} (smoke tests)", param_hint="--engine")
    try:
        setups = [bench_setups.load_setup(p) for p in setup] + ([bench_setups.load_setup(winner)] if winner else [])
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--setup/--winner") from None
    if not setups:
        raise typer.BadParameter("give at least one --setup or --winner", param_hint="--setup")
    qs, refs = load_questions(questions, limit)

    rows: list = []

    def keep(row: dict) -> None:  # --out is written after every setup: a later one that hangs loses nothing
        rows.append(row)
        if out:
            out.write_text(json.dumps(rows, indent=1, ensure_ascii=False))

    try:
        bench_setups.bench_setups(setups, model, qs, refs, engine_override=engine, health_timeout=health_timeout,
                        compile_cache=compile_cache, log_dir=log_dir, on_row=keep, again=again, starts=starts)
    except ValueError as e:  # a setup whose settings are invalid: before any server starts
        raise typer.BadParameter(str(e)) from None
    if as_json:
        typer.echo(json.dumps([{k: v for k, v in r.items() if k != "config"} for r in rows], indent=1, ensure_ascii=False))
        return
    Console(width=max(160, Console().width)).print(bench_setups.setups_table(rows, model.name, qs, compile_cache))
