"""GGUF file -> plain HF model directory (bf16 safetensors + tokenizer).

transformers dequantizes a GGUF on load (`from_pretrained(dir, gguf_file=name)`), but refuses to
save a model that still carries its GGUF quantizer ("not serializable"); dropping
`model.hf_quantizer` and `config.quantization_config` first gives a plain directory that vLLM and
the transformers engine load like any other.

transformers opens the file three times (tokenizer, config, weights), each with a new
`gguf.GGUFReader`, which parses every metadata field in Python: gemma-3's 262k-token vocabulary
takes ~10 s a parse on the project's 2-core machine, most of the import. `one_reader_per_file`
lets the three share one parse.

The import is atomic (written to `<out>.part`, renamed when complete) and cached: `import.json`
records the source sha256; an existing complete import of the same file is reused.

The tokenizer is rebuilt from the file by transformers, and some releases rebuild it wrong (5.17
cuts gemma-3's English words into pieces: `tokenizer_check.py`). Every import checks it and refuses
a tokenizer that splits its own vocabulary's words, naming the fix: a transformers release that
rebuilds it right, or tokenizer files from such a rebuild (``tokenizer_dir``, or
``$TOURNAMENT_GGUF_TOKENIZER``; `tournament models export-tokenizer` writes them), which must hold
exactly the file's vocabulary. ``import.json`` records the share of split words; an import without
that record (made before the check) is not reused.
"""

from __future__ import annotations

import json
import shutil
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from tournament.files import sha256_file

ENV_TOKENIZER = "TOURNAMENT_GGUF_TOKENIZER"
CHECKED = "tokenizer_word_split_share"  # import.json's record of the tokenizer check
# `one_reader_per_file` swaps a module attribute: imports on threads of one process (a sweep's
# build pool) take turns, so one's end never restores the attribute under another's feet
_READER_SWAP = threading.Lock()


class GGUFImportError(RuntimeError):
    pass


def _needs_gguf(e: ImportError) -> GGUFImportError:
    """The error for an ImportError while reading a GGUF: the `gguf` package missing (say how to
    get it), or another import failing with `gguf` installed (say that, not "install gguf": a
    lazy-import race inside transformers was once reported as a missing package)."""
    import importlib.util

    if e.name == "gguf" or importlib.util.find_spec("gguf") is None:
        return GGUFImportError(f"reading GGUF needs the `gguf` package (pip install gguf): {e}")
    return GGUFImportError(f"reading GGUF failed on an import of {e.name or 'a module'} (the `gguf` package is "
                           f"installed; a broken or mismatched transformers install?): {e}")


def _dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "bf16": torch.bfloat16, "float16": torch.float16,
            "float32": torch.float32, "fp32": torch.float32}[name]


def is_imported(out_dir: Path, sha256: str | None = None) -> bool:
    meta = Path(out_dir) / "import.json"
    if not meta.exists() or not (Path(out_dir) / "config.json").exists():
        return False
    if not any(Path(out_dir).glob("*.safetensors")):
        return False
    try:
        doc = json.loads(meta.read_text())
    except ValueError:
        return False
    if CHECKED not in doc:  # imported before the tokenizer check: maybe with a broken tokenizer
        return False
    return sha256 is None or doc.get("source_sha256") == sha256


@contextmanager
def one_reader_per_file() -> Iterator[None]:
    """Within the block, `gguf.GGUFReader(path)` returns one reader per file: transformers builds a
    new one (a full parse of the metadata) for the tokenizer, the config and the weights, and only
    reads from it (its tensors are a read-only memory map)."""
    import gguf

    with _READER_SWAP:
        original = gguf.GGUFReader
        readers: dict[tuple[str, str], object] = {}

        def shared_reader(path, mode="r"):
            key = (str(Path(path).resolve()), mode)
            if key not in readers:
                readers[key] = original(path, mode)
            return readers[key]

        gguf.GGUFReader = shared_reader  # transformers imports it from the module at each call
        try:
            yield
        finally:
            gguf.GGUFReader = original


def vocabulary_differences(a, b) -> int:
    """How many token ids the two tokenizers spell differently (or only one has). Releases spell a
    few pieces of one GGUF differently (5.17 files gemma's "<0x09>" as a tab), so a handful is the
    same vocabulary; another model's is thousands."""
    ia = {i: t for t, i in a.get_vocab().items()}
    ib = {i: t for t, i in b.get_vocab().items()}
    return sum(1 for i in ia.keys() | ib.keys() if ia.get(i) != ib.get(i))


