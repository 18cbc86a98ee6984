"""The sweep's inputs: its candidates, resolved to servable model directories (trained, fetched
or given), and its eval questions (built from the split the sweep file names when missing)."""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from tournament.files import json_hash
from tournament.study.config import EMBEDDED_PREFIX, InlineCandidate, SweepConfig

log = logging.getLogger(__name__)


def _progress(message: str) -> None:
    """Fetching, importing or training a candidate takes minutes: say what is happening."""
    print(f"  {message}", file=sys.stderr, flush=True)


@dataclass
class Build:
    """One servable build of a candidate: ``refit`` (trained on every row: the build you submit),
    ``honest`` (the same recipe without the eval questions' variant groups) or ``base`` (a model
    that is not trained here: measured as its own single build)."""

    role: str
    config_hash: str
    candidate_obj: Any = None  # tournament.candidates.Candidate to build; None: a given model
    model_path: str | None = None
    _dir: Path | None = None
    _error: str | None = None  # a build that failed once is not trained again in this sweep

    @property
    def built_dir(self) -> Path | None:
        """Where the weights are, once `model_dir` has put them there (None before: nothing is built)."""
        return self._dir

    def model_dir(self, log: Callable[[str], None] = _progress, gpu: str | None = None) -> Path:
        """Where the weights are now (building/fetching them when needed; `gpu`: the one GPU a
        training child may use)."""
        if self._dir is not None:
            return self._dir
        if self._error is not None:
            raise RuntimeError(f"build failed before: {self._error}")
        if self.candidate_obj is not None:
            # training runs in a child process: CUDA memory it held would starve the vLLM server next
            from tournament.train.build import build_in_subprocess

            self._dir = Path(build_in_subprocess(self.candidate_obj, gpu=gpu, log=log))
        elif self.model_path and self.model_path.startswith(EMBEDDED_PREFIX):
            from tournament.models.embedded import ensure_gemma

            self._dir = Path(ensure_gemma(log=_progress))
        else:
            p = Path(self.model_path or "")
            if not p.exists():
                raise FileNotFoundError(f"model path {p} does not exist")
            self._dir = p
        return self._dir


@dataclass
class ResolvedCandidate:
    id: str
    prompt: dict[str, Any]
    engine: dict[str, Any]
    info: dict[str, Any]  # what winner.json's "candidate" holds
    builds: dict[str, Build]  # {"refit", "honest"} for a trained recipe, else {"base"} (or {"honest"})
    decode: dict[str, Any] = field(default_factory=dict)  # the candidate's decode defaults
    gguf_file: str | None = None
    modelscope_id: str | None = None
    revision: str | None = None
    candidate_obj: Any = None  # the tournament.candidates.Candidate of a YAML candidate (a recipe template)

    @property
    def ship(self) -> Build:
        """The build winner.json would serve: speed, health and seen accuracy are measured on it."""
        return self.builds.get("refit") or self.builds.get("base") or self.builds["honest"]

    @property
    def unseen(self) -> Build | None:
        """The honest build of a trained recipe measured beside the refit; None for one build."""
        return self.builds.get("honest") if "refit" in self.builds else None

    @property
    def config_hash(self) -> str:
        return self.ship.config_hash


def builds_ready(candidates: dict[str, "ResolvedCandidate"]) -> tuple[int, int]:
    """(builds whose weights are in place, all builds) of the sweep's candidates: the progress bar's."""
    builds = [b for c in candidates.values() for b in c.builds.values()]
    return sum(b._dir is not None for b in builds), len(builds)


def build_slots(setting: int | str, ids: list[str] | None, gpu: str | None, keys: list[str] | None = None) -> int:
    """How many builds train side by side on one GPU: the sweep file's `build_workers`, or for
    `auto` what the measured peak memory of earlier builds (these candidate ids; None: any; of
    these memory keys: train/memory.memory_key) and the GPU's free memory allow now
    (train/memory.py: 1 when nothing is measured or no GPU)."""
    if setting != "auto":
        return max(1, int(setting))
    from tournament.train.memory import plan_build_workers

    n, why = plan_build_workers(Path("builds"), ids, gpu or 0, keys=keys)
    log.info("build_workers auto on GPU %s: %s", gpu or 0, why)
    return n


