"""Atomic file writes: a reader (or a crash) never sees half a file.

Write to a temp file in the same folder, fsync, then `os.replace` over the target (atomic on
POSIX and Windows). winner.json, the ledger, sweep caches and answer tables all go through here."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, p)
    return p


def write_json_atomic(path: str | Path, doc: Any, *, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(doc, indent=indent, ensure_ascii=False) + "\n")
