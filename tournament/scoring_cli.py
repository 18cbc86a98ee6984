"""`tournament score PRED REF`: the judge's accuracy of a prediction file against references."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table


def register(app: typer.Typer) -> None:
    @app.command("score")
    def score(
        pred: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL of {\"answer\": ...} rows (or a docx)."),
        ref: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL of {\"question\", \"answer\"} rows, or a docx."),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    ) -> None:
        """Judge-exact accuracy (+ diagnostic zh_rougeL) of PRED against REF."""
        from tournament import scoring
        from tournament.data.ingest import DataFormatError, read_answers, read_qa

        try:
            answers = read_answers(pred)
            refs = [r.answer for r in read_qa(ref)]
        except DataFormatError as e:
            typer.echo(f"error: {e}", err=True)
            raise typer.Exit(2)
        result = {
            "accuracy": scoring.judge_accuracy(answers, refs),
            "zh_rougeL": scoring.zh_rougeL(answers, refs),
            "n": len(refs),
            "n_predictions": len(answers),
            "padded": max(0, len(refs) - len(answers)),
        }
        if as_json:
            typer.echo(json.dumps(result))
            return
        table = Table(title=f"{pred.name} vs {ref.name}")
        for k in result:
            table.add_column(k)
        table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in result.values()))
        Console().print(table)
