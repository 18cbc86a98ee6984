"""From a candidate recipe to a servable model directory: the base model (imported, fetched or
given) and, when the recipe trains, the build (reused by config hash, else trained).

`ensure_built` trains in the caller's process. `build_in_subprocess` trains in a child
(`python -m tournament.cli train`): a process that next starts a GPU server (a sweep, a bench)
uses it, since CUDA memory that training held stays with its process and a vLLM server started
after it finds too little free.

Several processes may want one build at once (two sweep workers, one per GPU): `build_lock` lets
one train it while the others wait, then reuse it."""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from tournament.candidates import Candidate, CandidateError, load_candidate, with_dataset
from tournament.files import sha256_file
from tournament.machine import die_with_parent, library_versions
from tournament.models.tokenizer_check import MAX_SPLIT_SHARE, word_split_share
from tournament.paths import REPO_ROOT
from tournament.prompting import render_prompt
from tournament.train.examples import read_rows
from tournament.train.sft import TRAIN_LIBRARIES, _tmp_dir, train_sft, weights_hash, world

if TYPE_CHECKING:
    from tournament.tracking import Tracker


# what a build child's CUDA allocator runs with unless PYTORCH_CUDA_ALLOC_CONF is set (_train_in_child)
BUILD_ALLOC_CONF = "expandable_segments:True"

def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class BuildError(RuntimeError):
    """A build in a child process failed; the message ends with the child's last lines."""


def resolve_base(candidate: Candidate, models_dir: Path = Path("models"),
                 log: Callable[[str], None] = lambda s: None) -> Path:
    """An HF model directory for the candidate's base model, importing/fetching it as needed."""
    b = candidate.base
    if b.path:
        p = candidate.resolve_path(b.path)
        if not (p / "config.json").exists():
            raise CandidateError(f"{candidate.where()}base.path: {p} is not an HF model directory "
                                 "(no config.json)")
        return p
    if b.embedded:
        from tournament.models.embedded import ensure_gemma

        return ensure_gemma(Path(models_dir) / b.embedded, log=log)
    if b.gguf:
        from tournament.models.gguf_import import import_gguf

        src = candidate.resolve_path(b.gguf.file)
        if not src.exists():
            raise CandidateError(f"{candidate.where()}base.gguf.file: {src} does not exist")
        sha = b.gguf.sha256 or sha256_file(src)
        dest = Path(models_dir) / f"gguf-{src.stem}-{sha[:12]}"
        return import_gguf(src, dest, expected_sha256=b.gguf.sha256, log=log)
    assert b.modelscope
    from tournament.models.publish import download_model

    safe = b.modelscope.id.replace("/", "__")
    return download_model(b.modelscope.id, revision=b.modelscope.revision,
                          dest=Path(models_dir) / f"{safe}@{b.modelscope.revision}")


