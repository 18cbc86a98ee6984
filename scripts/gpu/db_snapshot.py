"""Consistent copies of a running sweep's databases, for `run.sh follow` to bring back.

Usage: db_snapshot.py WORK_DIR SNAPSHOT_DIR

Copies WORK_DIR/mlruns*/optuna.db and mlflow.db through sqlite's backup API (a file copied by tar
while the sweep commits can be torn: half a page of the old state, half of the new) and
WORK_DIR/mlruns*/optuna.journal* as files (append-only: at worst the copy ends in a partial last
record). A database the backup cannot read (locked past 30 s, or a hot journal left by a killed
writer, which a read-only connection cannot roll back) is copied as files with its -journal/-wal,
as before: one bad database never costs the others. SNAPSHOT_DIR keeps the same relative paths;
it is emptied first. Prints what it copied."""

from __future__ import annotations

import shutil
import sqlite3
import sys
from pathlib import Path


def backup(db: Path, dst: Path) -> None:
    src = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    out = sqlite3.connect(dst)
    try:
        src.backup(out)  # pages of one committed state, whatever the writer does meanwhile
    finally:
        out.close()
        src.close()


def snapshot(work: Path, snap: Path) -> list[Path]:
    shutil.rmtree(snap, ignore_errors=True)
    copied = []
    for db in sorted([*work.glob("mlruns*/optuna.db"), *work.glob("mlruns*/mlflow.db")]):
        dst = snap / db.relative_to(work)
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            backup(db, dst)
        except sqlite3.Error as e:
            print(f"{db}: {e}; copied as files", file=sys.stderr)
            dst.unlink(missing_ok=True)
            for f in (db, db.with_name(db.name + "-journal"), db.with_name(db.name + "-wal")):
                if f.is_file():
                    shutil.copyfile(f, dst.with_name(f.name))
        copied.append(dst)
    for journal in sorted(work.glob("mlruns*/optuna.journal*")):
        if journal.is_file():
            dst = snap / journal.relative_to(work)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(journal, dst)
            copied.append(dst)
    return copied


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    for path in snapshot(Path(sys.argv[1]), Path(sys.argv[2])):
        print(path)


if __name__ == "__main__":
    main()
