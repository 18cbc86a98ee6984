"""Training the builds of a batch of drawn recipes on this process's GPU (study/recipes.py decides
which recipes; this trains them): every build in its child process (`Build.model_dir`), at most
`build_workers` at a time, the longest first so that the short ones fill the slots' gaps. Until
one build of this process has succeeded, builds run one at a time, the shortest first: the first
may import the shared base model (the embedded gemma), and it records the first measured peak
that `build_workers: auto` plans with."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from tournament.study.inputs import ResolvedCandidate, build_slots


def build_work(build: Any) -> float:
    """How long a build trains, roughly: epochs, times 4 for a refit (every row: gemma's refit split
    has 3.8x the honest split's rows). Only orders the builds of a batch."""
    recipe = getattr(build.candidate_obj, "recipe", None)
    return (4.0 if build.role == "refit" else 1.0) * float(getattr(recipe, "epochs", 1) or 1)


def train_recipes(candidates: dict[str, ResolvedCandidate], keys: list[str], build_workers: int | str,
                  built_once: bool, echo: Callable[[str], None]) -> tuple[dict[str, Exception], bool]:
    """Every build of the recipes `keys`. Returns ({key: the first error of its builds}, whether a
    build of this process has succeeded by now). A recipe whose build failed trains no more builds
    if they have not started; the other recipes' builds go on."""
    from tournament.train.memory import builds_at_once

    jobs = sorted(((k, b) for k in keys for b in candidates[k].builds.values()), key=lambda j: -build_work(j[1]))
    errors: dict[str, Exception] = {}

    def build(k: str, b: Any) -> None:
        try:
            b.model_dir(lambda line: echo(f"  [{candidates[k].id}/{b.role}] {line}"))
        except Exception as e:  # noqa: BLE001 - recorded for its recipe; the others go on
            errors.setdefault(k, e)

    while not built_once and jobs:  # one at a time, the shortest first, until one has built
        k, b = jobs.pop()
        if k not in errors:
            build(k, b)
            built_once = k not in errors
    jobs = [(k, b) for k, b in jobs if k not in errors]
    if jobs:
        together = max(1, min(len(jobs), build_slots(build_workers, None, None)))
        with builds_at_once(together), ThreadPoolExecutor(max_workers=together) as pool:
            list(pool.map(lambda job: build(*job) if job[0] not in errors else None, jobs))
    return errors, built_once
