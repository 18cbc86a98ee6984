"""`tournament data ...`: build a leakage-safe split, check one, generate QA from a book, stats.

Exit codes: 0 fine, 1 leakage found (check) or refused (build), 2 bad input file or arguments,
3 teacher generation finished with failed chunks (re-run to retry them).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import typer

app = typer.Typer(no_args_is_help=True, help="QA data: ingest, variant groups, leakage-safe splits, teacher generation.")


def _console():
    from rich.console import Console

    return Console()


def _fail(message: str, code: int) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _rules(near_threshold: float | None, template_support: int | None, base: Any = None):
    import dataclasses

    from tournament.data.groups import GroupingRules

    kw: dict[str, Any] = {}
    if near_threshold is not None:
        kw["near_threshold"] = near_threshold
    if template_support is not None:
        kw["min_template_support"] = template_support
    return dataclasses.replace(base or GroupingRules(), **kw)


@app.command("build")
def build(
    source: Optional[list[Path]] = typer.Option(None, "--source", "-s", help="Training file(s): any format read_qa reads."),
    eval_file: Optional[list[Path]] = typer.Option(None, "--eval", "-e", help="Eval file(s); every variant group they touch leaves train."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default data/build/NAME)."),
    split: Optional[Path] = typer.Option(None, "--split", help="A split definition YAML (e.g. data/splits/pmpp-docx.yaml); flags override it."),
    eval_fraction: Optional[float] = typer.Option(None, "--eval-fraction", help="Also hold out this fraction of the sources' groups."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Seed for --eval-fraction and --augment (default 0)."),
    allow_leakage: bool = typer.Option(False, "--allow-leakage", help="Write the split even if the leakage report is not empty (recorded)."),
    refit: bool = typer.Option(False, "--refit", help="Train on everything, eval included (final winner only; recorded)."),
    augment: Optional[int] = typer.Option(None, "--augment", help="Templated copies per train row (seeded; train only)."),
    near_threshold: Optional[float] = typer.Option(None, "--near-threshold", help="Char 3-gram Jaccard for near-duplicates (default 0.8)."),
    template_support: Optional[int] = typer.Option(None, "--template-support", help="Rows a template must be seen with (default 5)."),
    as_json: bool = typer.Option(False, "--json", help="Print the manifest as JSON."),
) -> None:
    """Write train.jsonl, eval.jsonl and manifest.json; refuses a split that leaks."""
    from tournament.data.ingest import DataFormatError
    from tournament.data.leakage import render_report
    from tournament.data.split import LeakageError, build_split, load_split_spec, render_manifest

    kw: dict[str, Any] = {"sources": [], "eval_files": [], "out": None, "seed": 0, "eval_fraction": None,
                          "allow_leakage": False, "refit": False, "augment": 0, "name": None}
    try:
        if split is not None:
            if not split.is_file():
                raise _fail(f"split definition {split} not found", 2)
            kw.update(load_split_spec(split))
        if source:
            kw["sources"] = list(source)
        if eval_file:
            kw["eval_files"] = list(eval_file)
        for key, value in (("out", out), ("seed", seed), ("eval_fraction", eval_fraction), ("augment", augment)):
            if value is not None:
                kw[key] = value
        kw["allow_leakage"] = kw["allow_leakage"] or allow_leakage
        kw["refit"] = kw["refit"] or refit
        kw["rules"] = _rules(near_threshold, template_support, kw.get("rules"))
        if kw["out"] is None:
            if not kw["sources"] and not kw["eval_files"]:
                raise _fail("give --split FILE, or --source/--eval files", 2)
            raise _fail("give --out DIR (e.g. data/build/NAME)", 2)
        for p in [*kw["sources"], *kw["eval_files"]]:
            if not Path(p).is_file():
                raise _fail(f"{p}: file not found", 2)
        result = build_split(**kw)
    except LeakageError as exc:
        if as_json:
            typer.echo(json.dumps({"error": "leakage", "leakage": exc.report.to_dict(max_items=50)}, ensure_ascii=False))
        else:
            render_report(_console(), exc.report.to_dict(max_items=20))
        raise _fail(str(exc), 1)
    except (DataFormatError, ValueError) as exc:
        raise _fail(str(exc), 2)

    m = result.manifest
    if as_json:
        typer.echo(json.dumps(m, ensure_ascii=False))
        return
    render_manifest(_console(), m, result.out)


@app.command("check")
def check(
    train: Path = typer.Argument(..., help="Training file (any format read_qa reads)."),
    eval_path: Path = typer.Argument(..., metavar="EVAL", help="Eval file."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as one JSON object."),
    near_threshold: Optional[float] = typer.Option(None, "--near-threshold", help="Char 3-gram Jaccard for near-duplicates (default 0.8)."),
) -> None:
    """Leakage report: eval rows whose group, normalised text or near-duplicate is in TRAIN. Exit 1 if any."""
    from tournament.data.ingest import DataFormatError, read_qa
    from tournament.data.leakage import check_leakage, render_report

    try:
        report = check_leakage(read_qa(train), read_qa(eval_path), _rules(near_threshold, None))
    except DataFormatError as exc:
        raise _fail(str(exc), 2)
    data = report.to_dict()
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False))
    else:
        render_report(_console(), data, max_items=20)
    if not report.clean:
        raise typer.Exit(1)


@app.command("stats")
def stats(
    files: list[Path] = typer.Argument(..., help="QA files (any format read_qa reads)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Rows, formats, variant groups and discovered templates of QA files."""
    from collections import Counter

    from tournament.data.groups import group_rows, render_summary
    from tournament.data.ingest import DataFormatError, read_qa

    rows = []
    per_file = {}
    try:
        for f in files:
            got = read_qa(f)
            per_file[str(f)] = {"rows": len(got), "formats": dict(Counter(r.kind for r in got))}
            rows.extend(got)
    except DataFormatError as exc:
        raise _fail(str(exc), 2)
    summary = group_rows(rows).summary()
    if as_json:
        typer.echo(json.dumps({"files": per_file, "grouping": summary}, ensure_ascii=False))
        return
    console = _console()
    for f, info in per_file.items():
        console.print(f"{f}: {info['rows']} rows {info['formats']}")
    render_summary(console, summary, max_templates=40)