def ensure_built(
    candidate: Candidate,
    builds_dir: Path = Path("builds"),
    *,
    resume: bool = False,
    force: bool = False,
    max_steps: int | None = None,
    device: str = "auto",
    models_dir: Path = Path("models"),
    mlflow_uri: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """Return a servable HF model directory for `candidate`, building it when needed.

    method none (and no checkpoint quantization): the base model directory itself.
    Otherwise `builds_dir/<id>-<hash12>/model`, reused when its `candidate.json` exists and its
    tokenizer reads words whole (`_complete`; unless `force`); else trained (into `<build>.tmp`,
    renamed on success; `resume` continues from the last checkpoint there). `mlflow_uri`: log the
    training there; MLflow is opened before the base model is resolved, and `TrackingError` stops
    the build when it cannot start."""
    if not candidate.needs_build():
        return resolve_base(candidate, models_dir, log)
    build = candidate.build_dir(builds_dir, max_steps)

    def train() -> Path:
        tracker = training_tracker(mlflow_uri) if candidate.recipe.method != "none" and world()[1] else None
        base_dir = resolve_base(candidate, models_dir, log)
        return build_candidate(candidate, base_dir, build, resume=resume, max_steps=max_steps, device=device,
                               tracker=tracker, log=log)

    return _reuse_or_build(build, force, log, train)


def build_summary(candidate: Candidate, model_dir: Path, max_steps: int | None = None) -> dict:
    """What `tournament train` reports about a model directory `ensure_built` returned (its `--json`
    line, which `build_in_subprocess` reads): the build's config hash and its candidate.json numbers."""
    manifest_path = model_dir.parent / "candidate.json"
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    tr = manifest.get("train") or {}
    return {
        "id": candidate.id,
        "model_dir": str(model_dir),
        "build_dir": str(model_dir.parent) if candidate.needs_build() else None,
        "config_hash": candidate.config_hash(max_steps),
        "method": candidate.recipe.method,
        "steps": tr.get("steps"),
        "final_loss": tr.get("final_loss"),
        "train_seconds": tr.get("train_seconds"),
        "wall_seconds": manifest.get("wall_seconds"),
        "peak_memory_bytes": (tr.get("peak_memory") or {}).get("bytes"),
        "peak_memory_kind": (tr.get("peak_memory") or {}).get("kind"),
        "mlflow_run_id": manifest.get("mlflow_run_id"),
    }


def summary_table(summary: dict, candidate_id: str):
    """`build_summary` as a rich table of the values it has."""
    from rich.table import Table

    table = Table(title=f"candidate {candidate_id}", show_header=False)
    for k, v in summary.items():
        if v is not None:
            table.add_row(k, f"{v:.4f}" if isinstance(v, float) else str(v))
    return table


def _reuse_or_build(build: Path, force: bool, log: Callable[[str], None], train: Callable[[], Path]) -> Path:
    """`build/model` when the build is complete (unless `force`); else `train()` under the build's
    lock, unless another process completed the build while we waited for it."""
    if not force and _complete(build, log):
        log(f"reusing {build}")
        return build / "model"
    with build_lock(build, log):
        if not force and _complete(build, log):  # another process built it while we waited
            log(f"reusing {build}")
            return build / "model"
        return train()


# A child that `build_in_subprocess` started builds under its parent's lock: this names that build.
LOCK_HELD_ENV = "TOURNAMENT_BUILD_LOCK_HELD"


@contextmanager
def build_lock(build: Path, log: Callable[[str], None] = lambda s: None) -> Iterator[None]:
    """Hold `<build>.lock` (an exclusive lock, `filelock`) while building `build`: a second
    process that wants the same build waits here, then finds it complete. The OS drops the lock
    when its holder dies, so a killed build never blocks the next one."""
    from filelock import FileLock, Timeout

    build = Path(build)
    if os.environ.get(LOCK_HELD_ENV) == str(build.resolve()) or not world()[1]:
        yield  # held by our parent, or by the main process of our `accelerate launch`
        return
    build.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(build.with_name(build.name + ".lock")))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        log(f"waiting: another process is building {build.name}")
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def is_built(candidate: Candidate, builds_dir: Path = Path("builds")) -> bool:
    """Is the build of `candidate` complete on disk (so `ensure_built` would reuse it)? True for a
    candidate that needs no build."""
    return not candidate.needs_build() or _complete(candidate.build_dir(builds_dir))


def _complete(build: Path, log: Callable[[str], None] = lambda s: None) -> bool:
    """A finished build, unless its tokenizer cuts words its vocabulary holds whole: a build
    trained on a GGUF import that an older transformers rebuilt wrong (`tokenizer_check.py`) has
    the same config hash as a sound one, so it would be reused, trained on text cut unlike its
    pretraining. Such a build is trained again, from a base imported again."""
    if not ((build / "candidate.json").exists() and (build / "model" / "config.json").exists()):
        return False
    share = _build_split_share(build)
    if share is not None and share > MAX_SPLIT_SHARE:
        log(f"not reusing {build}: its tokenizer splits {share:.0%} of the whole words of its own "
            "vocabulary (a broken GGUF rebuild?); training it again")
        return False
    return True


