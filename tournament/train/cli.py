"""`tournament train CANDIDATE`: build a candidate (train, merge, quantize) or reuse its build."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer()


def _is_refit(train_file: Path | None) -> bool:
    """Whether a data build's manifest says it trains on its eval rows too (`data build --refit`)."""
    if train_file is None:
        return False
    try:
        return bool(json.loads((train_file.parent / "manifest.json").read_text()).get("refit"))
    except (OSError, ValueError, AttributeError):
        return False


@app.command("train")
def train(
    candidate: Path = typer.Argument(..., help="Candidate YAML (candidates/*.yaml)."),
    builds: Path = typer.Option(Path("builds"), help="Where builds live (<id>-<hash12>/)."),
    resume: bool = typer.Option(False, help="Continue an interrupted build from its last checkpoint."),
    force: bool = typer.Option(False, help="Rebuild even if a build with this config hash exists."),
    dataset: Optional[Path] = typer.Option(
        None, help="Train on this data build (folder with train.jsonl, or a .jsonl) instead of the "
                   "candidate's recipe.dataset: the refit for a submission, e.g. data/build/pmpp-refit. "
                   "The dataset's content enters the config hash, so this is a separate build."),
    max_steps: Optional[int] = typer.Option(None, min=1, help="Stop after N optimizer steps (smoke runs)."),
    device: str = typer.Option("auto", help="auto | cpu | cuda | cuda:N"),
    models_dir: Path = typer.Option(Path("models"), help="Where base models are downloaded/imported."),
    mlflow_uri: Optional[str] = typer.Option(
        None, help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlruns/mlflow.db). "
                   "If MLflow cannot open it, train stops before the first step (exit 2)."),
    no_track: bool = typer.Option(False, "--no-track", help="Do not log to MLflow."),
    no_mlflow: bool = typer.Option(False, "--no-mlflow", hidden=True, help="Old name of --no-track."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Train CANDIDATE (or reuse its build) and print the servable model directory."""
    from rich.console import Console

    from tournament.candidates import CandidateError, load_candidate, with_dataset
    from tournament.tracking import TrackingError
    from tournament.train.build import build_summary, ensure_built, summary_table

    console = Console(stderr=True)
    try:
        cand = load_candidate(candidate)
        if dataset is not None:
            cand = with_dataset(cand, dataset)
    except CandidateError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    if dataset is not None:
        refit = _is_refit(cand.dataset_file())
        console.print(f"[dim]dataset override: {cand.dataset_file()}"
                      f"{' (refit: eval rows included, its eval scores are not honest)' if refit else ''}[/dim]")
    uri = None
    if not (no_track or no_mlflow):
        uri = mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlruns/mlflow.db"
    try:
        model_dir = ensure_built(cand, builds, resume=resume, force=force, max_steps=max_steps, device=device,
                                 models_dir=models_dir, mlflow_uri=uri,
                                 log=lambda s: console.print(f"[dim]{s}[/dim]"))
    except (CandidateError, FileNotFoundError, ValueError) as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2)
    except TrackingError as e:
        typer.echo(f"error: {e}, or pass --no-track", err=True)
        raise typer.Exit(2)
    summary = build_summary(cand, model_dir, max_steps)
    if as_json:
        typer.echo(json.dumps(summary))
        return
    Console().print(summary_table(summary, cand.id))
    typer.echo(str(model_dir))