def prebuild(candidates: dict[str, "ResolvedCandidate"], workers: int | str, echo: Callable[[str], None] = _progress,
             gpus: list[str] | None = None) -> dict[str, str]:
    """Build every trained build before the first trial, `workers` child processes at a time (on
    each of `gpus` when given: a build takes a free slot of a GPU and its child sees only that
    GPU; `auto`: as many as fit, see `build_slots`, decided after the first build). The first
    build runs alone: it may import the shared base model, and with `auto` it measures the peak
    memory the plan reads. A build that ran out of GPU memory beside others trains once more
    alone. Returns {build: error} for builds that failed; their trials fail with that reason,
    without training again; the others go on."""
    import queue
    from concurrent.futures import ThreadPoolExecutor

    todo = [(c.id, b) for c in candidates.values() for b in c.builds.values() if b.candidate_obj is not None]
    failed: dict[str, str] = {}
    ran_on: dict[str, str | None] = {}  # build -> the GPU it trained on
    width = {gpu: 1 if workers == "auto" else max(1, int(workers)) for gpu in gpus or [None]}  # slots per GPU
    slots: queue.Queue[str | None] = queue.Queue()
    for gpu, n in width.items():
        for _ in range(n):
            slots.put(gpu)

    def one(item):
        cid, b = item
        name = f"{cid}/{b.role}"
        gpu = ran_on[name] = slots.get()  # never more than `workers` builds on one GPU, whichever finishes first
        try:
            b.model_dir(log=lambda line: echo(f"[{name}] {line}"), gpu=gpu)
        except Exception as e:  # the trial that needs it reports it; the other builds go on
            failed[name] = b._error = f"{type(e).__name__}: {e}"
        finally:
            slots.put(gpu)

    if todo:
        one(todo[0])
        if workers == "auto":
            ids = sorted({cid for cid, _ in todo})
            for gpu in gpus or [None]:
                n = width[gpu] = build_slots("auto", ids, gpu)
                echo(f"build_workers auto: {n} at a time on GPU {gpu or 0} (measured peak memory vs free memory)")
                for _ in range(n - 1):
                    slots.put(gpu)
        from tournament.train.memory import builds_at_once, out_of_memory

        with builds_at_once(min(max(width.values()), len(todo) - 1)), ThreadPoolExecutor(max_workers=slots.qsize()) as pool:
            list(pool.map(one, todo[1:]))
        for cid, b in todo[1:]:
            # out of GPU memory beside others: the plan's peaks were too small for it (peaks of
            # other rows, say), not the build's fault; once more, alone on its GPU
            name = f"{cid}/{b.role}"
            if name in failed and out_of_memory(failed[name]) and min(width[ran_on[name]], len(todo) - 1) > 1:
                echo(f"[{name}] ran out of GPU memory beside other builds: trains again alone")
                del failed[name]
                b._error = None
                one((cid, b))
    return failed


def ensure_data_build(path: Path, split: str | None, cfg: SweepConfig, what: str, hint: str) -> Path:
    """`path` (a file of a data build), built from the split definition `split` when missing."""
    if not path.exists() and split:
        from tournament.data.split import build_split_from_spec

        log.info("%s %s missing: building split %s", what, path, split)
        _progress(f"building the {what} {path} ({split})")
        build_split_from_spec(cfg.resolve_path(split))
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found" + ("" if split else f" ({hint})"))
    return path


def _refit_dataset(cfg: SweepConfig) -> Path:
    return ensure_data_build(cfg.resolve_path(cfg.refit.dataset), cfg.refit.split, cfg, "refit dataset",
                             "set refit.split, or refit.enabled: false")


def _yaml_candidate(cfg: SweepConfig, entry: str) -> ResolvedCandidate:
    from tournament.candidates import load_candidate

    return resolve_candidate(cfg, load_candidate(cfg.resolve_path(entry)), str(entry))


def resolve_candidate(cfg: SweepConfig, c, entry: str, key: str | None = None) -> ResolvedCandidate:
    """A candidate (tournament.candidates.Candidate) with its builds: refit + honest for a trained
    recipe (honest alone with refit disabled), else its base. `key`: the id the sweep knows it by."""
    from tournament.candidates import with_dataset

    hints = c.serve_overrides("unused")
    publish, base = c.publish, c.base
    ms = base.modelscope
    # A trained candidate is fetched from where it was published; an untrained one is its base.
    ms_id = publish.modelscope_id if publish else (ms.id if ms and not c.needs_build() else None)
    rev = (getattr(publish, "revision", None) if publish else None) or (ms.revision if ms and not publish else None)
    trained = c.recipe.method != "none"
    if not trained:
        builds = {"base": Build("base", c.config_hash(), c)}
    elif cfg.refit.enabled:
        refit = with_dataset(c, _refit_dataset(cfg))
        builds = {"refit": Build("refit", refit.config_hash(), refit), "honest": Build("honest", c.config_hash(), c)}
    else:
        builds = {"honest": Build("honest", c.config_hash(), c)}
    ship = builds.get("refit") or builds.get("base") or builds["honest"]
    info = {"id": c.id, "build": ship.role, "config_hash": ship.config_hash, "source": str(entry),
            "base": base.describe(), "recipe": ship.candidate_obj.recipe.model_dump(mode="json"),
            "quantization": c.quantization.model_dump(mode="json"), "modelscope_id": ms_id, "revision": rev}
    if "honest" in builds and ship.role != "honest":
        info["honest_config_hash"] = builds["honest"].config_hash
    return ResolvedCandidate(id=key or c.id, prompt=c.prompt.model_dump(), engine=dict(hints.get("engine") or {}),
                             decode=dict(hints.get("decode") or {}), info=info, builds=builds,
                             modelscope_id=ms_id, revision=rev, candidate_obj=c)


