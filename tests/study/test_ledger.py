"""Ledger budget and append-only semantics, calibration arithmetic, atomic winner writes, --auto."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from tournament.study import ledger as L
from tournament.study.calibration import fit
from tournament.files import sha256_file


def _winner(tmp: Path, acc=0.40, speed=1000.0, name="winner.json") -> Path:
    from tournament.serving.config import ServeConfig
    from tournament.study.winner import write_winner

    doc = {"schema": 1, "serve": ServeConfig().model_dump(), "candidate": {"id": "c"},
           "provenance": {"study": "s", "trial": 3, "metrics": {"accuracy": acc, "chars_per_s": speed}}}
    return write_winner(doc, tmp / name)


def test_budget_refuses_past_the_limit_unless_forced(tmp_path):
    w = _winner(tmp_path)
    led = tmp_path / "ledger.json"
    for i in range(3):
        e = L.submit(led, w, note=f"n{i}", budget=3, git_commit="abc", track=False)
        assert e["id"] == i + 1 and e["winner_sha256"] == sha256_file(w)
    with pytest.raises(L.LedgerError, match="budget spent"):
        L.submit(led, w, git_commit="abc", track=False)
    e = L.submit(led, w, force=True, git_commit="abc", track=False)
    assert e["forced"] and e["id"] == 4
    doc = L.load(led)
    assert L.used(doc) == 4 and L.left(doc) == -1 and doc["budget"] == 3
    assert [s["note"] for s in doc["submissions"]][:3] == ["n0", "n1", "n2"]
    assert doc["submissions"][0]["local"]["accuracy"] == 0.40


def test_ledger_is_append_only(tmp_path):
    w = _winner(tmp_path)
    led = tmp_path / "ledger.json"
    L.submit(led, w, git_commit="a", track=False)
    L.add_result(led, 1, accuracy=0.38, speed=3000, judge_set="basic", track=False)
    doc = L.load(led)
    doc["submissions"][0]["note"] = "rewritten"
    with pytest.raises(L.LedgerError, match="would change"):
        L.save(led, doc)
    doc = L.load(led)
    doc["submissions"][0]["results"] = []
    with pytest.raises(L.LedgerError, match="results"):
        L.save(led, doc)
    doc = L.load(led)
    doc["submissions"] = []
    with pytest.raises(L.LedgerError, match="lose"):
        L.save(led, doc)
    assert L.load(led)["submissions"][0]["results"][0]["accuracy"] == 0.38
    with pytest.raises(L.LedgerError, match="no submission 7"):
        L.add_result(led, 7, accuracy=0.1, speed=1, track=False)


def test_calibration_one_point_uses_wide_priors():
    cal = fit([{"local_accuracy": 0.40, "local_speed": 1000, "judge_accuracy": 0.37, "judge_speed": 4000, "set": "basic"}])
    assert cal.n == 1 and cal.speed_ratio == pytest.approx(4.0) and cal.speed_log_sd == 0.5
    p = cal.predict(0.42, 500, "basic")
    assert p["accuracy"] == pytest.approx(0.39) and p["accuracy_sd"] == 0.05
    assert p["chars_per_s"] == pytest.approx(2000) and p["chars_per_s_lo"] == pytest.approx(2000 / math.e)
    b = cal.predict(0.42, 500, "bonus")  # no bonus result yet: borrows basic with double sd
    assert b["accuracy"] == pytest.approx(0.39) and b["accuracy_sd"] == pytest.approx(0.10)


def test_calibration_two_points_geometric_mean_and_offset():
    pts = [{"local_accuracy": 0.40, "local_speed": 1000, "judge_accuracy": 0.36, "judge_speed": 2000, "set": "basic"},
           {"local_accuracy": 0.44, "local_speed": 1000, "judge_accuracy": 0.42, "judge_speed": 8000, "set": "basic"}]
    cal = fit(pts)
    assert cal.speed_ratio == pytest.approx(4.0)  # sqrt(2 * 8)
    logs = [math.log(2), math.log(8)]
    sd = math.sqrt(sum((x - math.log(4)) ** 2 for x in logs)) * math.sqrt(1.5)
    assert cal.speed_log_sd == pytest.approx(sd)
    f = cal.accuracy["basic"]
    assert f.kind == "offset" and f.offset == pytest.approx(-0.03)
    assert f.sd == pytest.approx(math.sqrt(2 * 0.01 ** 2) * math.sqrt(1.5))


def test_calibration_three_points_fit_a_line():
    pts = [{"local_accuracy": a, "local_speed": 100, "judge_accuracy": 0.1 + 0.5 * a, "judge_speed": 300, "set": "bonus"}
           for a in (0.3, 0.4, 0.5)]
    f = fit(pts).accuracy["bonus"]
    assert f.kind == "linear" and f.scale == pytest.approx(0.5) and f.offset == pytest.approx(0.1)
    assert fit([]) is None


def test_calibration_from_ledger_results(tmp_path):
    led = tmp_path / "ledger.json"
    L.submit(led, _winner(tmp_path, acc=0.40, speed=1000), git_commit="a", track=False)
    L.add_result(led, 1, accuracy=0.37, speed=5000, judge_set="bonus", track=False)
    cal = L.calibration(L.load(led))
    assert cal.speed_ratio == pytest.approx(5.0) and "bonus" in cal.accuracy


def test_winner_write_is_atomic(tmp_path, monkeypatch):
    import os

    from tournament.study import winner as W

    w = _winner(tmp_path)
    before = w.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        _winner(tmp_path, acc=0.99)
    assert w.read_bytes() == before  # the old winner is intact, never half-written
    assert not list(tmp_path.glob(".winner.json.tmp-*"))  # and the failed write left no temp file
    monkeypatch.undo()
    with pytest.raises(Exception):  # an invalid serve block is never written
        W.write_winner({"schema": 1, "serve": {"mode": "sometimes"}}, w)
    assert json.loads(w.read_bytes())["provenance"]["metrics"]["accuracy"] == 0.40


def test_a_killed_writers_temp_file_is_removed_by_the_next_write(tmp_path):
    import os
    import subprocess
    import sys
    import time

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    old = time.time() - 2 * 3600
    stale = tmp_path / f".winner.json.tmp-{dead.stdout.strip()}-abc"  # a writer that was kill -9'd
    young = tmp_path / f".winner.json.tmp-{dead.stdout.strip()}-new"  # too new to judge (other host?)
    live = tmp_path / f".winner.json.tmp-{os.getpid()}-xyz"  # a live writer's
    for f in (stale, young, live):
        f.write_text("{half")
    os.utime(stale, (old, old))
    os.utime(live, (old, old))
    _winner(tmp_path)
    assert not stale.exists() and young.exists() and live.exists()
    assert json.loads((tmp_path / "winner.json").read_text())["schema"] == 1
    from tournament.paths import REPO_ROOT

    assert ".*.tmp-*" in (REPO_ROOT / ".gitignore").read_text().splitlines()  # never committed by accident


def _row(n, acc, se, speed, feasible=True, state="COMPLETE", predicted=None):
    from tournament.study.record import TrialRecord

    return TrialRecord.from_row({"trial": n, "state": state, "accuracy": acc, "accuracy_stderr": se,
                                 "chars_per_s": speed, "feasible": feasible, "predicted": predicted})


def test_auto_pick_rule():
    from tournament.study.winner import auto_pick

    rows = [_row(0, 0.45, 0.02, 1000), _row(1, 0.40, 0.01, 3000), _row(2, 0.38, 0.03, 9000),
            _row(3, 0.50, 0.01, 99999, feasible=False)]
    n, rule = auto_pick(rows, 0.35, 0.02)
    assert n == 1 and "fastest" in rule  # 0.40-0.02=0.38 >= 0.37; trial 2's bound 0.32 is not
    n, rule = auto_pick([_row(0, 0.36, 0.05, 10), _row(1, 0.37, 0.05, 5)], 0.35)
    assert n == 1 and "most accurate feasible" in rule
    n, _ = auto_pick([_row(0, 0.2, 0.0, 10, feasible=False), _row(1, 0.3, 0.0, 5, feasible=False)], 0.35)
    assert n == 1
    # a calibration's prediction replaces the local bound
    pred = {"accuracy": 0.36, "accuracy_sd": 0.01}
    n, rule = auto_pick([_row(0, 0.45, 0.01, 9000, predicted=pred), _row(1, 0.45, 0.01, 100)], 0.35)
    assert n == 1


def test_ledger_cli(tmp_path, runs_dir):
    from typer.testing import CliRunner

    from tournament.cli import app

    r = CliRunner()
    w = _winner(tmp_path)
    led = tmp_path / "ledger.json"
    res = r.invoke(app, ["submit", "--winner", str(w), "--ledger", str(led), "--budget", "1", "--note", "x",
                         "--runs-dir", str(runs_dir)])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["submit", "--winner", str(w), "--ledger", str(led)])
    assert res.exit_code == 1 and "budget spent" in res.output
    res = r.invoke(app, ["judge-result", "1", "--accuracy", "0.37", "--speed", "4000", "--set", "basic",
                         "--ledger", str(led), "--runs-dir", str(runs_dir)])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["ledger", "--ledger", str(led), "--json"])
    doc = json.loads(res.stdout)
    assert doc["left"] == 0 and doc["calibration"]["speed_ratio"] == pytest.approx(4.0)


@pytest.mark.parametrize("args,message", [
    (["--accuracy", "0.3", "--speed", "-5"], "--speed -5.0"),
    (["--speed", "nan"], "--speed nan"),
    (["--speed", "inf"], "--speed inf"),
    (["--accuracy", "1.5"], "--accuracy 1.5"),
    (["--accuracy", "-0.1", "--speed", "100"], "--accuracy -0.1"),
])
def test_judge_result_checks_numbers_before_writing(tmp_path, args, message):
    from typer.testing import CliRunner

    from tournament.cli import app

    led = tmp_path / "ledger.json"
    L.submit(led, _winner(tmp_path), git_commit="a", track=False)
    before = led.read_bytes()
    res = CliRunner().invoke(app, ["judge-result", "1", *args, "--ledger", str(led)])
    assert res.exit_code == 1 and isinstance(res.exception, SystemExit), res.output  # a message, no traceback
    assert message in res.output
    assert led.read_bytes() == before  # nothing stored
    ok = CliRunner().invoke(app, ["ledger", "--ledger", str(led), "--json"])
    assert ok.exit_code == 0 and json.loads(ok.stdout)["calibration"] is None


def test_old_bad_numbers_and_corrupt_files_do_not_break_reading(tmp_path):
    from typer.testing import CliRunner

    from tournament.cli import app

    led = tmp_path / "ledger.json"
    L.submit(led, _winner(tmp_path, acc=0.40, speed=1000), git_commit="a", track=False)
    doc = json.loads(led.read_text())
    # what an unchecked judge-result stored before: a negative speed, NaN (json writes it bare)
    doc["submissions"][0]["results"] = [{"time": "t", "set": "basic", "accuracy": 0.3, "speed": -5, "note": ""},
                                        {"time": "t", "set": "basic", "accuracy": 0.35, "speed": float("nan"), "note": ""},
                                        {"time": "t", "set": "basic", "accuracy": 0.37, "speed": 4000.0, "note": ""}]
    led.write_text(json.dumps(doc))
    cal = L.calibration(L.load(led))
    assert cal.n == 1 and cal.speed_ratio == pytest.approx(4.0)
    r = CliRunner()
    assert r.invoke(app, ["ledger", "--ledger", str(led)]).exit_code == 0
    for bad in ("{half", "[]"):
        led.write_text(bad)
        res = r.invoke(app, ["ledger", "--ledger", str(led)])
        assert res.exit_code == 1 and isinstance(res.exception, SystemExit) and "restore it from git" in res.output


def test_submitting_the_same_winner_twice_warns(tmp_path, runs_dir):
    from typer.testing import CliRunner

    from tournament.cli import app

    w, led = _winner(tmp_path), tmp_path / "ledger.json"
    args = ["submit", "--winner", str(w), "--ledger", str(led), "--runs-dir", str(runs_dir)]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 0 and "already submitted" not in first.output
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "already submitted as submission 1" in again.output
    assert L.used(L.load(led)) == 2


def test_a_submission_keeps_seen_and_unseen_per_set_and_the_judge_model_learns_from_them(tmp_path):
    from tournament.serving.config import ServeConfig
    from tournament.study.judge_model import prior_weight
    from tournament.study.winner import write_winner

    metrics = {"accuracy": 0.33, "chars_per_s": 1000.0, "seen_accuracy": 0.8, "unseen_accuracy": 0.2,
               "seen_accuracy_basic": 0.8, "unseen_accuracy_basic": 0.2, "seen_accuracy_bonus": 0.7,
               "unseen_accuracy_bonus": 0.1}
    w = write_winner({"schema": 1, "serve": ServeConfig().model_dump(), "candidate": {"id": "c", "build": "refit"},
                      "provenance": {"study": "s", "trial": 1, "metrics": metrics, "judge": {"track": "basic"}}},
                     tmp_path / "winner.json")
    led = tmp_path / "ledger.json"
    e = L.submit(led, w, git_commit="a", track=False)
    assert e["local"]["build"] == "refit"
    assert e["local"]["sets"]["bonus"]["seen_accuracy"] == 0.7 and e["local"]["sets"]["basic"]["unseen_accuracy"] == 0.2
    L.add_result(led, 1, accuracy=0.30, speed=None, judge_set="bonus", track=False)  # accuracy only
    cal = L.calibration(L.load(led))
    bonus = cal.judge_model.sets["bonus"]
    blend = prior_weight("bonus") * 0.7 + (1 - prior_weight("bonus")) * 0.1
    assert bonus.n == 1 and bonus.kind == "offset" and bonus.offset == pytest.approx(0.30 - blend)
    assert cal.speed_ratio is None  # no speed result: no speed prediction, the accuracy is calibrated anyway


def test_atomic_writes_are_readable_by_others(tmp_path):
    """mkstemp makes a private file; winner.json goes into an image build and must not stay 0600."""
    import os
    import stat

    from tournament.files import write_text_atomic

    old = os.umask(0o022)
    try:
        p = write_text_atomic(tmp_path / "winner.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_concurrent_submits_each_record_their_own_entry(tmp_path, runs_dir):
    """Real `tournament submit` processes at once: every one that says "recorded" is in the file,
    under its own id (the read-change-write holds the ledger's lock)."""
    import os
    import re
    import subprocess
    import sys

    from tournament.paths import REPO_ROOT

    n = 6
    winners = [_winner(tmp_path, acc=0.1 * (i + 1), name=f"winner{i}.json") for i in range(n)]
    led = tmp_path / "ledger.json"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    procs = [subprocess.Popen([sys.executable, "-m", "tournament.cli", "submit", "--winner", str(w),
                               "--ledger", str(led), "--runs-dir", str(runs_dir), "--note", f"p{i}"],
                              cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, w in enumerate(winners)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    said = [int(m.group(1)) for o in outs for m in [re.search(r"submission (\d+) recorded", o)] if m]
    doc = L.load(led)
    assert sorted(said) == [s["id"] for s in doc["submissions"]] == list(range(1, n + 1)), outs
    assert sorted(s["note"] for s in doc["submissions"]) == [f"p{i}" for i in range(n)]
    assert all(p.returncode == 0 for p in procs), outs
    assert not list(tmp_path.glob(".ledger.json.tmp-*"))


def test_budget_must_be_positive_and_past_the_budget_never_reads_negative(tmp_path):
    from typer.testing import CliRunner

    from tournament.cli import app

    w = _winner(tmp_path)
    led = tmp_path / "ledger.json"
    with pytest.raises(L.LedgerError, match="at least 1"):
        L.submit(led, w, budget=-5, git_commit="a", track=False)
    assert not led.exists()
    res = CliRunner().invoke(app, ["submit", "--winner", str(w), "--ledger", str(led), "--budget", "-5"])
    assert res.exit_code == 2 and not led.exists()
    L.submit(led, w, budget=1, git_commit="a", track=False)
    L.submit(led, w, force=True, git_commit="a", track=False)
    doc = L.load(led)
    assert L.budget_line(doc) == "0 of 1 left (2 recorded, 1 past the budget)"
    assert L.budget_line(doc, 1) == "0 of 1 left"
    title = str(L.listing(doc, led).title)  # "<path>: N used, M left" (the path may hold "-1" itself)
    assert title.endswith(" 0 left") and " -" not in title.rsplit(": ", 1)[-1], title


def test_a_killed_writer_of_this_host_leaves_no_temp_for_an_hour(tmp_path):
    """Temps of kill -9'd writers of this host go at the next write, however young; another
    host's young temp stays (its pid means nothing here)."""
    import subprocess
    import sys

    from tournament.files import host_tag

    led = tmp_path / "ledger.json"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    ours = [tmp_path / f".ledger.json.tmp-{dead}-{host_tag()}-k{i}" for i in range(11)]
    theirs = tmp_path / f".ledger.json.tmp-{dead}-h00000000-zz"
    for f in (*ours, theirs):
        f.write_text("{half")
    L.submit(led, _winner(tmp_path), git_commit="a", track=False)
    assert not any(f.exists() for f in ours) and theirs.exists()