def _build_split_share(build: Path) -> float | None:
    """candidate.json's `tokenizer_word_split_share`, else (a build made before training recorded
    it) measured on the build's tokenizer. None: no tokenizer, too small a vocabulary to judge, or
    files that cannot be read (reused as before this check; serving them says what is wrong).
    Nothing is written: a reader must not race a rebuild of the same folder."""
    try:
        manifest = json.loads((build / "candidate.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(manifest, dict) and "tokenizer_word_split_share" in manifest:
        share = manifest["tokenizer_word_split_share"]
        return float(share) if isinstance(share, (int, float)) else None
    model = build / "model"
    if not any((model / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
        return None
    try:
        from transformers import AutoTokenizer

        return word_split_share(AutoTokenizer.from_pretrained(str(model)))[0]
    except Exception:  # noqa: BLE001 - any unreadable tokenizer (OSError, ValueError, KeyError ...)
        return None


def training_tracker(mlflow_uri: str | None) -> "Tracker | None":
    """The tracker a training build logs to (None: untracked). Raises `TrackingError` when MLflow
    cannot open `mlflow_uri`."""
    if not mlflow_uri:
        return None
    from tournament.tracking import Tracker

    return Tracker(uri=mlflow_uri, experiment="train", required=True)


def build_candidate(
    candidate: Candidate,
    base_dir: Path,
    build: Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    device: str = "auto",
    tracker: "Tracker | None" = None,
    callbacks: list | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """Train (and quantize) into `<build>.tmp`, then rename it to `build`; return `build/model`.
    `tracker`: where the training run logs (`training_tracker`); None: untracked. `callbacks`:
    more transformers `TrainerCallback`s. Under `accelerate launch` every process trains; the
    main one alone prepares, saves and renames the folder."""
    build = Path(build)
    tmp = _tmp_dir(build)
    _, main = world()
    if main and tmp.exists() and not resume:
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    if candidate.recipe.method != "none":
        train_sft(candidate, base_dir, tmp, resume=resume, max_steps=max_steps, device=device,
                  tracker=tracker, callbacks=callbacks, log=log)
        if not main:
            return build / "model"
    else:
        _write_base_manifest(candidate, base_dir, tmp)
    if candidate.quantization.needs_checkpoint:
        from tournament.train.quantize import quantize_model

        src = tmp / "model" if (tmp / "model").exists() else base_dir
        qdir = tmp / "model.quant"
        quantize_model(src, qdir, candidate.quantization.method, scheme=candidate.quantization.scheme,
                       calibration=_calibration_texts(candidate, base_dir), log=log)
        shutil.rmtree(tmp / "model", ignore_errors=True)
        qdir.rename(tmp / "model")
        doc = json.loads((tmp / "candidate.json").read_text(encoding="utf-8"))
        doc["quantization"] = candidate.quantization.model_dump(mode="json")
        (tmp / "candidate.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if build.exists():
        shutil.rmtree(build)
    tmp.rename(build)
    log(f"built {build}")
    return build / "model"


def _write_base_manifest(candidate: Candidate, base_dir: Path, out: Path) -> None:
    doc = {"schema": 1, "id": candidate.id, "config_hash": candidate.config_hash(),
           "candidate": candidate.model_dump(mode="json"),
           "base": {"source": candidate.base.describe(), "dir": str(base_dir), "sha256": weights_hash(base_dir)},
           "versions": library_versions(TRAIN_LIBRARIES), "train": None, "pid": os.getpid(),
           "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    (out / "candidate.json").write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _calibration_texts(candidate: Candidate, base_dir: Path, n: int = 256) -> list[str] | None:
    """Prompt + answer texts for W4A16 calibration (the serving template, from the dataset)."""
    f = candidate.dataset_file()
    if f is None or not f.exists():
        return None
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(base_dir))
    return [render_prompt(candidate.prompt, q, tok) + a for q, a in read_rows(f)[:n]]


# -- the build in a child process ------------------------------------------------------------------
def build_in_subprocess(
    candidate: Candidate | str | Path,
    builds_dir: Path = Path("builds"),
    *,
    resume: bool = False,
    force: bool = False,
    max_steps: int | None = None,
    device: str = "auto",
    models_dir: Path = Path("models"),
    mlflow_uri: str | None = None,
    gpu: str | None = None,
    log: Callable[[str], None] = _stderr,
) -> Path:
    """`ensure_built`, with any training in a child process (`python -m tournament.cli train`),
    so this process never holds CUDA memory for a build. A reused build and an untrained
    candidate need no child. The child's output reaches `log` line by line. The child builds the
    same config hash as `candidate.config_hash(max_steps)` (checked: `BuildError` otherwise).
    `gpu`: the child sees only that GPU (CUDA_VISIBLE_DEVICES).
    MLflow: `mlflow_uri`; else $MLFLOW_TRACKING_URI when set; else untracked (`--no-track`)."""
    if not isinstance(candidate, Candidate):
        candidate = load_candidate(candidate)
    if not candidate.needs_build():
        return resolve_base(candidate, models_dir, log)
    build = candidate.build_dir(builds_dir, max_steps)
    return _reuse_or_build(build, force, log, lambda: _train_in_child(
        candidate, build, builds_dir, resume=resume, force=force, max_steps=max_steps, device=device,
        models_dir=models_dir, mlflow_uri=mlflow_uri, gpu=gpu, log=log))


def _train_in_child(candidate: Candidate, build: Path, builds_dir: Path, *, resume: bool, force: bool,
                    max_steps: int | None, device: str, models_dir: Path, mlflow_uri: str | None,
                    gpu: str | None, log: Callable[[str], None]) -> Path:
    want = candidate.config_hash(max_steps)
    with _candidate_args(candidate, want, max_steps) as args:
        cmd = [sys.executable, "-m", "tournament.cli", "train", *args, "--builds", str(Path(builds_dir).resolve()),
               "--models-dir", str(Path(models_dir).resolve()), "--device", device, "--json"]
        cmd += ["--max-steps", str(max_steps)] if max_steps is not None else []
        cmd += ["--resume"] if resume else []
        cmd += ["--force"] if force else []
        if mlflow_uri:
            cmd += ["--mlflow-uri", mlflow_uri]
        elif not os.environ.get("MLFLOW_TRACKING_URI"):
            cmd += ["--no-track"]
        log(f"building {candidate.id} in a child process" + (f" on GPU {gpu}" if gpu is not None else ""))
        env = {LOCK_HELD_ENV: str(build.resolve())}
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        # Batches of every length fragment the CUDA caching allocator: a full SFT of gemma-3-270m
        # reserved 67.7 GiB for a 26.5 GiB peak on an H100, and reserved memory is what stops a
        # second build beside it. Growable segments keep reserved near allocated (unless set).
        env["PYTORCH_CUDA_ALLOC_CONF"] = os.environ.get("PYTORCH_CUDA_ALLOC_CONF", BUILD_ALLOC_CONF)
        summary = _run_child(cmd, candidate.id, log, env)
    got = Path(str(summary.get("build_dir"))).resolve()
    if summary.get("config_hash") != want or got != build.resolve():
        raise BuildError(f"the child built {got} (config hash {summary.get('config_hash')}), expected "
                         f"{build.resolve()} ({want})")
    return build / "model"


@contextmanager
def _candidate_args(candidate: Candidate, want: str, max_steps: int | None) -> Iterator[list[str]]:
    """How the child gets exactly this candidate: its file; its file + --dataset (an override);
    else a temporary YAML of it beside its file (so relative paths resolve alike), named like the
    project's other temp files (`.<id>.tmp-*.yaml`: git ignores it, so no `git status` or tree sync
    of the user's folder sees it; a sync that removes what git does not know removed it mid-build
    on the GPU machine, and the finished build was then counted as failed)."""
    src = candidate.source
    if src is not None and src.exists():
        plain = load_candidate(src)
        if plain.id == candidate.id and plain.config_hash(max_steps) == want:
            yield [str(src)]
            return
        ds = candidate.resolve_path(candidate.recipe.dataset) if candidate.recipe.dataset else None
        if ds is not None and ds.exists() and plain.recipe.method != "none":
            alt = with_dataset(plain, ds)
            if alt.id == candidate.id and alt.config_hash(max_steps) == want:
                yield [str(src), "--dataset", str(ds.resolve())]
                return
    import yaml

    fd, name = tempfile.mkstemp(prefix=f".{candidate.id}.tmp-", suffix=".yaml", dir=src.parent if src else None)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            yaml.safe_dump(candidate.model_dump(mode="json"), f, allow_unicode=True)
        yield [name]
    finally:
        Path(name).unlink(missing_ok=True)  # the child has read it; gone already is no failure of the build


def _run_child(cmd: list[str], cid: str, log: Callable[[str], None], extra_env: dict[str, str]) -> dict:
    """Run `tournament train ... --json`; its stderr (progress) and any stray stdout go to `log`,
    each line led by the seconds since the child started (where a build's wall time goes: imports,
    loading, tokenizing, training, saving, with others beside it); return the JSON summary
    (stdout's last line)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="1000", **extra_env)  # rich wraps at 80 columns in a pipe
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, errors="replace",
                            bufsize=1, env=env,
                            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
    tail: collections.deque[str] = collections.deque(maxlen=20)
    t0 = time.monotonic()

    def stamped(line: str) -> str:
        return f"{time.monotonic() - t0:5.0f} s  {line}"

    def pump() -> None:
        for line in proc.stderr:  # text mode: a progress bar's "\r" ends a line too
            if line.strip():
                tail.append(line.rstrip("\n"))
                log(stamped(line.rstrip("\n")))

    t = threading.Thread(target=pump, name=f"build-{cid}", daemon=True)
    t.start()
    last = ""
    try:
        for line in proc.stdout:
            line = line.rstrip("\n")
            if line.startswith("{"):
                last = line
            elif line:
                log(stamped(line))
        rc = proc.wait()
    finally:
        if proc.poll() is None:  # interrupted: the child must not train on unseen
            proc.kill()
            proc.wait()
        t.join(timeout=10)
    if rc != 0:
        raise BuildError(f"building {cid} failed in its child process (exit {rc}):\n" + "\n".join(tail))
    log(stamped("child process done"))
    try:
        return json.loads(last)
    except ValueError:
        raise BuildError(f"building {cid}: the child printed no JSON summary") from None
