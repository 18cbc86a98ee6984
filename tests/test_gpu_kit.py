"""The offline GPU kit (scripts/gpu/kit.sh): its lock, its helpers and the check's module discovery.
Cheap and offline: nothing is downloaded (kit.sh itself needs PyPI and is run by hand)."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "scripts" / "gpu"
VLLM_KIT = REPO.parent / "shared" / "scripts" / "vllm-kit.sh"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, GPU / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


kit_lock = _load("kit_lock")
kit_check = _load("kit_check")


@pytest.fixture(scope="module")
def lock():
    return {e.name: e for e in kit_lock.parse_lock((GPU / "kit.lock").read_text())}


def test_lock_pins_what_a_gpu_run_needs(lock):
    shipped = {n for n, e in lock.items() if e.kind != "check-only"}
    need = {"cryptography", "cffi", "pycparser", "mlflow-skinny", "optuna", "sqlalchemy", "alembic",
            "colorlog", "mako", "markupsafe", "fastapi", "starlette", "uvicorn", "pydantic", "pydantic-core",
            "jieba", "rouge-score", "nltk", "absl-py", "typer", "click", "rich", "httpx", "pyyaml",
            "python-docx", "lxml", "cachetools", "tqdm"}
    assert need <= shipped, f"missing from kit.lock: {sorted(need - shipped)}"
    # The machine's torch brings these; a second copy would shadow the one torch was built with.
    assert {lock["numpy"].kind, lock["protobuf"].kind} == {"check-only"}
    assert lock["jieba"].kind == lock["rouge-score"].kind == "sdist"  # no wheels on the index
    assert all(kit_lock.HEX64.match(e.sha256) for e in lock.values())


def test_lock_covers_pyproject(lock, tmp_path):
    """Every core/serve/sweep/data requirement is locked (relock after adding one), at its == pin."""
    kit_lock.main(["requirements", "--pyproject", str(REPO / "pyproject.toml"),
                   "--req", str(tmp_path / "req.in"), "--constraints", str(tmp_path / "c.txt")])
    for req in (tmp_path / "req.in").read_text().split():
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)(?:==([^,;\s]+))?", req)
        name = kit_lock.canon(m.group(1))
        assert name in lock, f"{req} (pyproject.toml) is not in kit.lock: run scripts/gpu/kit.sh --relock"
        if m.group(2):
            assert lock[name].version == m.group(2), req
    assert "psycopg2-binary" not in lock and "mlflow" not in lock  # left out / mlflow-skinny instead


@pytest.mark.skipif(not VLLM_KIT.exists(), reason="../shared/scripts/vllm-kit.sh not beside the repo")
def test_lock_agrees_with_the_vllm_kit(lock):
    """A package both ship must be the same wheel: same version and sha256 as vllm-kit.sh pins."""
    kit = {kit_lock.canon(n): (v, h) for n, v, h in
           re.findall(r"^([A-Za-z0-9._-]+)==(\S+) --hash=sha256:([0-9a-f]{64})", VLLM_KIT.read_text(), re.M)}
    shared = set(kit) & set(lock)
    assert {"pydantic", "fastapi", "starlette", "cachetools"} <= shared
    for name in shared:
        assert (lock[name].version, lock[name].sha256) == kit[name], name


def test_parse_lock_rejects_two_versions_and_bad_lines():
    h = "a" * 64
    assert kit_lock.parse_lock(f"# c\nFoo_Bar==1.0 {h}  # note\nbaz==2 {h} sdist\n")[0].name == "foo-bar"
    with pytest.raises(ValueError, match="one version per package"):
        kit_lock.parse_lock(f"foo==1.0 {h}\nFoo==1.1 {h}\n")
    with pytest.raises(ValueError, match="no sha256"):
        kit_lock.parse_lock("foo==1.0\n")
    with pytest.raises(ValueError):
        kit_lock.parse_lock(f"foo>=1.0 {h}\n")
    with pytest.raises(ValueError):
        kit_lock.parse_lock(f"foo==1.0 {h} binary\n")


def test_file_names():
    assert kit_lock.file_name_version("PyYAML-6.0.4-cp312-cp312-manylinux2014_x86_64.whl") == ("pyyaml", "6.0.4")
    assert kit_lock.file_name_version("rouge_score-0.1.2.tar.gz") == ("rouge-score", "0.1.2")


def test_verify_and_one_version(tmp_path):
    dl = tmp_path / "dl"
    dl.mkdir()
    (dl / "foo-1.0-py3-none-any.whl").write_bytes(b"foo")
    (dl / "bar-2.0.tar.gz").write_bytes(b"bar")
    good = f"foo==1.0 {kit_lock.sha256(dl / 'foo-1.0-py3-none-any.whl')}\nbar==2.0 {kit_lock.sha256(dl / 'bar-2.0.tar.gz')} sdist\n"
    (tmp_path / "kit.lock").write_text(good)
    kit_lock.main(["verify", "--lock", str(tmp_path / "kit.lock"), "--dir", str(dl), "--sort-into", str(tmp_path / "k")])
    assert (tmp_path / "k" / "sdist" / "bar-2.0.tar.gz").exists()
    (dl / "foo-1.0-py3-none-any.whl").write_bytes(b"foo")  # sorted away above: back for the next checks
    (tmp_path / "bad.lock").write_text(f"foo==1.0 {'0' * 64}\n")
    with pytest.raises(SystemExit, match="sha256"):
        kit_lock.main(["verify", "--lock", str(tmp_path / "bad.lock"), "--dir", str(dl)])

    sums = tmp_path / "SHA256SUMS"
    sums.write_text(f"{kit_lock.sha256(dl / 'foo-1.0-py3-none-any.whl')}  ./foo-1.0-py3-none-any.whl\n")
    kit_lock.main(["one-version", "--kit-sums", str(sums), str(dl)])  # the same file twice: fine
    (dl / "foo-1.0-py3-none-any.whl").rename(dl / "foo-1.1-py3-none-any.whl")
    with pytest.raises(SystemExit, match="foo: 1.1 in .* but 1.0 in the vLLM kit"):
        kit_lock.main(["one-version", "--kit-sums", str(sums), str(dl)])


def test_pack_and_upload_calls(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for name, mib in (("a", 30), ("b", 25), ("c", 20), ("d", 1)):
        (src / f"{name}-1.0-py3-none-any.whl").write_bytes(b"\0" * (mib << 20))
    kit_lock.main(["pack", "--src", str(src), "--dest", str(tmp_path / "whl"), "--mb", "50"])
    folders = sorted((tmp_path / "whl").iterdir())
    assert [f.name for f in folders] == ["w00", "w01"]
    assert all(kit_lock.folder_bytes(f) <= 50 << 20 for f in folders)
    calls = kit_lock.upload_calls([("w00", 50 << 20), ("w01", 26 << 20), ("p00", 50 << 20), ("c06", 6 << 20)], 50 << 20)
    assert calls == [["w00"], ["w01", "c06"], ["p00"]]


def _write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text)


def test_discovery_finds_every_mlflow_or_optuna_importer(tmp_path):
    _write(tmp_path, "tournament/__init__.py", "")
    _write(tmp_path, "tournament/top.py", "import mlflow\n")
    _write(tmp_path, "tournament/study/__init__.py", "from optuna.trial import TrialState\n")
    _write(tmp_path, "tournament/study/lazy.py", "def f():\n    import optuna.storages as s\n    return s\n")
    _write(tmp_path, "tournament/judge/opt.py", "try:\n    import mlflow\nexcept ImportError:\n    mlflow = None\n")
    _write(tmp_path, "tournament/judge/plain.py", "# mlflow and optuna, only in words\nX = 'import optuna'\n")
    _write(tmp_path, "tournament/judge/near.py", "import mlflow_helpers, optunax\nfrom .mlflow import y\n")
    assert kit_check.discover_modules(tmp_path) == [
        "tournament.judge.opt", "tournament.study", "tournament.study.lazy", "tournament.top"]
    tree = __import__("ast").parse((tmp_path / "tournament/judge/opt.py").read_text())
    assert [(top, guarded) for _, top, guarded in kit_check.import_statements(tree)] == [("mlflow", True)]


def test_discovery_on_this_repo():
    """Wherever the modules live now, the check finds importers of both mlflow and optuna."""
    found = kit_check.discover_modules(REPO)
    assert found and all(m.startswith("tournament") for m in found)
    texts = [(REPO / (m.replace(".", "/") + ".py")).read_text() if (REPO / (m.replace(".", "/") + ".py")).exists()
             else (REPO / m.replace(".", "/") / "__init__.py").read_text() for m in found]
    assert any("mlflow" in t for t in texts) and any("optuna" in t for t in texts)


@pytest.mark.parametrize("script", ["kit.sh", "run.sh", "stage.sh"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(GPU / script)], check=True)


OVERLAYS = sorted((GPU / "overlays").glob("*.json"))


@pytest.mark.parametrize("overlay", OVERLAYS, ids=[p.name for p in OVERLAYS])
def test_overlays_merge_into_a_sweep_whose_enqueued_values_are_in_its_space(overlay):
    """What sweep.sh does with SWEEP_OVERLAY (deep_merge over the sweep file), and each enqueued
    entry names a candidate, prompt and values its space offers: a typo here would only show on the
    GPU machine, after the uploads."""
    import json

    import yaml

    from tournament.serving.config import deep_merge
    from tournament.study.config import Choices, encode_choice, normalize_param, parse_sweep_config

    base = REPO / "sweeps" / ("gpu-gemma-recipes.yaml" if overlay.name.startswith("recipes") else "gpu-gemma.yaml")
    cfg = parse_sweep_config(deep_merge(yaml.safe_load(base.read_text()), json.loads(overlay.read_text())))
    ids = {c.id if hasattr(c, "id") else Path(str(c)).stem for c in cfg.candidates}  # inline or a YAML path
    assert cfg.enqueue and set(cfg.space.candidate or ids) <= ids
    for entry in cfg.enqueue:
        assert entry.get("candidate", next(iter(ids))) in ids, entry
        assert entry.get("prompt") in (None, *(cfg.space.prompt or {})), entry
        for section in ("engine", "decode"):
            for k, v in (entry.get(section) or {}).items():
                spec = cfg.space.params(section).get(k)
                p = normalize_param(f"{section}.{k}", spec)
                if isinstance(p, Choices):
                    assert encode_choice(v) in [encode_choice(c) for c in p.choices], (overlay.name, k, v)
                elif p is None:
                    assert spec == v, (overlay.name, k, v, spec)


@pytest.mark.parametrize("judged, size", [("basic", 292), ("bonus", 358)])
def test_the_gpu_sweeps_speed_post_follows_the_judged_set(judged, size, tmp_path):
    """sweep.sh's merge (scripts/gpu/merge_overlay.py): the speed proof, and with
    SWEEP_OVERLAY_EXTRA='{"judge": {"set": "bonus"}}' the same proof picked on the bonus set, whose
    speed POST is then the bonus set's 358 questions (gpu-gemma.yaml leaves its size to the set)."""
    import json
    import os
    import subprocess
    import sys

    from tournament.study.config import load_sweep_config

    out = REPO / "sweeps" / f".overlay-test-{judged}.yaml"  # beside the sweep file: its paths resolve alike
    env = {**os.environ, "PYTHONPATH": str(REPO), "SWEEP_OVERLAY": "scripts/gpu/overlays/speed-proof.json",
           "SWEEP_OVERLAY_EXTRA": json.dumps({"judge": {"set": judged}}) if judged != "basic" else ""}
    try:
        subprocess.run([sys.executable, "scripts/gpu/merge_overlay.py", "sweeps/gpu-gemma.yaml", str(out)],
                       cwd=REPO, env=env, check=True, timeout=120)
        cfg = load_sweep_config(out)
    finally:
        out.unlink(missing_ok=True)
    assert cfg.judge.set == judged and (cfg.speed.questions or cfg.judge.questions) == size
    assert len(cfg.enqueue) == 6 and cfg.speed_repeats == 2  # the overlay's