def resolve_candidates(cfg: SweepConfig) -> dict[str, ResolvedCandidate]:
    out: dict[str, ResolvedCandidate] = {}
    for entry in cfg.candidates:
        if isinstance(entry, InlineCandidate):
            chash = json_hash({"model_path": entry.model_path, "gguf": entry.gguf_file,
                               "prompt": entry.prompt.model_dump(), "engine": entry.engine})
            rc = ResolvedCandidate(
                id=entry.id, prompt=entry.prompt.model_dump(), engine=dict(entry.engine), decode=dict(entry.decode),
                info={"id": entry.id, "build": "base", "config_hash": chash, "base": entry.base or entry.model_path,
                      "recipe": entry.recipe, "modelscope_id": entry.modelscope_id, "revision": entry.revision},
                builds={"base": Build("base", chash, model_path=entry.model_path)},
                gguf_file=entry.gguf_file, modelscope_id=entry.modelscope_id, revision=entry.revision,
            )
        else:
            rc = _yaml_candidate(cfg, entry)
        if rc.id in out:
            raise ValueError(f"two candidates share the id {rc.id!r}")
        out[rc.id] = rc
    return out


# -- eval questions -------------------------------------------------------------------------------
@dataclass
class EvalSet:
    questions: list[str]
    references: list[str]
    path: str
    hash: str
    sets: list[str | None] = field(default_factory=list)


def load_eval(cfg: SweepConfig) -> EvalSet:
    """The sweep's eval questions; a missing eval file is built from the split the sweep names."""
    from tournament.data.ingest import load_qa_rows

    spec = cfg.eval
    path = ensure_data_build(cfg.resolve_path(spec.path), spec.split, cfg, "eval file", "give eval.split to build it")
    try:
        rows = load_qa_rows(path, set_name=spec.set, offset=spec.offset, limit=spec.limit)
    except ValueError:
        rows = []
    if not rows:
        raise ValueError(f"no eval questions left in {path} after set={spec.set} offset={spec.offset} limit={spec.limit}")
    from tournament.judge.rules import set_from_name

    qs, refs = [r.question for r in rows], [r.answer for r in rows]
    sets = [(r.meta or {}).get("set") or set_from_name(r.source or path) for r in rows]
    return EvalSet(qs, refs, str(path), json_hash([qs, refs]), sets)


def load_speed_pool(cfg: SweepConfig) -> tuple[list[tuple[str, str]], str | None]:
    """(question, answer) rows of the speed pool and its path; empty when the sweep has none."""
    from tournament.data.ingest import load_qa_rows

    if cfg.speed.pool:
        path = cfg.resolve_path(cfg.speed.pool)
        if not path.exists():
            raise FileNotFoundError(f"speed.pool {path} not found")
    else:
        path = cfg.resolve_path(cfg.refit.dataset) / "speed_pool.jsonl"
        if not (cfg.refit.enabled and path.exists()):
            return [], None
    return [(r.question, r.answer) for r in load_qa_rows(path)], str(path)


def speed_post(cfg: SweepConfig, judged: str, size: int | None = None):
    """The speed POST a sweep times for the judge set `judged`, built as measure.py builds it (the
    set's eval samples plus the speed pool, seeded): a SpeedWorkload. `size` defaults to the sweep's
    for its own set, else the judge's count of that set. The eval file and the refit split are
    built when missing."""
    import dataclasses

    from tournament.judge.rules import QUESTIONS, judge_set
    from tournament.study.measure import set_indices

    judged = judge_set(judged)
    ev = load_eval(cfg)
    if cfg.speed.pool is None and cfg.refit.enabled:
        _refit_dataset(cfg)  # builds the refit split, and with it its speed pool
    plan, _ = speed_plan(cfg)
    if plan is None:
        raise FileNotFoundError("this sweep has no speed pool: set speed.pool, or build the refit split with a "
                                "speed_pool (data/splits/pmpp-refit.yaml)")
    if size is None and judged != cfg.judge.set:
        size = QUESTIONS[judged]
    if size is not None:
        plan = dataclasses.replace(plan, size=size)
    rows = set_indices(ev.sets, [judged], cfg.judge.set)[judged]
    return plan.workload([ev.questions[i] for i in rows], [ev.references[i] for i in rows])


def speed_plan(cfg: SweepConfig):
    """(how the track's speed POST is built, the pool's path); (None, None) without a speed pool:
    the POST is then the set's eval questions alone."""
    from tournament.study.workload import SpeedPlan

    pool, path = load_speed_pool(cfg)
    if not pool:
        return None, None
    return SpeedPlan(pool, cfg.speed.questions or cfg.judge.questions, cfg.speed.seed, cfg.speed.cycled), path
