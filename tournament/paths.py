"""Where things are. One notion of "the project root": the folder that holds `pyproject.toml`.

- ``REPO_ROOT``: the root of the checkout this package was imported from: where `serve.py`,
  `winner.json`, `sweeps/` and `data/` sit (the judge image's working directory too, where no
  pyproject.toml is copied: there it is the folder above the package).
- ``project_root(start)``: the project root at or above `start` (a YAML file's folder). Relative
  paths inside split and sweep files are read from there, so `data/pmpp/basic.docx` means the same
  wherever `tournament` runs.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def project_root(start: str | Path) -> Path:
    start = Path(start).resolve()
    for d in (start, *start.parents):
        if (d / "pyproject.toml").is_file():
            return d
    return start
