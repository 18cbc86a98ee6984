"""The Dockerfiles, download_model.py and serve.py agree with winner.json (no Docker needed)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tournament.images import checks as images
from tournament.paths import REPO_ROOT
from tournament.serving.config import load_serve_config

WINNER = {
    "schema": 1,
    "serve": {
        "model": {"path": "models/winner", "modelscope_id": "someone/pmpp-qwen3-0.6b-sft", "revision": "v1"},
        "engine": {"engine": "vllm"},
    },
    "candidate": {"id": "c1", "config_hash": "abc", "base": "Qwen/Qwen3-0.6B", "recipe": {}},
    "provenance": {},
}


@pytest.fixture
def repo(tmp_path):
    """A copy of what the image build reads, plus a winner.json."""
    for name in ("Dockerfile", ".dockerignore", "download_model.py", "serve.py", "pyproject.toml"):
        shutil.copy2(REPO_ROOT / name, tmp_path / name)
    shutil.copytree(REPO_ROOT / "docker", tmp_path / "docker")
    (tmp_path / "tournament").symlink_to(REPO_ROOT / "tournament")
    (tmp_path / "winner.json").write_text(json.dumps(WINNER))
    return tmp_path


def _errors(findings):
    return [str(f) for f in findings if f.level == "error"]


def test_all_tracks_agree(repo):
    res = images.check_all(repo, repo / "winner.json")
    assert {k: _errors(v) for k, v in res.items()} == {k: [] for k in res}


def test_real_repo_dockerfiles_agree_with_a_winner(tmp_path):
    w = tmp_path / "winner.json"
    w.write_text(json.dumps(WINNER))
    for name, t in images.TRACKS.items():
        f = images.check_agreement(REPO_ROOT / t.dockerfile, t, w, REPO_ROOT, with_winner=False)
        assert _errors(f) == [], name


def test_committed_winner_if_any():
    import subprocess

    w = REPO_ROOT / "winner.json"
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", "winner.json"], cwd=REPO_ROOT,
                             capture_output=True).returncode == 0
    if not tracked:  # a local pick (the demo's next command) is not what the image will build
        pytest.skip("no winner.json committed yet (written by `tournament pick`, committed to submit)")
    assert _errors(images.check_winner(w, REPO_ROOT)) == []


def test_same_path_and_id_everywhere(repo):
    """download_model.py's destination == serve.py's model dir == the path inside the image."""
    dm = images.load_download_model(repo)
    plan = dm.plan(repo / "winner.json", env={})
    cfg, base = load_serve_config({"TOURNAMENT_WINNER": str(repo / "winner.json")})
    assert Path(plan["dest"]) == cfg.resolved_model_path(base) == repo / "models/winner"
    assert plan["model_id"] == cfg.model.modelscope_id == WINNER["serve"]["model"]["modelscope_id"]
    assert plan["revision"] == "v1"
    # in the image: winner.json at /app, so the model at /app/models/winner; the download step
    # reads /app/winner.json and the server's TOURNAMENT_WINNER is the same file
    p = images.plan_dockerfile((repo / "Dockerfile").read_text())
    assert images.image_path_of(p, "winner.json") == "/app/winner.json" == p.env["TOURNAMENT_WINNER"]
    assert images.image_path_of(p, "serve.py") == "/app/serve.py" and p.workdir == "/app"
    assert images.image_path_of(p, "tournament/serving/config.py") == "/app/tournament/serving/config.py"
    dl = [cmd for _, cmd, _, _ in p.runs if "download_model.py" in cmd]
    assert dl == ["python3 download_model.py /app/winner.json"]


@pytest.mark.parametrize(
    "patch,expect",
    [
        ({"modelscope_id": None}, "modelscope_id is empty"),
        ({"modelscope_id": "no-slash"}, "not OWNER/NAME"),
        ({"path": "/abs/models"}, "download_model.py rejects it"),
        ({"path": "../outside"}, "download_model.py rejects it"),
    ],
)
def test_bad_winner(repo, patch, expect):
    doc = json.loads(json.dumps(WINNER))
    doc["serve"]["model"].update(patch)
    (repo / "winner.json").write_text(json.dumps(doc))
    errs = _errors(images.check_winner(repo / "winner.json", repo))
    assert any(expect in e for e in errs), errs


def test_missing_winner(repo):
    (repo / "winner.json").unlink()
    assert any("tournament pick" in e for e in _errors(images.check_winner(repo / "winner.json", repo)))


def test_no_revision_is_a_warning(repo):
    doc = json.loads(json.dumps(WINNER))
    doc["serve"]["model"]["revision"] = None
    (repo / "winner.json").write_text(json.dumps(doc))
    f = images.check_winner(repo / "winner.json", repo)
    assert not _errors(f) and any("revision" in x.message for x in f)


@pytest.mark.parametrize(
    "old,new,expect",
    [
        ("COPY winner.json serve.py download_model.py /app/", "COPY winner.json serve.py download_model.py /srv/",
         "uvicorn serve:app` will not find it"),
        ("TOURNAMENT_WINNER=/app/winner.json", "TOURNAMENT_WINNER=/etc/winner.json", "serve.py reads"),
        ("RUN python3 download_model.py /app/winner.json", "RUN python3 download_model.py /tmp/winner.json",
         "download_model.py reads"),
        ("RUN python3 download_model.py /app/winner.json", "RUN true", "no RUN ... download_model.py"),
        ("COPY tournament/ /app/tournament/", "COPY tournament/ /opt/tournament/", "the package is under"),
        ("ENV PYTHONPATH=/app", "ENV TOURNAMENT_MODEL_PATH=/models/x PYTHONPATH=/app", "TOURNAMENT_MODEL_PATH"),
        ("COPY docker/requirements-serve.txt docker/pip-install-held.sh /app/docker/",
         "COPY docker/pip-install-held.sh /app/docker/", "requirements"),
    ],
)
def test_dockerfile_disagreements(repo, old, new, expect):
    text = (repo / "Dockerfile").read_text()
    assert old in text
    (repo / "Dockerfile").write_text(text.replace(old, new))
    f = images.lint_dockerfile(repo / "Dockerfile", images.TRACKS["metax"], repo) + images.check_agreement(
        repo / "Dockerfile", images.TRACKS["metax"], repo / "winner.json", repo)
    errs = _errors(f)
    assert any(expect in e for e in errs), errs


def test_download_before_copy_is_caught(repo):
    text = (repo / "Dockerfile").read_text()
    dl = "RUN python3 download_model.py /app/winner.json\n"
    text = text.replace(dl, "").replace("COPY winner.json", dl + "COPY winner.json")
    (repo / "Dockerfile").write_text(text)
    errs = _errors(images.check_agreement(repo / "Dockerfile", images.TRACKS["metax"], repo / "winner.json", repo))
    assert any("runs before" in e for e in errs), errs


def test_mthreads_needs_transformers_engine(repo):
    shutil.copy2(REPO_ROOT / "docker/mthreads.Dockerfile", repo / "docker/mthreads.Dockerfile")
    p = repo / "docker/mthreads.Dockerfile"
    p.write_text(p.read_text().replace("TOURNAMENT_ENGINE=transformers", "TOURNAMENT_ENGINE=vllm"))
    errs = _errors(images.check_agreement(p, images.TRACKS["mthreads"], repo / "winner.json", repo))
    assert any("TOURNAMENT_ENGINE=transformers" in e for e in errs), errs


# -- .dockerignore ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path,included",
    [
        ("serve.py", True), ("download_model.py", True), ("winner.json", True),
        ("tournament/serving/app.py", True), ("docker/requirements-serve.txt", True),
        ("tournament/__pycache__/x.pyc", False), ("tournament/serving/__pycache__/a.cpython-311.pyc", False),
        ("mlruns/mlflow.db", False), ("models/winner/model.safetensors", False), ("data/build/train.jsonl", False),
        ("builds/x/model.safetensors", False), ("checkpoints/step1/x", False), ("tests/test_x.py", False),
        (".git/HEAD", False), ("venv/bin/python", False), ("candidates/a.yaml", False),
    ],
)
def test_dockerignore(path, included):
    assert images.in_build_context(REPO_ROOT, path) is included


def test_dockerignore_semantics(tmp_path):
    (tmp_path / ".dockerignore").write_text("*\n!keep\n!src\nsrc/**/cache\n!src/a/cache/ok\n")
    assert images.in_build_context(tmp_path, "keep")
    assert not images.in_build_context(tmp_path, "other")
    assert images.in_build_context(tmp_path, "src/a/b.py")
    assert not images.in_build_context(tmp_path, "src/a/cache/x")
    assert images.in_build_context(tmp_path, "src/a/cache/ok")


def test_staged_layout_matches_image(repo, tmp_path):
    wd = images.stage_image_files(repo / "Dockerfile", tmp_path / "img", repo)
    assert wd == tmp_path / "img/app"
    for rel in ("serve.py", "download_model.py", "winner.json", "tournament/serving/app.py",
                "docker/requirements-serve.txt", "docker/pip-install-held.sh"):
        assert (wd / rel).is_file(), rel
    assert not list(wd.rglob("__pycache__"))


# -- budget + CLI --------------------------------------------------------------------------------


def test_budget_from_size_flag(repo):
    b = images.estimate_budget(repo / "winner.json", size_gb=1.2, online=False)
    assert b.verdict == "ok" and b.download_s == pytest.approx(96.0)
    b = images.estimate_budget(repo / "winner.json", size_gb=8.0, online=False)  # Qwen3-4B bf16
    assert b.verdict == "tight" and round(b.download_s) == 640
    b = images.estimate_budget(repo / "winner.json", size_gb=16.0, online=False)
    assert b.verdict == "over" and "time out" in b.message


def test_budget_from_local_dir(repo):
    d = repo / "models/winner"
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"\0" * 1_000_000)
    (d / ".tournament-download.json").write_text("{}")
    b = images.estimate_budget(repo / "winner.json", online=False)
    assert b.bytes == 1_000_000 and b.source.startswith("local:")


def test_budget_unknown_offline(repo):
    b = images.estimate_budget(repo / "winner.json", online=False)
    assert b.verdict == "unknown" and "--size-gb" in b.message


def test_cli_check(repo):
    from tournament.cli import app

    r = CliRunner().invoke(app, ["images", "check", "--winner", str(repo / "winner.json"), "--size-gb", "1",
                                 "--offline", "--no-hadolint", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.output)
    assert doc["ok"] and doc["budget"]["verdict"] == "ok"
    r = CliRunner().invoke(app, ["images", "check", "--winner", str(repo / "winner.json"), "--size-gb", "12",
                                 "--offline", "--no-hadolint"])
    assert r.exit_code == 0 and "over" in r.output  # a budget problem only warns...
    r = CliRunner().invoke(app, ["images", "check", "--winner", str(repo / "winner.json"), "--size-gb", "12",
                                 "--offline", "--no-hadolint", "--strict"])
    assert r.exit_code == 1  # ...unless --strict
    r = CliRunner().invoke(app, ["images", "check", "--winner", str(repo / "missing.json"), "--offline",
                                 "--no-hadolint"])
    assert r.exit_code == 1 and "tournament pick" in r.output


# -- engine settings against the MetaX image's vLLM 0.10.0 ----------------------------------------


@pytest.mark.parametrize(
    "engine,level,expect",
    [
        ({"compilation_config": {"cudagraph_mode": "FULL"}}, "error", "serve.engine.compilation_config: vLLM 0.10.0 has no cudagraph_mode"),
        ({"enable_chunked_prefill": False}, "warning", "enable_chunked_prefill=false: vLLM 0.10.0's V1 engine always chunks"),
    ],
)
def test_metax_checks_engine_settings_against_vllm_0_10_0(repo, engine, level, expect):
    doc = json.loads(json.dumps(WINNER))
    doc["serve"]["engine"].update(engine)
    (repo / "winner.json").write_text(json.dumps(doc))
    res = images.check_all(repo, repo / "winner.json")
    metax = [str(f) for f in res["metax"] if f.level == level]
    assert any(expect in m for m in metax), res["metax"]
    assert not any(expect in str(f) for f in res["paratera"] + res["winner"])  # that image's vLLM is not pinned
    from tournament.cli import app

    r = CliRunner().invoke(app, [
        "images", "check", "--winner", str(repo / "winner.json"), "--size-gb", "1", "--offline", "--no-hadolint",
        "--track", "metax"])
    assert (r.exit_code == 1) is (level == "error") and expect in r.output


def test_settings_that_vllm_0_10_0_has_pass_the_metax_check(repo):
    doc = json.loads(json.dumps(WINNER))
    doc["serve"]["engine"].update({"quantization": "fp8", "kv_cache_dtype": "fp8", "max_num_seqs": 384,
                                   "cudagraph_capture_sizes": [1, 2, 4, 8, 292, 358], "async_scheduling": True,
                                   "enable_chunked_prefill": True, "max_num_batched_tokens": 16384,
                                   "compilation_config": {"mode": 3, "inductor_compile_config": {"max_autotune": True}}})
    (repo / "winner.json").write_text(json.dumps(doc))
    assert images.check_agreement(repo / "Dockerfile", images.TRACKS["metax"], repo / "winner.json", repo) == []
    # the transformers engine passes no vLLM argument: nothing to check, whatever the settings
    doc["serve"]["engine"].update({"engine": "transformers", "compilation_config": {"cudagraph_mode": "FULL"}})
    (repo / "winner.json").write_text(json.dumps(doc))
    assert images.check_agreement(repo / "Dockerfile", images.TRACKS["metax"], repo / "winner.json", repo) == []
