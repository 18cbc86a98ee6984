"""`tournament ...`: the command line, as a list. Each package registers its own commands from its
`cli.py` (`register(app)`); heavy libraries (torch, transformers, optuna, mlflow) are imported
inside the commands so that `tournament --help` and the judge loop stay fast."""

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

# The order is the order of `tournament --help`: judge, serve, data, models, train, study, images.
for module in (judge_cli, serving_cli, data_cli, models_cli, train_cli, study_cli, images_cli):
    module.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
