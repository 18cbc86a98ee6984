"""The judge's commands: `tournament score` (its accuracy of a prediction file), `tournament ceiling`
(what each max_tokens leaves of answers a model knows) and `tournament judge` (the judge emulator
against a running server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from tournament.judge.rules import HEALTH_TIMEOUT, PREDICT_TIMEOUT

app = typer.Typer()


@app.command("score")
def score(
    pred: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL of {\"answer\": ...} rows (or a docx)."),
    ref: Path = typer.Argument(..., exists=True, dir_okay=False, help="JSONL of {\"question\", \"answer\"} rows, or a docx."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Judge-exact accuracy (+ diagnostic zh_rougeL) of PRED against REF."""
    from rich.console import Console

    from tournament.data.ingest import DataFormatError, read_answers, read_qa
    from tournament.judge.scoring import score_report, score_table

    try:
        answers = read_answers(pred)
        refs = [r.answer for r in read_qa(ref)]
    except DataFormatError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    if len(answers) > len(refs):  # the judge pads missing answers; extra ones mean the files do not match
        typer.echo(f"error: {pred.name} has {len(answers)} predictions but {ref.name} has {len(refs)} references: "
                   "are these the right files (same question set, same order)?", err=True)
        raise typer.Exit(2)
    result = score_report(answers, refs)
    if as_json:
        typer.echo(json.dumps(result))
        return
    Console().print(score_table(result, title=f"{pred.name} vs {ref.name}"))


@app.command("ceiling")
def ceiling(
    ref: Path = typer.Argument(..., exists=True, dir_okay=False, help="QA file with the references (docx, JSONL, ...)."),
    tokenizer: Path = typer.Option(..., "--tokenizer", exists=True, file_okay=False,
                                   help="Model directory whose tokenizer the server uses."),
    max_tokens: list[int] = typer.Option([64, 96, 128, 192, 256, 384, 512], "--max-tokens", min=1,
                                         help="Caps to try (repeat the option)."),
    set_name: Optional[str] = typer.Option(None, "--set", help="Only rows of this set (basic | plus/bonus) of a data build's eval.jsonl."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Judge accuracy of the references cut at each max_tokens: the most a model that knows every
    answer can score under that cap (for a refit build answering the judge's repeated samples)."""
    from tournament.data.ingest import DataFormatError, load_questions
    from tournament.judge.ceiling import answer_ceiling, quantiles, render, token_ids

    try:
        _, refs = load_questions(ref, set_name=set_name)
    except (DataFormatError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(str(tokenizer))
    except (OSError, ValueError) as e:
        typer.echo(f"error: no tokenizer in {tokenizer}: {e}", err=True)
        raise typer.Exit(2)
    ids = token_ids(refs, tok)
    rows = answer_ceiling(refs, ids, tok, sorted(set(max_tokens)))
    tokens = quantiles([len(x) for x in ids])
    if as_json:
        typer.echo(json.dumps({"file": str(ref), "n": len(refs), "reference_tokens": tokens, "caps": rows}))
        return
    from rich.console import Console

    render(Console(), ref, len(refs), tokens, rows)


@app.command("judge")
def judge_cmd(
    url: str = typer.Option(..., "--url", help="Server base URL, e.g. http://127.0.0.1:8000"),
    questions: Path = typer.Option(..., "--questions", exists=True, dir_okay=False,
                                   help="docx, JSONL of question/answer, or a data build's eval.jsonl"),
    health_timeout: float = typer.Option(HEALTH_TIMEOUT["metax"], "--health-timeout", min=0.0, help="Seconds GET / may take (MetaX: 180, Paratera: 420)."),
    predict_timeout: float = typer.Option(PREDICT_TIMEOUT, "--predict-timeout", min=0.0, help="Seconds all POSTs may take (360)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    out: Optional[Path] = typer.Option(None, "--out", help="Write per-question rows (JSONL) here."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Only the first N questions."),
    repeat_to: Optional[int] = typer.Option(None, "--repeat-to", min=1, help="Cycle questions up to N (judge sizes: 292, 358)."),
    set_name: Optional[str] = typer.Option(None, "--set", help="Only rows of this set (basic|plus) of a data build."),
) -> None:
    """Behave as the judge: health polling, batch/serial mode, limits, padding, character speed."""
    from tournament.data.ingest import load_questions
    from tournament.files import write_answer_table
    from tournament.judge.emulator import judge, summary_table

    qs, refs = load_questions(questions, limit, repeat_to, set_name)
    report = judge(url, qs, refs, health_timeout=health_timeout, predict_timeout=predict_timeout)
    if out:
        write_answer_table(out, qs, refs, report.answers, report.scores)
    summary = report.summary()
    if as_json:
        typer.echo(json.dumps(summary))
    else:
        from rich.console import Console

        Console().print(summary_table(summary, url))
    if report.failed:
        raise typer.Exit(1)