def test_the_swap_probe_compares_a_swapped_server_with_a_fresh_one(tmp_path, tiny_qa_file):
    """scripts/gpu/swap_probe.py on the tests' engine: two tiny builds of one architecture with
    other weights; the swapped server must answer as the fresh one (0 answers differ), and the two
    builds must answer differently (else the probe could not tell a swap that did nothing)."""
    import json
    import os
    import subprocess
    import sys

    from tests.conftest import spread_weights
    from tournament.models.tiny import build_tiny_model

    builds = [str(spread_weights(build_tiny_model(tmp_path / name, seed=seed), seed)) for name, seed in (("a", 0), ("b", 1))]
    env = {**os.environ, "PYTHONPATH": str(REPO), "SWAP_PROBE_ENGINE": "transformers", "SWAP_PROBE_TOKENS": "6",
           "SWAP_PROBE_EVAL": str(tiny_qa_file), "SWAP_PROBE_WORK": str(tmp_path / "work")}
    out = tmp_path / "probe.json"
    r = subprocess.run([sys.executable, "scripts/gpu/swap_probe.py", str(out), *builds], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    doc = json.loads(out.read_text())
    assert doc["swapped"] and doc["swap_s"] is not None and doc["questions"] == 6
    assert doc["answers_differ_swapped_vs_fresh"] == 0 and doc["answers_differ_a_vs_b"] > 0
    assert doc["b_swapped"]["accuracy"] == doc["b_fresh"]["accuracy"]


def test_the_build_table_reads_each_trained_builds_manifest(tiny_model_dir, tmp_path):
    """scripts/gpu/build_table.py over a real build: one line per trained build (an imported base,
    with no training, is left out), its steps, time, peak and loss path."""
    import json
    import subprocess
    import sys

    from tests.train.test_train import _cand
    from tournament.train.build import ensure_built

    data = tmp_path / "pmpp-refit" / "train.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}."}) + "\n" for i in range(8)),
                    encoding="utf-8")
    ensure_built(_cand(tiny_model_dir, data, "lora", cid="t", rank=4), tmp_path / "builds", max_steps=2)
    (tmp_path / "builds" / "base-x").mkdir()
    (tmp_path / "builds" / "base-x" / "candidate.json").write_text(json.dumps({"id": "base"}))
    out = tmp_path / "builds.tsv"
    subprocess.run([sys.executable, "scripts/gpu/build_table.py", str(tmp_path / "builds"), str(out)], cwd=REPO,
                   check=True, timeout=60)
    head, *lines = [line.split("\t") for line in out.read_text().splitlines()]
    assert len(lines) == 1
    row = dict(zip(head, lines[0]))
    assert row["role"] == "refit" and row["method"] == "lora" and row["rank"] == "4" and row["steps"] == "2"
    assert float(row["train_s"]) > 0 and row["loss_logits"] == "trained positions" and row["peak_alloc_gib"]
    assert float(row["wall_s"]) >= float(row["train_s"]) and row["at_once"] == "1"  # built alone


