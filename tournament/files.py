"""Small file helpers shared by every area: atomic writes and content hashes.

Atomic: write a temp file in the same folder, fsync, then `os.replace` over the target (atomic on
POSIX and Windows), so a reader or a crash never sees half a file. winner.json, the ledger, sweep
caches and answer tables all go through here."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.tmp-", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # never leave a half-written temp file behind
        raise
    return p


def write_json_atomic(path: str | Path, doc: Any, *, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(doc, indent=indent, ensure_ascii=False) + "\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
