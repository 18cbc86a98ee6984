"""From a candidate recipe to a servable model directory: the base model (imported, fetched or
given) and, when the recipe trains, the build (reused by config hash, else trained)."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from tournament.candidates import Candidate, CandidateError
from tournament.files import sha256_file
from tournament.machine import library_versions
from tournament.prompting import render_prompt
from tournament.train.examples import read_rows
from tournament.train.sft import TRAIN_LIBRARIES, _tmp_dir, train_sft, weights_hash


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
    Otherwise `builds_dir/<id>-<hash12>/model`, reused when its `candidate.json` exists (unless
    `force`); else trained (into `<build>.tmp`, renamed on success; `resume` continues from the
    last checkpoint there)."""
    if not candidate.needs_build():
        return resolve_base(candidate, models_dir, log)
    build = candidate.build_dir(builds_dir, max_steps)
    if not force and (build / "candidate.json").exists() and (build / "model" / "config.json").exists():
        log(f"reusing {build}")
        return build / "model"
    base_dir = resolve_base(candidate, models_dir, log)
    return build_candidate(candidate, base_dir, build, resume=resume, max_steps=max_steps, device=device,
                           mlflow_uri=mlflow_uri, log=log)


def build_candidate(
    candidate: Candidate,
    base_dir: Path,
    build: Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    device: str = "auto",
    mlflow_uri: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """Train (and quantize) into `<build>.tmp`, then rename it to `build`; return `build/model`."""
    build = Path(build)
    tmp = _tmp_dir(build)
    if tmp.exists() and not resume:
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True, exist_ok=True)
    if candidate.recipe.method != "none":
        train_sft(candidate, base_dir, tmp, resume=resume, max_steps=max_steps, device=device,
                  mlflow_uri=mlflow_uri, log=log)
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
           "versions": library_versions(TRAIN_LIBRARIES), "train": None,
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
