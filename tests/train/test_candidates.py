"""Candidate YAML schema, loader, config hash (no training here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tournament.candidates import CandidateError, load_candidate, parse_candidate

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, doc: dict, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    return p


def _doc(dataset: str | None = None, **recipe) -> dict:
    r = {"method": "lora", "dataset": dataset or "data.jsonl", **recipe}
    return {"id": "c1", "base": {"path": "some/model"}, "prompt": {"style": "chat"}, "recipe": r}


@pytest.fixture
def dataset(tmp_path) -> Path:
    p = tmp_path / "data.jsonl"
    p.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    return p


def test_unknown_field_is_named_with_the_file(tmp_path):
    doc = _doc()
    doc["recipe"]["learnig_rate"] = 1e-4
    p = _write(tmp_path, doc)
    with pytest.raises(CandidateError) as e:
        load_candidate(p)
    assert "recipe.learnig_rate" in str(e.value) and str(p) in str(e.value)


@pytest.mark.parametrize("patch, field", [
    ({"base": {"path": "x", "embedded": "gemma-3-270m"}}, "base"),
    ({"base": {"embedded": "gemma-2b"}}, "base.embedded"),
    ({"recipe": {"method": "qlora", "dataset": "d"}}, "recipe.method"),
    ({"recipe": {"method": "full"}}, "recipe"),  # no dataset
    ({"recipe": {"method": "full", "dataset": "d", "learning_rate": -1}}, "recipe.learning_rate"),
    ({"quantization": "int3"}, "quantization.method"),
    ({"quantization": {"method": "awq", "mode": "engine"}}, "quantization"),
    ({"prompt": {"style": "chat", "sytem": "x"}}, "prompt.sytem"),
    ({"serve": {"engine": {"gpu_mem": 0.5}}}, "serve.engine"),
    ({"id": "bad id!"}, "id"),
    ({"base": {"modelscope": {"id": "Qwen/Qwen3-0.6B", "rev": "x"}}}, "base.modelscope.rev"),
])
def test_schema_errors_name_the_field(tmp_path, patch, field):
    doc = {**_doc(), **patch}
    with pytest.raises(CandidateError) as e:
        load_candidate(_write(tmp_path, doc))
    assert f"  {field}" in str(e.value)


def test_bad_yaml_and_missing_file(tmp_path):
    p = tmp_path / "b.yaml"
    p.write_text("id: [unclosed\n")
    with pytest.raises(CandidateError, match="not valid YAML"):
        load_candidate(p)
    with pytest.raises(CandidateError, match="no such candidate"):
        load_candidate(tmp_path / "nope.yaml")
    p.write_text("- a list\n")
    with pytest.raises(CandidateError, match="mapping"):
        load_candidate(p)


def test_config_hash_stable_and_sensitive(tmp_path, dataset):
    a = load_candidate(_write(tmp_path, _doc(str(dataset)), "a.yaml"))
    # same content, different key order / irrelevant fields -> same hash
    doc = _doc(str(dataset))
    doc = {"recipe": doc["recipe"], "prompt": doc["prompt"], "base": doc["base"], "id": "other-id",
           "description": "x", "publish": {"modelscope_id": "me/x"}, "serve": {"decode": {"max_tokens": 9}}}
    b = load_candidate(_write(tmp_path, doc, "b.yaml"))
    assert a.config_hash() == b.config_hash()
    assert len(a.config_hash()) == 64
    # hyperparameters, prompt, base and max_steps change it
    assert parse_candidate(_doc(str(dataset), learning_rate=3e-4)).config_hash() != a.config_hash()
    d2 = _doc(str(dataset))
    d2["prompt"] = {"style": "plain"}
    assert parse_candidate(d2).config_hash() != a.config_hash()
    assert a.config_hash(max_steps=3) != a.config_hash()
    # a setting added later enters only when on: builds made before it keep their hash
    assert parse_candidate(_doc(str(dataset), group_by_length=False)).config_hash() == a.config_hash()
    assert parse_candidate(_doc(str(dataset), group_by_length=True)).config_hash() != a.config_hash()
    # the dataset enters by content, not by path
    h = a.config_hash()
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(dataset.read_bytes())
    assert parse_candidate(_doc(str(copy))).config_hash() == h
    dataset.write_text(json.dumps({"question": "q", "answer": "b"}) + "\n")
    assert a.config_hash() != h


def test_dataset_folder_and_missing_dataset(tmp_path):
    build = tmp_path / "build"
    build.mkdir()
    (build / "train.jsonl").write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    (build / "manifest.json").write_text("{}")
    c = parse_candidate(_doc(str(build)))
    assert c.dataset_file() == build / "train.jsonl"
    fp = c.dataset_fingerprint()
    assert "manifest_sha256" in fp and len(fp["sha256"]) == 64
    with pytest.raises(CandidateError, match="does not exist"):
        parse_candidate(_doc(str(tmp_path / "missing"))).config_hash()


def test_relative_paths_fall_back_to_the_yaml_folder(tmp_path, monkeypatch, dataset):
    monkeypatch.chdir(REPO)
    c = load_candidate(_write(tmp_path, _doc("data.jsonl")))
    assert c.dataset_file() == dataset


def test_quantization_shorthand_and_serve_overrides():
    c = parse_candidate({"id": "q", "base": {"embedded": "gemma-3-270m"}, "quantization": "fp8",
                         "serve": {"engine": {"max_model_len": 1024}, "decode": {"max_tokens": 96}}})
    assert c.quantization.mode == "engine" and not c.needs_build()
    ov = c.serve_overrides("models/x")
    assert ov["engine"] == {"max_model_len": 1024, "quantization": "fp8"}
    assert ov["decode"] == {"max_tokens": 96} and ov["model"] == {"path": "models/x"}
    g = parse_candidate({"id": "g", "base": {"embedded": "gemma-3-270m"}, "quantization": {"method": "gptq"}})
    assert g.quantization.mode == "checkpoint" and g.needs_build()
    # engine-side fp8 leaves the weights alone: same hash as no quantization
    n = parse_candidate({"id": "n", "base": {"embedded": "gemma-3-270m"}})
    assert n.config_hash() == c.config_hash() != g.config_hash()


def test_shipped_candidates_validate():
    cands = [load_candidate(p) for p in sorted((REPO / "candidates").glob("*.yaml"))]
    ids = {c.id for c in cands}
    assert len(ids) == len(cands) >= 10
    for need in ("qwen2.5-0.5b-instruct-lora", "qwen3-0.6b-full", "qwen3-4b-lora", "gemma-3-270m-base"):
        assert need in ids
    for c in cands:
        assert c.source and c.source.stem == c.id
        if c.base.modelscope:
            assert c.prompt.style == "chat"
        if c.base.embedded:
            assert c.prompt.style == "plain"
