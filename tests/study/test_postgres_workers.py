"""Two sweep workers (two processes) share one study on PostgreSQL: no trial lost or duplicated.

Starts its own throw-away cluster (initdb + pg_ctl, Debian's postgresql package) on a free port;
as root it runs the server as the `postgres` user. Skipped, with the reason, without the binaries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.study.test_sweep import sweep_file

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / name).exists():
            return str(d / name)
    return None


@pytest.fixture
def postgres_url(tmp_path):
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not found: apt-get install -y postgresql")
    try:
        import psycopg2  # noqa: F401
    except ImportError:
        pytest.skip("psycopg2 not installed (pip install psycopg2-binary)")
    from tournament.serving.process import free_port

    prefix: list[str] = []
    base = tmp_path / "pg"
    base.mkdir()
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        try:
            import pwd

            pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no `postgres` user to run the server")
        if not runuser:
            pytest.skip("running as root without runuser")
        prefix = [runuser, "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
        os.chmod(tmp_path, 0o755)
        for p in tmp_path.parents:  # the postgres user must reach the folder
            if str(p).startswith("/tmp/") or p == Path("/tmp"):
                os.chmod(p, os.stat(p).st_mode | 0o011)
    data, sock = base / "data", base / "sock"
    subprocess.run(prefix + [initdb, "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    subprocess.run(prefix + ["mkdir", "-p", str(sock)], check=True)
    port = free_port()
    subprocess.run(prefix + [pg_ctl, "-D", str(data), "-l", str(base / "pg.log"), "-w", "-t", "60", "-o",
                             f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
                   check=True, capture_output=True)
    try:
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=port, user="postgres", dbname="postgres")
        conn.autocommit = True
        conn.cursor().execute("CREATE DATABASE optuna")
        conn.close()
        yield f"postgresql://postgres@127.0.0.1:{port}/optuna"
    finally:
        subprocess.run(prefix + [pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)


def test_two_workers_share_one_study(tmp_path, tiny_model_dir, tiny_qa_file, postgres_url, runs_dir):
    import optuna
    from optuna.trial import TrialState

    from tournament.study.optuna_storage import make_storage

    cfg = sweep_file(tmp_path, tiny_model_dir, tiny_qa_file, trials=5, enqueue=[], study="pg",
                     candidates=[{"id": "tiny", "model_path": str(tiny_model_dir),
                                  "engine": {"engine": "transformers", "device": "cpu", "batch_size": 8}}],
                     space={"decode": {"max_tokens": [8, 16, 24], "repetition_penalty": [1.0, 1.1]}})
    make_storage(postgres_url)  # create the tables once, before the workers race for it
    cmd = [sys.executable, "-m", "tournament.cli", "sweep", "-c", str(cfg), "--storage", postgres_url,
           "--runs-dir", str(runs_dir), "--json"]
    workers = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [w.communicate(timeout=300) for w in workers]
    for w, (o, e) in zip(workers, outs):
        assert w.returncode == 0, o + e
    ran = [json.loads(o.strip().splitlines()[-1])["ran"] for o, _ in outs]
    study = optuna.load_study(study_name="pg", storage=make_storage(postgres_url))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    assert all(t.state == TrialState.COMPLETE for t in trials), [(t.number, t.state) for t in trials]
    # no trial run twice, none lost: the workers' lists are disjoint and cover the study
    assert not set(ran[0]) & set(ran[1])
    assert sorted(ran[0] + ran[1]) == sorted(numbers)
    assert ran[0] and ran[1]  # both workers did work
    measured = [t for t in trials if "duplicate_of" not in t.user_attrs]  # repeats reuse results, uncounted
    assert 5 <= len(measured) <= 6  # target 5; at most one extra from the race between workers
    assert {t.user_attrs["worker"] for t in trials} == {f"{os.uname().nodename}:{w.pid}" for w in workers}
