"""`tournament serve`: run serve.py in the foreground, exactly as the judge image does."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        winner: Optional[Path] = typer.Option(None, "--winner", help="winner.json to serve (default: the repo's)."),
        host: str = typer.Option("127.0.0.1", "--host"),
        port: int = typer.Option(8000, "--port"),
    ) -> None:
        """Start `uvicorn serve:app` with winner.json (plus TOURNAMENT_* environment overrides)."""
        import uvicorn

        from tournament.serving.config import REPO_ROOT

        if winner:
            os.environ["TOURNAMENT_WINNER"] = str(winner.resolve())
        os.chdir(REPO_ROOT)
        uvicorn.run("serve:app", host=host, port=port)
