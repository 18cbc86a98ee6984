"""download_model.py and tournament.models.hub against local sources (and a fake modelscope)."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
import types
from pathlib import Path

import pytest

from tournament.models import hub
from tournament.paths import REPO_ROOT
from tournament.serving.config import load_serve_config

sys.path.insert(0, str(REPO_ROOT))
import download_model  # noqa: E402


@pytest.fixture
def tiny(tiny_model_dir):  # tests/conftest.py: built once per session; tests only read it
    return tiny_model_dir


def _winner(tmp_path, **model):
    m = {"path": "models/winner", "modelscope_id": "someone/tiny", "revision": "v1", **model}
    w = tmp_path / "winner.json"
    w.write_text(json.dumps({"schema": 1, "serve": {"model": m}}))
    return w


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


def test_verify_tiny(tiny):
    r = hub.verify_model_dir(tiny)
    assert r.weights == ["model.safetensors"] and r.total_bytes > 0 and not r.warnings


def test_local_download_lands_where_serve_looks(tmp_path, tiny, capsys):
    w = _winner(tmp_path)
    assert download_model.main([str(w), "--source", "local", "--from", str(tiny)]) == 0
    cfg, base = load_serve_config({"TOURNAMENT_WINNER": str(w)})
    dest = cfg.resolved_model_path(base)
    assert dest == tmp_path / "models/winner"
    assert (dest / "model.safetensors").read_bytes() == (tiny / "model.safetensors").read_bytes()
    marker = hub.read_marker(dest)
    assert marker["source"] == "local" and marker["revision"] == "v1" and marker["bytes"] > 0
    out = capsys.readouterr().out
    assert "ok:" in out and "model.safetensors" in out
    # second run: already there
    assert download_model.main([str(w), "--source", "local", "--from", str(tiny)]) == 0
    assert "nothing to do" in capsys.readouterr().out
    # --force replaces the folder (a stray file disappears)
    (dest / "stray.bin").write_bytes(b"x")
    assert download_model.main([str(w), "--source", "local", "--from", str(tiny), "--force"]) == 0
    assert not (dest / "stray.bin").exists()
    assert not list(tmp_path.glob("models/.winner.*"))  # no partial/old folders left


def test_winner_from_env_and_dry_run(tmp_path, tiny, monkeypatch, capsys):
    w = _winner(tmp_path, path="weights/best")
    monkeypatch.setenv("TOURNAMENT_WINNER", str(w))
    assert download_model.main(["--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["dest"] == str(tmp_path / "weights/best") and plan["model_id"] == "someone/tiny"


def test_config_problems(tmp_path, tiny, capsys):
    assert download_model.main([str(tmp_path / "nope.json")]) == 2
    assert "tournament pick" in capsys.readouterr().out
    w = _winner(tmp_path, modelscope_id=None)
    assert download_model.main([str(w)]) == 2
    assert "modelscope_id" in capsys.readouterr().out
    assert download_model.main([str(w), "--source", "local"]) == 2
    (tmp_path / "bad.json").write_text("{not json")
    assert download_model.main([str(tmp_path / "bad.json")]) == 2
    w = _winner(tmp_path, path="/abs/path")
    assert download_model.main([str(w), "--source", "local", "--from", str(tiny)]) == 2
    assert "relative" in capsys.readouterr().out


def _truncate(d: Path):
    p = d / "model.safetensors"
    p.write_bytes(p.read_bytes()[:-100])


def _lfs(d: Path):
    (d / "model.safetensors").write_text("version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 123\n")


def _shard_index(d: Path):
    (d / "model.safetensors.index.json").write_text(json.dumps(
        {"weight_map": {"a": "model.safetensors", "b": "model-00002-of-00002.safetensors"}}))


@pytest.mark.parametrize(
    "damage,expect",
    [
        (lambda d: (d / "config.json").unlink(), "config.json is missing"),
        (lambda d: (d / "config.json").write_text("{"), "config.json is not valid JSON"),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer file"),
        (lambda d: (d / "model.safetensors").unlink(), "no weight files"),
        (lambda d: (d / "model.safetensors").write_bytes(b""), "model.safetensors is empty"),
        (_truncate, "truncated"),
        (_lfs, "LFS pointer"),
        (_shard_index, "model-00002-of-00002.safetensors"),
    ],
)
def test_incomplete_model_fails_the_build(tmp_path, tiny, capsys, damage, expect):
    src = _copy(tiny, tmp_path / "src")
    damage(src)
    w = _winner(tmp_path)
    assert download_model.main([str(w), "--source", "local", "--from", str(src)]) == 4
    out = capsys.readouterr().out
    assert expect in out, out
    assert not (tmp_path / "models/winner").exists()  # nothing half-done left behind
    assert not list((tmp_path / "models").glob(".*"))


def test_failed_download_keeps_previous_model(tmp_path, tiny):
    w = _winner(tmp_path)
    assert download_model.main([str(w), "--source", "local", "--from", str(tiny)]) == 0
    bad = _copy(tiny, tmp_path / "bad")
    _truncate(bad)
    assert download_model.main([str(w), "--source", "local", "--from", str(bad), "--force"]) == 4
    hub.verify_model_dir(tmp_path / "models/winner")  # the good copy is still there


def test_gguf_model(tmp_path):
    d = tmp_path / "g"
    d.mkdir()
    (d / "m.Q4_K_M.gguf").write_bytes(b"GGUF" + b"\0" * 64)
    assert hub.verify_model_dir(d, gguf_file="m.Q4_K_M.gguf").weights == ["m.Q4_K_M.gguf"]
    (d / "m.Q4_K_M.gguf").write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(hub.ModelDirInvalid, match="magic"):
        hub.verify_model_dir(d, gguf_file="m.Q4_K_M.gguf")


def test_safetensors_check_on_handmade_file(tmp_path):
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    p = tmp_path / "x.safetensors"
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    assert hub._check_safetensors(p) is None
    p.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 9)
    assert "should be" in hub._check_safetensors(p)


# -- the modelscope path, with a fake modelscope module (no network here) -----------------------


class NotExistError(Exception):
    pass


def _fake_modelscope(monkeypatch, fn):
    calls = []

    def snapshot_download(model_id, **kw):
        calls.append((model_id, kw))
        return fn(model_id, **kw)

    mods = {name: types.ModuleType(name) for name in ("modelscope", "modelscope.hub", "modelscope.hub.snapshot_download")}
    mods["modelscope.hub.snapshot_download"].snapshot_download = snapshot_download
    for k, v in mods.items():
        monkeypatch.setitem(sys.modules, k, v)
    return calls


def test_modelscope_missing_repo(tmp_path, monkeypatch, capsys):
    def fail(model_id, **kw):
        raise NotExistError(f"The model: {model_id} not exist")

    calls = _fake_modelscope(monkeypatch, fail)
    w = _winner(tmp_path)
    assert download_model.main([str(w)]) == 3
    out = capsys.readouterr().out
    assert "someone/tiny" in out and "public" in out and "v1" in out
    assert calls[0][1]["revision"] == "v1"
    assert not (tmp_path / "models/winner").exists()


def test_modelscope_other_failure(tmp_path, monkeypatch, capsys):
    def fail(model_id, **kw):
        raise ConnectionError("connection reset")

    _fake_modelscope(monkeypatch, fail)
    assert download_model.main([str(_winner(tmp_path))]) == 3
    assert "connection reset" in capsys.readouterr().out


def test_modelscope_success(tmp_path, tiny, monkeypatch):
    def fetch(model_id, *, revision, local_dir, **kw):
        shutil.copytree(tiny, local_dir, dirs_exist_ok=True)
        (Path(local_dir) / "._____temp").mkdir()
        return local_dir

    calls = _fake_modelscope(monkeypatch, fetch)
    w = _winner(tmp_path)
    assert download_model.main([str(w)]) == 0
    model_id, kw = calls[0]
    assert model_id == "someone/tiny" and kw["revision"] == "v1"
    assert "token" not in json.dumps({k: str(v) for k, v in kw.items()}).lower()
    dest = tmp_path / "models/winner"
    hub.verify_model_dir(dest)
    assert not (dest / "._____temp").exists()
    assert hub.read_marker(dest)["model_id"] == "someone/tiny"


def test_modelscope_not_installed(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "modelscope", None)
    monkeypatch.setitem(sys.modules, "modelscope.hub", None)
    monkeypatch.setitem(sys.modules, "modelscope.hub.snapshot_download", None)
    assert download_model.main([str(_winner(tmp_path))]) == 3
    assert "pip install modelscope" in capsys.readouterr().out


def test_upload_needs_token_from_env(tmp_path, tiny, monkeypatch):
    monkeypatch.delenv(hub.TOKEN_ENV, raising=False)
    with pytest.raises(hub.HubError, match=hub.TOKEN_ENV):
        hub.upload(tiny, "someone/tiny")


def test_script_stays_light(tmp_path, tiny):
    """Run as the build runs it: a subprocess, no torch/transformers imported."""
    w = _winner(tmp_path)
    code = (
        "import runpy, sys\n"
        f"sys.argv = ['download_model.py', {str(w)!r}, '--source', 'local', '--from', {str(tiny)!r}]\n"
        "try:\n"
        f"    runpy.run_path({str(REPO_ROOT / 'download_model.py')!r}, run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        "heavy = [m for m in ('torch', 'transformers', 'vllm', 'optuna', 'mlflow', 'peft', 'fastapi') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "print('light ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert r.returncode == 0 and "light ok" in r.stdout, r.stdout + r.stderr
