"""`tournament judge`: run the judge emulator against a server."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table


def load_questions(path: Path, limit: int | None = None, repeat_to: int | None = None, set_name: str | None = None):
    """Questions + references from any QA file; optionally sliced or repeated to a judge-sized set."""
    from tournament.data.ingest import read_qa

    rows = read_qa(path)
    if set_name:
        wanted = "plus" if set_name == "bonus" else set_name  # the course calls the plus set "bonus"
        rows = [r for r in rows if (r.meta or {}).get("set") == wanted]
        if not rows:
            raise ValueError(f"{path}: no rows of set {set_name!r} (a data build's eval.jsonl has basic/plus)")
    if limit:
        rows = rows[:limit]
    if repeat_to and rows:
        rows = [rows[i % len(rows)] for i in range(repeat_to)]
    return [r.question for r in rows], [r.answer for r in rows]


def register(app: typer.Typer) -> None:
    @app.command("judge")
    def judge_cmd(
        url: str = typer.Option(..., "--url", help="Server base URL, e.g. http://127.0.0.1:8000"),
        questions: Path = typer.Option(..., "--questions", exists=True, dir_okay=False,
                                       help="docx, JSONL of question/answer, or a data build's eval.jsonl"),
        health_timeout: float = typer.Option(180.0, "--health-timeout", help="Seconds GET / may take (MetaX: 180)."),
        predict_timeout: float = typer.Option(360.0, "--predict-timeout", help="Seconds all POSTs may take (360)."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
        out: Optional[Path] = typer.Option(None, "--out", help="Write per-question rows (JSONL) here."),
        limit: Optional[int] = typer.Option(None, "--limit", help="Only the first N questions."),
        repeat_to: Optional[int] = typer.Option(None, "--repeat-to", help="Cycle questions up to N (judge sizes: 292, 358)."),
        set_name: Optional[str] = typer.Option(None, "--set", help="Only rows of this set (basic|plus) of a data build."),
    ) -> None:
        """Behave as the judge: health polling, batch/serial mode, limits, padding, character speed."""
        from tournament.judge import judge, write_rows

        qs, refs = load_questions(questions, limit, repeat_to, set_name)
        report = judge(url, qs, refs, health_timeout=health_timeout, predict_timeout=predict_timeout)
        if out:
            write_rows(out, qs, refs, report)
        summary = report.summary()
        if as_json:
            typer.echo(json.dumps(summary))
        else:
            table = Table(title=f"judge emulator: {url}")
            table.add_column("metric")
            table.add_column("value", justify="right")
            for k, v in summary.items():
                table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
            Console().print(table)
        if report.failed:
            raise typer.Exit(1)