def test_the_memory_table_reports_the_build_its_run_trained(tiny_model_dir, tmp_path, monkeypatch):
    """scripts/gpu/train_memory.py, run twice into one work folder with another TRAINMEM_MAX_STEPS
    (another config hash: a second build beside the first): each row is its own run's build."""
    import json

    import yaml

    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", "expandable_segments:True")  # the script sets it by default
    train_memory = _load("train_memory")
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps({"question": f"q{i}?", "answer": f"a{i}."}) + "\n" for i in range(8)),
                    encoding="utf-8")
    cand = tmp_path / "t.yaml"
    cand.write_text(yaml.safe_dump({"id": "t", "base": {"path": str(tiny_model_dir)}, "prompt": {"style": "plain"},
                                    "recipe": {"method": "lora", "rank": 4, "dataset": str(data), "batch_size": 2,
                                               "epochs": 1, "max_length": 64}}), encoding="utf-8")
    work = tmp_path / "work"
    work.mkdir()
    rows = []
    for steps in ("3", "1", "3"):  # the folders' names are hashes: the earlier build sorts either way
        monkeypatch.setenv("TRAINMEM_MAX_STEPS", steps)
        rows.append(train_memory.train(cand, "false", work))
    assert [r["ok"] for r in rows] == [True, True, True], rows
    assert [r["steps"] for r in rows] == [3, 1, 3]
    assert len(list((work / "builds-liger-false").glob("t-*/candidate.json"))) == 2


