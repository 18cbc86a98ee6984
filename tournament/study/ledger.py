"""The submission ledger: the judge budget (20 by default), what was sent, what the judge said.

``ledger.json`` is written by ``tournament submit`` in the current folder (the repository root
by default; none ships with the repository); commit it so that it survives a lost ``mlruns/``.
Each submission is also an MLflow run (experiment ``tournament-ledger``).

Numbers are checked before anything is written (accuracy in [0, 1], speed finite and > 0): one
bad number in the file would break every later command that computes the calibration.

Append-only: a write re-reads the file, checks that every submission and result already on disk
is still present unchanged in what is about to be written, and replaces the file atomically
(temp file + ``os.replace``). Nothing a command recorded is lost by a later command. Every
read-change-write holds the ledger's lock (``.ledger.json.lock`` beside it, `filelock`), so two
commands at once (two `submit`s) each record their own entry: without it both read 31 entries,
both wrote 32, and one submission was lost while both said "recorded".
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from tournament.files import sha256_file
from tournament.judge.rules import JUDGE_SETS
from tournament.judge.rules import judge_set as normalize_set
from tournament.study.config import stored_judge_set

DEFAULT_BUDGET = 20
SCHEMA = 1
LOCK_TIMEOUT_S = 60.0  # a command holds the lock for milliseconds; a minute means something is stuck


class LedgerError(RuntimeError):
    pass


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _empty(budget: int = DEFAULT_BUDGET) -> dict[str, Any]:
    return {"schema": SCHEMA, "budget": budget, "submissions": []}


def load(path: Path) -> dict[str, Any]:
    p = Path(path)
    if not p.exists():
        return _empty()
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LedgerError(f"{p} is not valid JSON ({e}); restore it from git before recording more") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("submissions", []), list):
        raise LedgerError(f"{p} is not a ledger (expected an object with a \"submissions\" list); "
                          "restore it from git before recording more")
    doc.setdefault("budget", DEFAULT_BUDGET)
    doc.setdefault("submissions", [])
    return doc


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold the ledger's lock (one read-change-write at a time, across processes)."""
    from filelock import FileLock, Timeout

    p = Path(path)
    lock_path = p.parent / f".{p.name}.lock"
    try:
        with FileLock(str(lock_path), timeout=LOCK_TIMEOUT_S):
            yield
    except Timeout:
        raise LedgerError(f"{p} is locked by another command for over {LOCK_TIMEOUT_S:.0f} s ({lock_path}); "
                          "wait for it, or remove the lock file if no tournament command is running") from None


def check_budget(budget: int | None) -> None:
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 1):
        raise LedgerError(f"--budget {budget}: the budget is a whole number of submissions, at least 1")


def _check_append_only(old: dict[str, Any], new: dict[str, Any]) -> None:
    olds, news = old.get("submissions", []), new.get("submissions", [])
    if len(news) < len(olds):
        raise LedgerError("refusing to write: the ledger would lose submissions")
    for a, b in zip(olds, news):
        fixed_a = {k: v for k, v in a.items() if k != "results"}
        fixed_b = {k: v for k, v in b.items() if k != "results"}
        if fixed_a != fixed_b:
            raise LedgerError(f"refusing to write: submission {a.get('id')} would change")
        ra, rb = a.get("results", []), b.get("results", [])
        if rb[: len(ra)] != ra:
            raise LedgerError(f"refusing to write: results of submission {a.get('id')} would change")


def save(path: Path, doc: dict[str, Any]) -> None:
    from tournament.files import write_json_atomic

    p = Path(path)
    _check_append_only(load(p), doc)
    write_json_atomic(p, doc)


def used(doc: dict[str, Any]) -> int:
    return len(doc.get("submissions", []))


def left(doc: dict[str, Any]) -> int:
    return int(doc.get("budget", DEFAULT_BUDGET)) - used(doc)


def budget_line(doc: dict[str, Any], upto: int | None = None) -> str:
    """'3 of 20 left', or, past the budget (forced), '0 of 20 left (21 recorded, 1 past the budget)';
    `upto`: as it stood once submission `upto` was recorded."""
    budget = int(doc.get("budget", DEFAULT_BUDGET))
    n = used(doc) if upto is None else upto
    if n <= budget:
        return f"{budget - n} of {budget} left"
    return f"0 of {budget} left ({n} recorded, {n - budget} past the budget)"


