"""`tournament images ...`: the judge images (Dockerfiles per track) against winner.json."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Judge images: lint the Dockerfiles, check them against winner.json, budget the build.")


@app.command("check")
def check(
    winner: Path = typer.Option(None, "--winner", help="winner.json (default: the repo's)"),
    bandwidth_mbps: float = typer.Option(100.0, "--bandwidth-mbps", help="judge build-stage bandwidth (MetaX: 100)"),
    build_limit: float = typer.Option(900.0, "--build-limit", help="judge build limit in seconds (MetaX: 900)"),
    size_gb: Optional[float] = typer.Option(None, "--size-gb", help="model download size, when neither a local copy nor ModelScope is at hand"),
    overhead_s: float = typer.Option(150.0, "--overhead-s", help="the rest of the build (pip, copies, export)"),
    track: list[str] = typer.Option([], "--track", help="metax | paratera | mthreads (= moore-threads) (repeatable; default: all)"),
    offline: bool = typer.Option(False, "--offline", help="do not ask ModelScope for the file sizes"),
    no_hadolint: bool = typer.Option(False, "--no-hadolint", help="skip hadolint even if installed"),
    strict: bool = typer.Option(False, "--strict", help="exit non-zero on warnings and on a tight/over/unknown budget too"),
    as_json: bool = typer.Option(False, "--json", help="print one JSON object"),
) -> None:
    """Lint every track's Dockerfile, check it agrees with winner.json, estimate the build time.

    Exit 1 on errors (a build that would fail or serve the wrong thing); with --strict also on
    warnings and when the model download does not fit comfortably in the build limit."""
    from tournament.images import checks as images
    from tournament.images.tracks import image_track_name
    from tournament.paths import REPO_ROOT

    root = REPO_ROOT
    winner = winner or root / "winner.json"
    try:  # a hardware track's name (judge.hardware) names its image track too
        track = [image_track_name(t) for t in track]
    except ValueError as e:
        raise typer.BadParameter(str(e)) from None
    results = images.check_all(root, winner, track or None)
    hl = None
    if not no_hadolint:
        files = [root / images.TRACKS[t].dockerfile for t in (track or images.TRACKS) if (root / images.TRACKS[t].dockerfile).exists()]
        hl = images.hadolint(files)
        if hl is not None:
            results["hadolint"] = hl
    budget = images.estimate_budget(
        winner, bandwidth_mbps=bandwidth_mbps, build_limit_s=build_limit, size_gb=size_gb,
        overhead_s=overhead_s, online=not offline,
    )
    errors, warnings = images.tally(results)
    failed = errors > 0 or (strict and (warnings > 0 or budget.verdict != "ok"))
    if as_json:
        print(json.dumps(images.report_json(results, budget, failed=failed, hadolint_ran=hl is not None),
                         indent=2, default=str))
    else:
        for line in images.report_lines(results, budget, failed=failed, hadolint_missing=hl is None and not no_hadolint):
            typer.echo(line)
    raise typer.Exit(1 if failed else 0)