def gguf_tokenizer(src: Path, tokenizer_dir: str | Path | None = None,
                   log: Callable[[str], None] = lambda s: None, *, from_env: bool = True):
    """(the tokenizer to save with the import, its word-split share, where it came from). From
    `tokenizer_dir` (or $TOURNAMENT_GGUF_TOKENIZER) when given, after checking that it holds
    exactly the GGUF's vocabulary; else transformers' rebuild from the file. Either way it must
    pass `check_tokenizer`, or GGUFImportError says what to do."""
    import os

    import transformers
    from transformers import AutoTokenizer

    from tournament.models.tokenizer_check import TokenizerSplitsWords, check_tokenizer

    rebuilt = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
    given = tokenizer_dir or (os.environ.get(ENV_TOKENIZER) if from_env else None) or None
    if given:
        where = f"{given} ({'argument' if tokenizer_dir else ENV_TOKENIZER})"
        if not Path(given).is_dir():
            raise GGUFImportError(f"{where}: no such tokenizer folder")
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(given))
        except (OSError, ValueError) as e:
            raise GGUFImportError(f"{where}: not a tokenizer folder ({e})") from None
        differ = vocabulary_differences(tokenizer, rebuilt)
        if differ > max(10, len(rebuilt.get_vocab()) // 10000):
            raise GGUFImportError(f"{where}: its vocabulary is not {src.name}'s ({differ} ids hold other tokens)")
        origin = f"tokenizer files from {given}"
    else:
        tokenizer, origin = rebuilt, f"rebuilt from the GGUF by transformers {transformers.__version__}"
    try:
        share = check_tokenizer(tokenizer, f"{src.name}: {origin}")
    except TokenizerSplitsWords as e:
        raise GGUFImportError(
            f"{e}. Import with a transformers release that rebuilds this tokenizer right (5.25 does for "
            f"gemma-3), or give tokenizer files from such a rebuild: `tournament models export-tokenizer "
            f"{src.name} DIR` on a machine that has one, then {ENV_TOKENIZER}=DIR here") from None
    log(f"tokenizer: {origin}; " + ("too few whole words to check" if share is None
                                    else f"{share:.0%} of its whole words split (checked)"))
    return tokenizer, share, origin


def _load(src: Path, dtype: str, tokenizer_dir, log: Callable[[str], None]):
    """(tokenizer, its split share, where it came from, the dequantized model)."""
    from transformers import AutoModelForCausalLM

    tokenizer, share, origin = gguf_tokenizer(src, tokenizer_dir, log)
    kwargs = {}
    try:  # transformers >= 5.2x can keep GGUF blocks packed; a plain checkpoint needs them unpacked
        from transformers import GgufConfig

        kwargs["quantization_config"] = GgufConfig(dequantize=True)
    except ImportError:  # older releases always dequantize
        pass
    model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=_dtype(dtype), **kwargs)
    return tokenizer, share, origin, model


def import_gguf(
    gguf_file: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "bfloat16",
    expected_sha256: str | None = None,
    force: bool = False,
    tokenizer_dir: str | Path | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """Convert `gguf_file` into an HF directory at `out_dir` (reused if already imported).
    `tokenizer_dir`: see `gguf_tokenizer`."""
    src = Path(gguf_file)
    out = Path(out_dir)
    if not src.is_file():
        raise GGUFImportError(f"{src}: no such GGUF file")
    with open(src, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFImportError(f"{src}: not a GGUF file (bad magic)")
    if out.exists() and not force and is_imported(out):  # an import made before the check is redone
        recorded = json.loads((out / "import.json").read_text()).get("source_sha256")
        if expected_sha256 is None or recorded == expected_sha256:
            log(f"reusing {out}")
            return out
    sha = sha256_file(src)
    if expected_sha256 and sha != expected_sha256:
        raise GGUFImportError(f"{src}: sha256 {sha} != expected {expected_sha256}")
    if out.exists() and not force and is_imported(out, sha):
        log(f"reusing {out}")
        return out

    t0 = time.time()
    log(f"loading {src.name} (transformers dequantizes it; this takes a while)")
    try:
        with one_reader_per_file():
            tokenizer, share, origin, model = _load(src, dtype, tokenizer_dir, log)
    except ImportError as e:
        raise _needs_gguf(e) from None
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + ".part")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    (tmp / "import.json").write_text(json.dumps({
        "source": src.name, "source_sha256": sha, "dtype": dtype,
        "architecture": (model.config.architectures or [type(model).__name__])[0],
        "parameters": sum(p.numel() for p in model.parameters()),
        "seconds": round(time.time() - t0, 1),
        "tokenizer": origin, CHECKED: share,
    }, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    log(f"imported {src.name} -> {out} in {time.time() - t0:.0f} s")
    return out


def export_tokenizer(gguf_file: str | Path, out_dir: str | Path, log: Callable[[str], None] = lambda s: None) -> Path:
    """The GGUF's tokenizer, as this machine's transformers rebuilds it and only if it passes the
    check (a vocabulary too small to judge is written with the log saying so), saved to
    `out_dir`: for a machine whose transformers rebuilds it wrong (`tokenizer_dir`)."""
    src = Path(gguf_file)
    if not src.is_file():
        raise GGUFImportError(f"{src}: no such GGUF file")
    try:
        tokenizer, _, _ = gguf_tokenizer(src, None, log, from_env=False)
    except ImportError as e:
        raise _needs_gguf(e) from None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out))
    return out
