"""Training the builds of a batch of drawn recipes on this process's GPU (study/recipes.py decides
which recipes; this trains them): every build in its child process (`Build.model_dir`), at most
`build_workers` at a time, the longest first so that the short ones fill the slots' gaps. Until
one build of this process has succeeded, builds run one at a time, the shortest first: the first
may import the shared base model (the embedded gemma). With `build_workers: auto` on a GPU, each
memory key of the batch (train/memory.memory_key: base, method, batch, length) that no earlier
build has measured first trains its shortest build, a probe (side by side with the other kinds'
probes, each on 1/N of the card; alone where one probe is needed or a side-by-side one measured
nothing), so that the plan reads the peaks of the builds it plans for: a full SFT of gemma at
batch 32 reserved 1.5-1.6x a batch-16 one on an H100 (13.8 / 9.0 GiB with Liger's layer kernels,
16.5 / 10.2 without), and planned with the smaller peak the side-by-side builds would each find
too little memory and turn Liger's slow fused loss on. A recipe whose build ran out of GPU memory
beside others trains again in a narrower round (planned with the peaks measured since), alone at
last: a plan's peaks may come from shorter rows than the build's."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from tournament.study.inputs import ResolvedCandidate, build_slots


# Probes side by side at most: on an 80 GB H100 a third of the card holds the batch-32 estimate of
# gemma-3-270m (~21 GiB) with its headroom, a quarter (19.8 GiB) does not (its probe would turn the
# fused loss on and measure nothing).
PROBES_AT_ONCE = 3


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
    from pathlib import Path

    from tournament.train.memory import (builds_at_once, covering_keys, first_visible_gpu, free_gpu_bytes,
                                         measured_peaks, memory_key, out_of_memory)

    jobs = sorted(((k, b) for k in keys for b in candidates[k].builds.values()), key=lambda j: -build_work(j[1]))
    errors: dict[str, Exception] = {}

    def build(k: str, b: Any) -> None:
        try:
            b.model_dir(lambda line: echo(f"  [{candidates[k].id}/{b.role}] {line}"))
        except Exception as e:  # noqa: BLE001 - recorded for its recipe; the others go on
            errors.setdefault(k, e)

    def alone(pick: Callable[[tuple[str, Any]], bool], why: str = "") -> bool:
        """Train the shortest job `pick` accepts, alone; True when it built."""
        k, b = next(j for j in reversed(jobs) if pick(j))
        jobs.remove((k, b))
        if why:
            echo(f"  [{candidates[k].id}/{b.role}] {why}")
        build(k, b)
        return k not in errors

    while not built_once and any(k not in errors for k, _ in jobs):  # one at a time until one has built
        built_once = alone(lambda j: j[0] not in errors)
    mkeys = {id(b): memory_key(b.candidate_obj.model_dump(mode="json")) for _, b in jobs if b.candidate_obj is not None}
    if build_workers == "auto" and free_gpu_bytes(first_visible_gpu()) is not None:
        kinds_in_order = sorted(dict.fromkeys(mkeys.values()), key=lambda mk: json.loads(mk)[1] == "lora")
        probes: list[tuple[str, Any]] = []
        for mk in kinds_in_order:  # full fine-tunes first: a full probe's peak covers its kind's LoRA builds
            if measured_peaks(Path("builds"), keys=covering_keys(mk)) or any(
                    c in covering_keys(mk) for c in (mkeys[id(b)] for _, b in probes)):
                continue
            job = next((j for j in reversed(jobs) if j[0] not in errors and mkeys.get(id(j[1])) == mk), None)
            if job is not None:
                probes.append(job)
                jobs.remove(job)
        for i in range(0, len(probes), PROBES_AT_ONCE):
            # Side by side, each with 1/N of the card: no peak is measured yet, so each child weighs
            # the estimate from its shapes (1.2-1.5x what gemma's builds measured on an H100) against
            # its share, and one that does not fit turns the fused loss on and measures nothing (its
            # kind is probed alone below). Three probes alone took 186 s there (2026-12-08).
            batch = probes[i:i + PROBES_AT_ONCE]
            if len(batch) == 1:
                jobs.extend(batch)  # a probe on its own trains alone, below
                continue
            for k, b in batch:
                echo(f"  [{candidates[k].id}/{b.role}] trains first, beside {len(batch) - 1} other probe(s): no build "
                     "of its kind (base, method, batch, length, answer target) has measured its peak memory, which "
                     "the builds beside each other are planned with")
            with builds_at_once(len(batch)), ThreadPoolExecutor(max_workers=len(batch)) as pool:
                list(pool.map(lambda job: build(*job), batch))
            for k, b in batch:  # a failure beside the others (their memory?) is not yet the recipe's: once alone
                if k in errors:
                    echo(f"  [{candidates[k].id}/{b.role}] failed beside the other probes "
                         f"({type(errors.pop(k)).__name__}): trains alone")
                    jobs.append((k, b))
        # a probe for each kind of build no earlier build covers yet, alone
        for mk in kinds_in_order:
            # until one of its kind has measured it (a probe that failed: the next of its kind)
            while not measured_peaks(Path("builds"), keys=covering_keys(mk)) and any(
                    k not in errors and mkeys.get(id(b)) == mk for k, b in jobs):
                if alone(lambda j: j[0] not in errors and mkeys.get(id(j[1])) == mk,
                         "trains alone first: no build of its kind (base, method, batch, length, answer target) "
                         "has measured its peak memory, which the builds beside each other are planned with"):
                    break  # built: measured now, or it recorded no usable peak (then no more probes of it)
    jobs = [(k, b) for k, b in jobs if k not in errors]
    wider = len(jobs) + 1  # the last round's width: a round of retries runs fewer at a time
    while jobs:
        kinds = sorted({c for _, b in jobs if id(b) in mkeys for c in covering_keys(mkeys[id(b)])}) or None
        together = max(1, min(len(jobs), wider - 1, build_slots(build_workers, None, None, kinds)))
        failed_before = set(errors)
        with builds_at_once(together), ThreadPoolExecutor(max_workers=together) as pool:
            list(pool.map(lambda job: build(*job) if job[0] not in errors else None, jobs))
        # A build out of memory beside others ran on a plan too small for it: the plan's peaks may
        # come from other rows (a batch pads to its longest row: a batch-32 full SFT of gemma
        # reserved 13.8 GiB on the honest split, 17.9 on the refit split), so 8 slots of an H200
        # planned at 13.8 would not hold 8 refits. Its recipe trains again, planned with the peaks
        # measured since, fewer at a time, alone at last; alone, a failure is the recipe's.
        short = [k for k in errors if k not in failed_before and out_of_memory(errors[k])] if together > 1 else []
        for k in short:
            echo(f"  [{candidates[k].id}] ran out of GPU memory in a round of {together} builds at once: "
                 "trains again with fewer beside it")
            errors.pop(k)
        # its builds not built yet (a sibling that finished is kept): the next round's width counts only these
        jobs = sorted(((k, b) for k in short for b in candidates[k].builds.values()
                       if b.candidate_obj is not None and b.built_dir is None), key=lambda j: -build_work(j[1]))
        wider = together
    return errors, built_once
