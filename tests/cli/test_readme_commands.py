"""The README's command table is checked against the CLI itself, so neither can drift: every
command `tournament --help` lists (sub-commands included) has a row, every row names a real
command, and every `--option` a row shows is an option of that command."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from tournament.cli import app
from tournament.paths import REPO_ROOT


def cli_commands() -> dict[str, set[str]]:
    """'data build' -> its option names, for every leaf command."""
    root = typer.main.get_command(app)
    out: dict[str, set[str]] = {}

    def walk(group, prefix):
        for name, cmd in group.commands.items():
            path = f"{prefix} {name}".strip()
            if hasattr(cmd, "commands"):
                walk(cmd, path)
            else:
                out[path] = {o for p in cmd.params for o in getattr(p, "opts", []) if o.startswith("-")}

    walk(root, "")
    return out


def readme_rows(readme: Path = REPO_ROOT / "README.md") -> list[tuple[list[str], list[str]]]:
    """(command paths, options shown) of each row of the README's command table."""
    rows = []
    for line in readme.read_text(encoding="utf-8").splitlines():
        m = re.match(r"^\| `tournament ([^`]*)` \|", line)
        if not m:
            continue
        cell = m.group(1)
        words = cell.split()
        # "data build/check/generate/stats" -> data build, data check, ...; "sweep/board" -> sweep, board
        head = words[0]
        paths = []
        if len(words) > 1 and "/" in words[1] and not words[1].startswith(("-", "[")):
            paths = [f"{head} {sub}" for sub in words[1].split("/")]
        elif "/" in head:
            paths = head.split("/")
        elif len(words) > 1 and re.fullmatch(r"[a-z][a-z-]*", words[1]):
            paths = [f"{head} {words[1]}"]
        else:
            paths = [head]
        rows.append((paths, re.findall(r"--[a-z][a-z-]*", cell)))
    return rows


def test_every_cli_command_has_a_readme_row_and_back():
    cli = cli_commands()
    rows = readme_rows()
    assert rows, "the README has no command table"
    in_readme = {p for paths, _ in rows for p in paths}
    assert not sorted(set(cli) - in_readme), f"commands missing from the README table: {sorted(set(cli) - in_readme)}"
    assert not sorted(in_readme - set(cli)), f"README rows naming no command: {sorted(in_readme - set(cli))}"


def test_every_option_in_the_readme_exists():
    cli = cli_commands()
    for paths, options in readme_rows():
        for path in paths:
            missing = [o for o in options if o not in cli.get(path, set())]
            assert not missing, f"README row for `tournament {path}` shows {missing}, which it does not take"


def test_the_check_can_fail(tmp_path):
    # a README naming a command the CLI lacks, or an option a command does not take, is caught
    fake = tmp_path / "README.md"
    fake.write_text("| `tournament nosuch --x` | nothing | - |\n| `tournament score PRED REF [--nope]` | x | - |\n")
    assert readme_rows(fake) == [(["nosuch"], ["--x"]), (["score"], ["--nope"])]
    cli = cli_commands()
    assert "nosuch" not in cli and "--nope" not in cli["score"]