@app.command("generate")
def generate(
    book: Path = typer.Option(..., "--book", help="The book: .txt, .md, .docx or .pdf."),
    teacher: str = typer.Option(..., "--teacher", help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8001/v1"),
    model: str = typer.Option(..., "--model", help="Model name the teacher serves."),
    out: Path = typer.Option(..., "--out", help="Output JSONL (appended; re-runs resume)."),
    concurrency: int = typer.Option(4, "--concurrency", min=1, help="Requests in flight."),
    max_chunks: Optional[int] = typer.Option(None, "--max-chunks", min=1, help="Only the first N chunks."),
    pairs_per_chunk: int = typer.Option(5, "--pairs-per-chunk", min=1),
    dedupe_against: Optional[list[Path]] = typer.Option(None, "--dedupe-against", help="Existing QA file(s) to avoid repeating."),
    timeout: float = typer.Option(120.0, "--timeout", help="Seconds per request."),
    retries: int = typer.Option(4, "--retries", min=0, help="Retries per chunk (exponential backoff)."),
    api_key_env: Optional[str] = typer.Option(None, "--api-key-env", help="Name of an environment variable holding the API key (never stored)."),
    as_json: bool = typer.Option(False, "--json", help="Print the summary as JSON (no progress bar)."),
) -> None:
    """Generate QA pairs from a book with a teacher model (resumable, deduplicated)."""
    import os

    from tournament.data.ingest import DataFormatError
    from tournament.data.teacher import generate_from_book

    api_key = os.environ.get(api_key_env) if api_key_env else None
    if api_key_env and not api_key:
        raise _fail(f"environment variable {api_key_env} is not set", 2)
    try:
        summary = generate_from_book(book, teacher, model, out, concurrency=concurrency, max_chunks=max_chunks,
                                     pairs_per_chunk=pairs_per_chunk, dedupe_against=dedupe_against or (),
                                     timeout=timeout, retries=retries, api_key=api_key, progress=not as_json)
    except DataFormatError as exc:
        raise _fail(str(exc), 2)
    data = summary.to_dict()
    if as_json:
        typer.echo(json.dumps(data, ensure_ascii=False))
    else:
        console = _console()
        console.print(f"{data['rows_written']} rows written to {out} "
                      f"({data['chunks_done']} chunks done, {data['chunks_skipped']} skipped as done before, "
                      f"{len(data['chunks_failed'])} failed); rejected: {data['rejected'] or 'none'}")
        for f in data["chunks_failed"][:10]:
            console.print(f"  [red]failed[/] {f['chunk_id']}: {f['error']}")
    if summary.failed:
        raise typer.Exit(3)
