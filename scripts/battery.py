#!/usr/bin/env python
"""The bad-input and fault battery (CPU, a few minutes): every way found to lose or change a
result, run against the real parts (serve.py under uvicorn, real sweeps, real processes).

Categories (each also has pytest tests, named below):
  bodies    hostile POST bodies to serve.py          tests/serving/test_serve_hostile.py, test_serve.py
  winners   damaged winner.json / settings at start  tests/serving/test_serve_startup_errors.py, test_serve_config.py
  kill      kill -9 of a sweep, then the resume      tests/study/test_sweep_resume.py, test_left_runs.py
  submits   concurrent `tournament submit`s          tests/study/test_ledger.py
  secrets   a secret planted in a prompt prefix      tests/study/test_served_config.py, test_sweep.py

Totals: cases; crashes (a 5xx, a dead server, a traceback instead of a one-line reason, a
process that did not finish); records lost (a finished trial or a submission that said
"recorded" and is gone); records altered (a record that differs from what was measured or
sent: a winner.json serving another config, a run left RUNNING or without its metrics, a
secret in a study record).

    PYTHONPATH=. python scripts/battery.py                  # all categories
    PYTHONPATH=. python scripts/battery.py bodies winners   # some
    PYTHONPATH=. python scripts/battery.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ENGINE = {"engine": "transformers", "device": "cpu", "batch_size": 8, "max_model_len": 512}
QA = [("什么是 warp？", "warp 是 32 个线程组成的调度单位。"), ("SM 是什么？", "SM 是 streaming multiprocessor。"),
      ("什么是 tiling？", "把 tile 载入 shared memory。"), ("CUDA kernel 如何启动？", "kernel<<<grid, block>>>")]


@dataclass
class Tally:
    category: str
    cases: int = 0
    crashes: int = 0
    lost: int = 0
    altered: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what a case exercised (printed, not counted)

    def case(self, name: str, crash: bool = False, lost: int = 0, altered: int = 0, why: str = "") -> None:
        self.cases += 1
        self.crashes += int(crash)
        self.lost += lost
        self.altered += altered
        if crash or lost or altered:
            self.problems.append(f"{name}: {why}"[:300])


def env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def fresh_runs(work: Path, template: Path) -> Path:
    runs = Path(tempfile.mkdtemp(prefix="runs-", dir=work))
    shutil.copy(template, runs / "mlflow.db")
    return runs


# -- bodies --------------------------------------------------------------------------------------
def raw_post(host: str, port: int, head_and_body: bytes, timeout: float) -> bytes:
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head_and_body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def _healthy(client, url: str) -> bool:
    import httpx

    for _ in range(2):  # a pooled connection the server closed (after an error) fails once
        try:
            return client.get(url + "/").status_code == 200
        except httpx.HTTPError:
            time.sleep(0.2)
    return False


def bodies(work: Path, model: Path, template: Path) -> Tally:
    import httpx

    from tournament.serving.process import ServerProcess

    t = Tally("bodies")
    big = 2 * 1024 * 1024
    cases = {
        "not JSON": b"not json", "not UTF-8": b"\xff\xfe\xfa", "empty": b"", "whitespace": b"  \n ",
        "nested 1,000 deep": b'{"prompt": ' + b"[" * 1000 + b"]" * 1000 + b"}",
        "nested 100,000 deep": b'{"prompt": ' + b'{"a":' * 100000 + b"1" + b"}" * 100000 + b"}",
        "5,001-digit number": b'{"prompt": 1' + b"0" * 5000 + b"}",
        "1e999": b'{"prompt": 1e999}', "NaN": b'{"prompt": NaN}', "null": b'{"prompt": null}',
        "int": b'{"prompt": 3}', "list of lists": b'{"prompt": [["a"]]}', "empty list": b'{"prompt": []}',
        "mixed list": b'{"prompt": ["ok", 5]}', "no prompt key": b'{"question": "x"}', "top-level list": b"[1, 2]",
        "duplicate keys": b'{"prompt": 1, "prompt": "ok"}', "BOM": b'\xef\xbb\xbf{"prompt": "ok"}',
        "100k-char prompt": json.dumps({"prompt": "x" * 100_000}).encode(),
        "5,000 prompts": json.dumps({"prompt": ["q"] * 5000}).encode(),
        "lone surrogate": b'{"prompt": ["\\ud800 ok", "fine"]}', "2 MB of spaces": b'{"prompt": "a"' + b" " * big + b"}",
        "empty prompt": b'{"prompt": ""}', "emoji": json.dumps({"prompt": ["😀" * 50]}).encode(),
    }
    cfg = {"model": {"path": str(model)}, "engine": ENGINE, "decode": {"max_tokens": 4}, "body_timeout_s": 2.0}
    with ServerProcess(cfg, log_path=work / "bodies.log", sweep_mode=True) as srv:
        srv.wait_healthy(120)
        with httpx.Client(trust_env=False, timeout=60) as c:
            for name, body in cases.items():
                for path in ("/predict", "/admin/config"):
                    try:
                        r = c.post(srv.url + path, content=body, headers={"content-type": "application/json"})
                        ok = r.status_code < 500 and "application/json" in r.headers.get("content-type", "")
                        why = f"{path} -> {r.status_code} {r.text[:120]}"
                    except httpx.HTTPError as e:
                        ok, why = False, f"{path} -> {type(e).__name__}: {e}"
                    alive = srv.alive() and _healthy(c, srv.url)
                    t.case(f"{name} ({path})", crash=not (ok and alive), why=why if alive else why + "; server died")
            for name, sent in (("body never arrives", b'{"prompt": "half'), ("no body at all", b"")):
                head = (b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                        b"Content-Length: 1000\r\n\r\n")
                t0 = time.monotonic()
                try:
                    data = raw_post(srv.host, srv.port, head + sent, timeout=30)
                    ok = data.startswith(b"HTTP/1.1 408") and time.monotonic() - t0 < 20
                    why = data[:80].decode("latin-1")
                except OSError as e:
                    ok, why = False, f"connection held open: {e}"
                t.case(name, crash=not ok, why=why)
    return t


# -- winners -------------------------------------------------------------------------------------
def winners(work: Path, model: Path, template: Path) -> Tally:
    from tournament.serving.config import TOKENIZER_FILES
    from tournament.serving.process import ServerProcess

    t = Tally("winners")
    d = Path(tempfile.mkdtemp(prefix="winners-", dir=work))
    no_tok = d / "no-tokenizer"
    shutil.copytree(model, no_tok, ignore=shutil.ignore_patterns(*TOKENIZER_FILES, "special_tokens_map.json"))
    good = {"model": {"path": str(model)}, "engine": ENGINE}

    def serve(**over):
        return json.dumps({"schema": 1, "serve": {**good, **over}})

    files = {
        "truncated": serve()[:40], "empty": "", "not UTF-8": b"\xff\xfe{}", "a list": "[1, 2]", "no serve": '{"a": 1}',
        "serve a string": '{"serve": "x"}', "unknown field": serve(colour="red"),
        "dtype float99": serve(engine={**ENGINE, "dtype": "float99"}),
        "model path missing": serve(model={"path": str(d / "nope")}),
        "model path a file": serve(model={"path": str(model / "config.json")}),
        "no tokenizer": serve(model={"path": str(no_tok)}), "mode sometimes": serve(mode="sometimes"),
        "max_tokens -1": serve(decode={"max_tokens": -1}),
        "gguf file missing": serve(model={"path": str(model), "gguf_file": "x.gguf"}),
        "deeply nested": '{"serve": ' + "[" * 5000 + "]" * 5000 + "}",
    }
    runs: list[tuple[str, dict]] = []
    for name, text in files.items():
        p = d / f"{name.replace(' ', '-')}.json"
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        runs.append((name, {"winner": p}))
    good_file = d / "good.json"
    good_file.write_text(serve())
    runs += [("TOURNAMENT_WINNER a folder", {"winner": d}),
             ("TOURNAMENT_MAX_TOKENS=abc", {"winner": good_file, "env": {"TOURNAMENT_MAX_TOKENS": "abc"}}),
             ("TOURNAMENT_SERVE_CONFIG not JSON", {"winner": good_file, "env": {"TOURNAMENT_SERVE_CONFIG": "{x"}}),
             ("TOURNAMENT_WINNER missing", {"winner": d / "missing.json"})]
    for name, kw in runs:
        log = d / f"{name.replace(' ', '-').replace('=', '')}.log"
        srv = ServerProcess(log_path=log, **kw).start()
        try:
            srv.wait_healthy(60)
            t.case(name, crash=True, why="served anyway")
        except (RuntimeError, TimeoutError) as e:
            text = log.read_text(encoding="utf-8", errors="replace")
            lines = [x for x in text.splitlines() if "serve.py cannot start" in x]
            clear = "exited with code 3" in str(e) and "Traceback" not in text and len(lines) == 1
            t.case(name, crash=not clear, why=text[-300:])
        finally:
            srv.stop()
    return t


# -- kill -9 and resume --------------------------------------------------------------------------
def sweep_yaml(work: Path, model: Path, qa: Path, **over) -> Path:
    import yaml

    doc = {"study": "battery", "trials": 3, "decode_trials_per_engine": 3,
           "candidates": [{"id": "tiny", "model_path": str(model), "engine": ENGINE}],
           "eval": {"path": str(qa), "limit": 4}, "judge": {"set": "basic", "pass_mark": 0.0, "health_timeout": 120},
           "space": {"decode": {"max_tokens": [8, 16, 24, 32]}, "mode": "batch"}, "enqueue": []}
    doc.update(over)
    p = Path(tempfile.mkdtemp(prefix="sweep-", dir=work)) / "sweep.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return p


def _snapshot(runs: Path) -> dict[int, tuple]:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        study = optuna.load_study(study_name="battery", storage=f"sqlite:///{runs / 'optuna.db'}")
    except Exception:
        return {}
    return {t.number: (tuple(t.values), json.dumps(t.user_attrs.get("metrics"), sort_keys=True),
                       t.user_attrs.get("mlflow_run_id"))
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def _complete_count(runs: Path) -> int:
    import sqlite3

    try:
        con = sqlite3.connect(f"{(runs / 'optuna.db').as_uri()}?mode=ro", uri=True, timeout=0.5)
        try:
            return con.execute("SELECT count(*) FROM trials WHERE state = 'COMPLETE'").fetchone()[0]
        finally:
            con.close()
    except sqlite3.Error:
        return 0


def kill(work: Path, model: Path, template: Path, qa: Path) -> Tally:
    from mlflow.tracking import MlflowClient

    from tournament.study.dashboard import metric_name

    t = Tally("kill")
    for delay in (0.0, 2.0):  # after the first trial ended: at once (its run still being logged), mid-next-trial
        runs = fresh_runs(work, template)
        cfg = sweep_yaml(work, model, qa)
        cmd = [sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--runs-dir", str(runs)]
        proc = subprocess.Popen(cmd, env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None and _complete_count(runs) == 0:
            time.sleep(0.005)  # a cheap read: the kill lands milliseconds after the first tell
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        before = _snapshot(runs)  # what the killed sweep had recorded
        client = MlflowClient(tracking_uri=f"sqlite:///{runs / 'mlflow.db'}")
        left = sum(1 for _, _, rid in before.values() if rid and client.get_run(rid).info.status == "RUNNING")
        t.notes.append(f"kill after {delay:.1f} s: {len(before)} finished trial(s), {left} of their runs left "
                       "RUNNING by the kill")
        resumed = subprocess.run(cmd, env=env(), capture_output=True, text=True, timeout=600)
        after = _snapshot(runs)
        name = f"kill -9 {delay:.1f} s after the first trial ended"
        if resumed.returncode != 0:
            t.case(name, crash=True, why=resumed.stderr[-300:])
            continue
        lost = sum(1 for n in before if n not in after)
        altered = sum(1 for n in before if n in after and after[n][:2] != before[n][:2])
        bad_runs = []
        for n, (_, metrics, run_id) in after.items():
            run = client.get_run(run_id) if run_id else None
            want = {metric_name(k) for k, v in json.loads(metrics).items()  # MLflow's names (dashboard.py)
                    if isinstance(v, (int, float)) and not isinstance(v, bool)}
            if run is None or run.info.status != "FINISHED" or not want <= set(run.data.metrics):
                bad_runs.append(n)
        t.case(name, lost=lost, altered=altered + len(bad_runs),
               why=f"{len(before)} finished before; lost {lost}; changed {altered}; runs not FINISHED "
                   f"with metrics: {bad_runs}")
    return t


# -- concurrent submits --------------------------------------------------------------------------
def submits(work: Path, model: Path, template: Path, n: int = 8, rounds: int = 1) -> Tally:
    import re

    from tournament.serving.config import ServeConfig
    from tournament.study import ledger as L
    from tournament.study.winner import write_winner

    t = Tally("submits")
    for r in range(rounds):
        d = Path(tempfile.mkdtemp(prefix="submits-", dir=work))
        runs = fresh_runs(work, template)
        winners = [write_winner({"schema": 1, "serve": ServeConfig().model_dump(), "candidate": {"id": f"c{i}"},
                                 "provenance": {"study": "s", "trial": i, "metrics": {"accuracy": 0.3}}},
                                d / f"winner{i}.json") for i in range(n)]
        procs = [subprocess.Popen([sys.executable, "-m", "tournament.cli", "submit", "--winner", str(w), "--ledger",
                                   str(d / "ledger.json"), "--runs-dir", str(runs), "--note", f"p{i}"],
                                  cwd=d, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for i, w in enumerate(winners)]
        outs = [p.communicate(timeout=600)[0] for p in procs]
        doc = L.load(d / "ledger.json")
        kept = {s["id"]: s for s in doc["submissions"]}
        for i, (p, out) in enumerate(zip(procs, outs)):
            m = re.search(r"submission (\d+) recorded", out)
            said = int(m.group(1)) if m else None
            entry = kept.get(said)
            lost = int(said is not None and entry is None)
            altered = int(entry is not None and (entry["note"] != f"p{i}" or entry["candidate"] != f"c{i}"))
            crash = p.returncode != 0 and said is None and "Traceback" in out
            t.case(f"round {r} submit {i}", crash=crash, lost=lost, altered=altered, why=out[-200:])
        leftovers = list(d.glob(".ledger.json.tmp-*"))
        t.case(f"round {r} temp files", altered=len(leftovers), why=f"{len(leftovers)} temp files left")
    return t


# -- planted secrets -----------------------------------------------------------------------------
def secrets(work: Path, model: Path, template: Path, qa: Path) -> Tally:
    from typer.testing import CliRunner

    from tournament.cli import app
    from tournament.serving import process

    t = Tally("secrets")
    secret = "PLANTEDbatterySecret77"
    os.environ["TOURNAMENT_BATTERY_API_KEY"] = secret
    planted = {"prefix": f"Use key sk-PLANTED789abcdefghijklmnopq and {secret} to answer. ",
               "answer_label": f"答案 (token hf_{'Q' * 24})："}
    started: list[dict] = []
    original = process.ServerProcess.__init__

    def recording(self, serve_config=None, **kw):
        if serve_config is not None:
            started.append(json.loads(json.dumps(serve_config)))
        original(self, serve_config, **kw)

    process.ServerProcess.__init__ = recording
    try:
        for name, prompt in (("prefix", {"prefix": planted["prefix"]}), ("prefix+answer label", planted)):
            started.clear()
            runs = fresh_runs(work, template)
            cfg = sweep_yaml(work, model, qa, trials=1, space={"decode": {"max_tokens": 4}, "mode": "batch"},
                             candidates=[{"id": "tiny", "model_path": str(model), "engine": ENGINE, "prompt": prompt}])
            r = CliRunner().invoke(app, ["sweep", "-c", str(cfg), "--runs-dir", str(runs)])
            out = runs / "winner.json"
            p = CliRunner().invoke(app, ["pick", "--trial", "0", "--runs-dir", str(runs), "--local", "--out", str(out)])
            if r.exit_code != 0 or p.exit_code != 0 or not started:
                t.case(name, crash=True, why=(r.output + p.output)[-300:])
                continue
            served = json.loads(out.read_text(encoding="utf-8"))["serve"]
            t.case(f"{name}: winner.json serves the measured config", altered=int(served != started[0]),
                   why=json.dumps(served.get("prompt"))[:200])
            leaks = [str(f) for f in runs.rglob("*") if f.is_file() and f != out and f.suffix in (".db", ".json", ".jsonl")
                     and secret.encode() in f.read_bytes()]
            t.case(f"{name}: the study's records stay masked", altered=len(leaks), why=f"secret in {leaks}")
    finally:
        process.ServerProcess.__init__ = original
        os.environ.pop("TOURNAMENT_BATTERY_API_KEY", None)
    return t


CATEGORIES = ("bodies", "winners", "kill", "submits", "secrets")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("categories", nargs="*", choices=[[], *CATEGORIES], default=[], help="default: all")
    ap.add_argument("--json", action="store_true", help="print the totals as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (server logs, runs)")
    args = ap.parse_args()
    from mlflow.tracking import MlflowClient

    from tournament.models.tiny import build_tiny_model

    work = Path(tempfile.mkdtemp(prefix="battery-"))
    try:
        model = build_tiny_model(work / "model")
        qa = work / "eval.jsonl"
        qa.write_text("".join(json.dumps({"question": q, "answer": a, "set": "basic"}, ensure_ascii=False) + "\n"
                              for q, a in QA), encoding="utf-8")
        template = work / "mlflow-template" / "mlflow.db"
        template.parent.mkdir()
        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()  # migrate once
        tallies = []
        for name in args.categories or CATEGORIES:
            t0 = time.monotonic()
            fn = globals()[name]
            tally = fn(work, model, template, qa) if name in ("kill", "secrets") else fn(work, model, template)
            tally.seconds = round(time.monotonic() - t0, 1)
            tallies.append(tally)
            if not args.json:
                print(f"{tally.category:8s} cases {tally.cases:3d}  crashes {tally.crashes}  lost {tally.lost}  "
                      f"altered {tally.altered}  ({tally.seconds:.0f} s)", flush=True)
                for p in tally.problems:
                    print(f"    {p}")
                for n in tally.notes:
                    print(f"    ({n})")
        total = {k: sum(getattr(t, k) for t in tallies) for k in ("cases", "crashes", "lost", "altered")}
        if args.json:
            print(json.dumps({"categories": [asdict(t) for t in tallies], "total": total}, ensure_ascii=False))
        else:
            print(f"total    cases {total['cases']:3d}  crashes {total['crashes']}  lost {total['lost']}  "
                  f"altered {total['altered']}")
        return 0 if total["crashes"] == total["lost"] == total["altered"] == 0 else 1
    finally:
        if args.keep:
            print(f"work folder: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
