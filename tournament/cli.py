"""`tournament ...`: the command line. Each area registers its own commands (one module each);
heavy libraries (torch, transformers, optuna, mlflow) are imported inside the commands so that
`tournament --help` and the judge loop stay fast."""

from __future__ import annotations

import typer

from tournament import judge_cli, scoring_cli
from tournament.data import cli as data_cli
from tournament.models import cli as models_cli
from tournament.train import cli as train_cli
from tournament import bench_cli, images_cli, serve_cli, tournament_cli

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Decide which fine-tuned LLM build deserves one of your few judge submissions.",
)

for module in (scoring_cli, judge_cli, serve_cli, bench_cli, data_cli, models_cli, train_cli, tournament_cli, images_cli):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