def test_the_db_snapshot_of_a_live_sweep_is_whole(tmp_path):
    """scripts/gpu/db_snapshot.py while a writer adds trials to an Optuna sqlite study: every
    snapshot is an intact database whose study loads, and the journal is copied beside it; a
    database the backup cannot read comes back as its file and costs the others nothing."""
    import sqlite3
    import subprocess
    import sys
    import threading

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    work = tmp_path / "work"
    (work / "mlruns").mkdir(parents=True)
    url = f"sqlite:///{work / 'mlruns' / 'optuna.db'}"
    study = optuna.create_study(study_name="live", storage=url)
    (work / "mlruns" / "optuna.journal").write_text("{}\n")
    (work / "mlruns" / "mlflow.db").write_bytes(b"not a database" * 100)
    stop = threading.Event()

    def write():
        while not stop.is_set():
            study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)

    writer = threading.Thread(target=write)
    writer.start()
    counts = []
    try:
        for _ in range(3):
            snap = tmp_path / "snap"
            subprocess.run([sys.executable, str(GPU / "db_snapshot.py"), str(work), str(snap)], check=True, timeout=60)
            db = snap / "mlruns" / "optuna.db"
            with sqlite3.connect(db) as con:
                assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            counts.append(len(optuna.load_study(study_name="live", storage=f"sqlite:///{db}").trials))
            assert (snap / "mlruns" / "optuna.journal").read_text() == "{}\n"
            assert (snap / "mlruns" / "mlflow.db").read_bytes() == b"not a database" * 100
    finally:
        stop.set()
        writer.join()
    assert counts == sorted(counts) and counts[-1] > 0