def submit(path: Path, winner: Path, *, note: str = "", force: bool = False, budget: int | None = None,
           git_commit: str | None = None, track: bool = True, runs_dir: Path | None = None) -> dict[str, Any]:
    """Record one submission of `winner` (its hash, the git commit, the time, its local numbers)."""
    check_budget(budget)
    if git_commit is None:
        from tournament.tracking import git_commit as _gc

        git_commit = _gc()
    with locked(path):
        entry = _append_submission(path, winner, note=note, force=force, budget=budget, git_commit=git_commit)
    if track:
        _track_submission(entry, runs_dir)
    return entry


def _append_submission(path: Path, winner: Path, *, note: str, force: bool, budget: int | None,
                       git_commit: str | None) -> dict[str, Any]:
    doc = load(path)
    if budget is not None:
        doc["budget"] = int(budget)
    if left(doc) <= 0 and not force:
        raise LedgerError(f"budget spent: {used(doc)} of {doc['budget']} submissions recorded "
                          "(--force records it anyway; --budget N changes the budget)")
    w = Path(winner)
    if not w.exists():
        raise LedgerError(f"{w} not found: run `tournament pick` first")
    try:
        wdoc = json.loads(w.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise LedgerError(f"{w} is not valid JSON ({e}); run `tournament pick` again") from e
    if not isinstance(wdoc, dict):
        raise LedgerError(f"{w} is not a winner.json (not a JSON object); run `tournament pick` again")
    prov = wdoc.get("provenance") or {}
    metrics = prov.get("metrics", {})
    entry = {
        "id": used(doc) + 1,
        "time": _now(),
        "winner_sha256": sha256_file(w),
        "git_commit": git_commit,
        "note": note,
        "forced": bool(force and left(doc) <= 0),
        "candidate": (wdoc.get("candidate") or {}).get("id"),
        "study": prov.get("study"),
        "trial": prov.get("trial"),
        "local": {"accuracy": metrics.get("accuracy"), "chars_per_s": metrics.get("chars_per_s"),
                  # the speed POST it was timed on (distinct questions) and the samples cycled to its size
                  "chars_per_s_cycled": metrics.get("chars_per_s_cycled"),
                  "speed_n_questions": metrics.get("speed_n_questions"),
                  "accuracy_stderr": metrics.get("accuracy_stderr"), "eval_set": prov.get("eval_set"),
                  "build": (wdoc.get("candidate") or {}).get("build"), "sets": _local_sets(metrics, prov)},
        "results": [],
    }
    doc["submissions"].append(entry)
    save(path, doc)
    return entry


def submission_warnings(winner: Path) -> list[str]:
    """What would make the judge build something other than this winner.json: the file is not
    committed (the judge builds from the repository), or it names no published model
    (download_model.py then has nothing to fetch)."""
    import subprocess

    w = Path(winner).resolve()
    warns = []
    try:
        git = ["git", "-C", str(w.parent)]
        inside = subprocess.run([*git, "rev-parse", "--is-inside-work-tree"], capture_output=True, text=True,
                                timeout=10).stdout.strip() == "true"
        if inside:
            tracked = subprocess.run([*git, "ls-files", "--error-unmatch", w.name], capture_output=True,
                                     timeout=10).returncode == 0
            changed = tracked and subprocess.run([*git, "diff", "--quiet", "HEAD", "--", w.name],
                                                 capture_output=True, timeout=10).returncode != 0
            if not tracked or changed:
                warns.append(f"{winner} is {'not committed' if not tracked else 'changed since the last commit'}: "
                             f"the judge builds your repository, not this folder (git add {w.name} && git commit)")
    except (OSError, subprocess.SubprocessError):
        pass  # no git: nothing to check
    try:
        model = ((json.loads(w.read_text(encoding="utf-8")).get("serve") or {}).get("model") or {})
    except (OSError, ValueError, AttributeError):
        return warns
    if isinstance(model, dict) and not model.get("modelscope_id"):
        warns.append(f"{winner} names no published model (serve.model.modelscope_id is empty): download_model.py "
                     "has nothing to fetch in the image; publish the build and run `tournament pick` again "
                     "(docs/submitting.md)")
    return warns


def check_result(accuracy: float | None, speed: float | None) -> None:
    """Raise LedgerError unless accuracy is in [0, 1] and speed is a finite number > 0 (None: not given)."""
    if accuracy is not None and not (isinstance(accuracy, (int, float)) and 0.0 <= accuracy <= 1.0):
        raise LedgerError(f"--accuracy {accuracy}: the judge's accuracy is a number from 0 to 1")
    if speed is not None and not (isinstance(speed, (int, float)) and math.isfinite(speed) and speed > 0):
        raise LedgerError(f"--speed {speed}: the judge's speed is a finite number of chars/s above 0")


def same_winner(doc: dict[str, Any], winner: Path) -> list[int]:
    """Ids of earlier submissions of exactly this winner.json (same sha256)."""
    sha = sha256_file(winner)
    return [int(s["id"]) for s in doc.get("submissions", []) if s.get("winner_sha256") == sha]


def add_result(path: Path, submission: int, *, accuracy: float | None, speed: float | None,
               judge_set: str = "basic", note: str = "", track: bool = True,
               runs_dir: Path | None = None) -> dict[str, Any]:
    check_result(accuracy, speed)
    try:
        judged = normalize_set(judge_set, "basic")
    except ValueError as e:
        raise LedgerError(f"--set: {e}") from None
    with locked(path):
        doc = load(path)
        subs = {int(s["id"]): s for s in doc["submissions"]}
        if submission not in subs:
            raise LedgerError(f"no submission {submission}; `tournament ledger` lists them")
        res = {"time": _now(), "set": judged,
               "accuracy": accuracy, "speed": speed, "note": note}
        subs[submission].setdefault("results", []).append(res)
        save(path, doc)
    if track:
        _track_submission({**subs[submission], "result": res}, runs_dir)
    return res


def _number(v: Any, lo: float, hi: float) -> float | None:
    """v if it is a finite number in [lo, hi], else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi:
        return None
    return float(v)


def _local_sets(metrics: dict[str, Any], prov: dict[str, Any]) -> dict[str, dict[str, float]]:
    """The submitted trial's seen/unseen accuracy per judge set (what the judge model blends)."""
    from tournament.study.record import set_accuracies

    judge = prov.get("judge") or {}
    return set_accuracies(metrics, JUDGE_SETS, stored_judge_set(judge))


def calibration_points(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """One point per judge result: what the judge said, and the submitted build's local numbers on
    that set (seen/unseen; older entries hold one accuracy, which stands for both)."""
    pts = []
    for s in doc.get("submissions", []):
        loc = s.get("local") or {}
        for r in s.get("results", []):
            try:
                judged = normalize_set(r.get("set"), "basic")
            except ValueError:  # a label no command writes: read it as the default set
                judged = "basic"
            part = (loc.get("sets") or {}).get(judged) or {}
            speeds = [_number(x, 0.0, math.inf) for x in (loc.get("chars_per_s"), r.get("speed"),
                                                          loc.get("chars_per_s_cycled"))]
            pt = {"local_accuracy": _number(loc.get("accuracy"), 0.0, 1.0), "local_speed": speeds[0] or None,
                  "judge_accuracy": _number(r.get("accuracy"), 0.0, 1.0), "judge_speed": speeds[1] or None,
                  "local_speed_cycled": speeds[2] or None, "set": judged}
            seen = _number(part.get("seen_accuracy"), 0.0, 1.0)
            if seen is not None:
                unseen = _number(part.get("unseen_accuracy"), 0.0, 1.0)
                pt["seen"], pt["unseen"] = seen, seen if unseen is None else unseen
            pts.append(pt)
    return pts


def calibration(doc: dict[str, Any]):
    from tournament.study.calibration import fit

    return fit(calibration_points(doc))


def judge_model_from_ledger(path: Path | None):
    """The judge model (judge_model.JudgeModel), calibrated by the ledger's judge results when
    there are any (the sweep's)."""
    if path is not None and Path(path).exists():
        cal = calibration(load(path))
        if cal is not None:
            return cal.judge_model
    from tournament.study.judge_model import JudgeModel

    return JudgeModel.from_points()


def listing(doc: dict[str, Any], path: Path):
    """The rich table of `tournament ledger`: one row per submission, with the judge's results."""
    from rich.table import Table

    t = Table(title=f"{path}: {used(doc)} of {doc['budget']} submissions used, {max(0, left(doc))} left")
    for c in ("id", "time", "candidate", "study/trial", "local acc", "local chars/s", "judge results", "note"):
        t.add_column(c, overflow="fold")
    for s in doc["submissions"]:
        loc = s.get("local") or {}
        res = "; ".join(f"{r['set']}: {r.get('accuracy')} @ {r.get('speed')}" for r in s.get("results", []))
        t.add_row(str(s["id"]), s["time"], str(s.get("candidate")), f"{s.get('study')}/{s.get('trial')}",
                  f"{loc.get('accuracy') or 0:.3f}", f"{loc.get('chars_per_s') or 0:.0f}", res or "-",
                  (s.get("note") or "") + (" [forced]" if s.get("forced") else ""))
    return t


def _track_submission(entry: dict[str, Any], runs_dir: Path | None) -> None:
    """The submission and its judge results in MLflow (`study/dashboard.py`), best effort."""
    from tournament.study.dashboard import track_submission

    track_submission(entry, runs_dir)
