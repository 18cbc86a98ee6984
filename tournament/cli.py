"""`tournament ...`: the command line, composed of the packages' own Typer apps. Each package's
`cli.py` holds a module-level `app` of plain command functions; heavy libraries (torch,
transformers, optuna, mlflow) are imported inside the commands so that `tournament --help` and
the judge loop stay fast."""

from __future__ import annotations

import typer

from tournament.data import cli as data_cli
from tournament.images import cli as images_cli
from tournament.judge import cli as judge_cli
from tournament.models import cli as models_cli
from tournament.serving import cli as serving_cli
from tournament.study import cli as study_cli
from tournament.train import cli as train_cli

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Decide which fine-tuned LLM build deserves one of your few judge submissions.",
)

# The order is the order of `tournament --help`: the top-level commands first, then the groups.
# An app added without a name lends its commands to the top level (Typer >= 0.15).
app.add_typer(judge_cli.app)  # score, ceiling, judge
app.add_typer(serving_cli.app)  # serve
app.add_typer(train_cli.app)  # train
app.add_typer(study_cli.app)  # sweep, board, pick, submit, judge-result, ledger, ui, demo
app.add_typer(serving_cli.bench_app, name="bench")
app.add_typer(data_cli.app, name="data")
app.add_typer(models_cli.app, name="models")
app.add_typer(images_cli.app, name="images")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
