"""GGUF file -> plain HF model directory (bf16 safetensors + tokenizer).

transformers dequantizes a GGUF on load (`from_pretrained(dir, gguf_file=name)`), but refuses to
save a model that still carries its GGUF quantizer ("not serializable"); dropping
`model.hf_quantizer` and `config.quantization_config` first gives a plain directory that vLLM and
the transformers engine load like any other (see ../shared/notes/vllm-kit.md).

The import is atomic (written to `<out>.part`, renamed when complete) and cached: `import.json`
records the source sha256; an existing complete import of the same file is reused.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Callable

from tournament.files import sha256_file


class GGUFImportError(RuntimeError):
    pass


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
    if sha256 is None:
        return True
    try:
        return json.loads(meta.read_text())["source_sha256"] == sha256
    except (ValueError, KeyError):
        return False


def import_gguf(
    gguf_file: str | Path,
    out_dir: str | Path,
    *,
    dtype: str = "bfloat16",
    expected_sha256: str | None = None,
    force: bool = False,
    log: Callable[[str], None] = lambda s: None,
) -> Path:
    """Convert `gguf_file` into an HF directory at `out_dir` (reused if already imported)."""
    src = Path(gguf_file)
    out = Path(out_dir)
    if not src.is_file():
        raise GGUFImportError(f"{src}: no such GGUF file")
    with open(src, "rb") as f:
        if f.read(4) != b"GGUF":
            raise GGUFImportError(f"{src}: not a GGUF file (bad magic)")
    if out.exists() and not force and is_imported(out):
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

    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    log(f"loading {src.name} (transformers dequantizes it; this takes a while)")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(src.parent), gguf_file=src.name)
        kwargs = {}
        try:  # transformers >= 5.2x can keep GGUF blocks packed; a plain checkpoint needs them unpacked
            from transformers import GgufConfig

            kwargs["quantization_config"] = GgufConfig(dequantize=True)
        except ImportError:  # older releases always dequantize
            pass
        model = AutoModelForCausalLM.from_pretrained(str(src.parent), gguf_file=src.name, dtype=_dtype(dtype),
                                                     **kwargs)
    except ImportError as e:
        raise GGUFImportError(f"reading GGUF needs the `gguf` package (pip install gguf): {e}") from None
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
    }, indent=2) + "\n")
    if out.exists():
        shutil.rmtree(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp.rename(out)
    log(f"imported {src.name} -> {out} in {time.time() - t0:.0f} s")
    return out
