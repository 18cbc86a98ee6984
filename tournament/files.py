"""Small file helpers shared by every area: atomic writes and content hashes.

Atomic: write a temp file in the same folder, fsync, then `os.replace` over the target (atomic on
POSIX and Windows), so a reader or a crash never sees half a file. A failed write removes its
temp file; a killed writer's is removed by the next write to the same target (at once when the
writer was of this host: the temp's name carries its pid and a tag of its host). winner.json, the
ledger, sweep caches, data splits and answer tables all go through here."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Sequence


STALE_TEMP_S = 3600


def pid_alive(pid: int) -> bool:
    """Whether a process of this host runs with that pid (one of another user counts as alive; a
    zombie, killed and not yet reaped by its parent, is dead: it will never write or beat again)."""
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, ValueError, OverflowError):
        return False
    except psutil.AccessDenied:
        return True


def host_tag() -> str:
    """8 hex digits naming this host in temp files' names (a pid means something only on its host)."""
    return "h" + hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def is_temp_name(path: str | Path) -> bool:
    """A project temp file's name (`.<name>.tmp-*`: its writer removes or renames it, git ignores it)."""
    name = Path(path).name
    return name.startswith(".") and ".tmp-" in name


def remove_stale_temps(p: Path) -> list[Path]:
    """Temp files of `p` left by a writer that was killed mid-write (SIGKILL, power cut): the
    name carries the writer's pid and host tag. One of this host whose pid is gone is removed at
    once; one of another host (or of an older version, without a tag) once its pid is gone here
    and it is an hour old (the age keeps a live writer on another host of a shared folder safe)."""
    gone = []
    here = host_tag()
    for t in p.parent.glob(f".{p.name}.tmp-*"):
        parts = t.name[len(f".{p.name}.tmp-"):].split("-")
        pid = parts[0]
        ours = len(parts) == 3 and parts[1] == here
        try:
            if pid.isdigit() and not pid_alive(int(pid)) and (ours or time.time() - t.stat().st_mtime > STALE_TEMP_S):
                t.unlink()
                gone.append(t)
        except OSError:
            pass
    return gone


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text_atomic(path: str | Path, text: str) -> Path:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(p)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.tmp-{os.getpid()}-{host_tag()}-", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the file is meant to be shared
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)  # never leave a half-written temp file behind
        raise
    return p


def write_json_atomic(path: str | Path, doc: Any, *, indent: int | None = 2) -> Path:
    return write_text_atomic(path, json.dumps(doc, indent=indent, ensure_ascii=False) + "\n")


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """One JSON object per line (UTF-8, not ASCII-escaped), atomically; returns the row count."""
    lines = [json.dumps(row, ensure_ascii=False) + "\n" for row in rows]
    write_text_atomic(path, "".join(lines))
    return len(lines)


def write_answer_table(path: str | Path, questions: Sequence[str], references: Sequence[str],
                       answers: Sequence[str], scores: Sequence[float]) -> Path:
    """Per-question rows of a judged run (question, reference, answer, judge score, characters);
    a missing answer is "" and scores 0.0, as the judge records it."""
    rows = []
    for i, (q, ref) in enumerate(zip(questions, references)):
        a = answers[i] if i < len(answers) else ""
        s = scores[i] if i < len(scores) else 0.0
        rows.append({"question": q, "reference": ref, "answer": a, "score": s, "chars": len(a)})
    write_jsonl_atomic(path, rows)
    return Path(path)


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def json_hash(obj: Any, n: int = 16) -> str:
    """A short, stable content hash of a JSON-able object (config hashes, cache keys)."""
    blob = json.dumps(obj, sort_keys=True, default=str, ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:n]
