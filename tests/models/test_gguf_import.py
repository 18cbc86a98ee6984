"""A real GGUF import on CPU: a tiny llama GGUF written with gguf's own writer (float32 tensors, an
SPM vocabulary of single letters), imported into an HF folder that loads and computes what
transformers' direct GGUF load computes; the file's metadata is parsed once per import, not once
each for the tokenizer, the config and the weights (gemma-3's 262k-token vocabulary made each parse
~10 s of a ~48 s import)."""

from __future__ import annotations

import json
import string
from pathlib import Path

import pytest

gguf = pytest.importorskip("gguf")


def write_tiny_llama_gguf(path: Path, *, hidden: int = 32, layers: int = 2, heads: int = 4, kv_heads: int = 2,
                          ffn: int = 64) -> Path:
    """A llama GGUF with random float32 weights; its vocabulary: three specials and the letters
    (with and without the word-start mark), too few whole words for the tokenizer check to judge."""
    import numpy as np

    letters = list(string.ascii_lowercase)
    tokens = ["<unk>", "<s>", "</s>"] + ["\u2581" + c for c in letters] + letters
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_context_length(128)
    w.add_embedding_length(hidden)
    w.add_block_count(layers)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_rope_freq_base(10000.0)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * 3 + [-float(i) for i in range(len(tokens) - 3)])
    w.add_token_types([2, 3, 3] + [1] * (len(tokens) - 3))  # unknown, control, control, normal
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_vocab_size(len(tokens))
    rng = np.random.default_rng(0)

    def weight(name: str, *shape: int) -> None:
        w.add_tensor(name, (rng.standard_normal(shape) * 0.02).astype(np.float32))

    head = hidden // heads
    weight("token_embd.weight", len(tokens), hidden)
    for i in range(layers):
        weight(f"blk.{i}.attn_q.weight", hidden, hidden)
        weight(f"blk.{i}.attn_k.weight", kv_heads * head, hidden)
        weight(f"blk.{i}.attn_v.weight", kv_heads * head, hidden)
        weight(f"blk.{i}.attn_output.weight", hidden, hidden)
        weight(f"blk.{i}.ffn_gate.weight", ffn, hidden)
        weight(f"blk.{i}.ffn_up.weight", ffn, hidden)
        weight(f"blk.{i}.ffn_down.weight", hidden, ffn)
        w.add_tensor(f"blk.{i}.attn_norm.weight", np.ones(hidden, np.float32))
        w.add_tensor(f"blk.{i}.ffn_norm.weight", np.ones(hidden, np.float32))
    w.add_tensor("output_norm.weight", np.ones(hidden, np.float32))
    weight("output.weight", len(tokens), hidden)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def tiny_gguf(tmp_path) -> Path:
    (tmp_path / "src").mkdir()
    return write_tiny_llama_gguf(tmp_path / "src" / "tiny.gguf")


def test_an_imported_gguf_loads_and_computes_as_the_file_does(tiny_gguf, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tournament.models.gguf_import import import_gguf

    out = import_gguf(tiny_gguf, tmp_path / "hf", dtype="float32")
    record = json.loads((out / "import.json").read_text())
    assert record["architecture"] == "LlamaForCausalLM" and record["source"] == "tiny.gguf"
    assert record["tokenizer_word_split_share"] is None  # letters only: nothing to judge
    imported = AutoModelForCausalLM.from_pretrained(str(out))
    direct = AutoModelForCausalLM.from_pretrained(str(tiny_gguf.parent), gguf_file=tiny_gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    ids = tokenizer("a kernel launch", return_tensors="pt").input_ids
    assert ids.shape[1] > 3
    with torch.no_grad():
        assert torch.equal(imported(ids).logits, direct(ids).logits)
    assert import_gguf(tiny_gguf, tmp_path / "hf") == out  # a finished import is reused


def test_an_import_parses_the_files_metadata_once(tiny_gguf, tmp_path, monkeypatch):
    from tournament.models.gguf_import import import_gguf

    parsed: list[str] = []

    class CountingReader(gguf.GGUFReader):  # the real reader, counting its parses
        def __init__(self, path, *args, **kwargs):
            parsed.append(str(path))
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", CountingReader)
    import_gguf(tiny_gguf, tmp_path / "hf", dtype="float32")
    assert len(parsed) == 1, parsed  # transformers asks three times: tokenizer, config, weights
    assert gguf.GGUFReader is CountingReader  # the sharing ends with the import
    gguf.GGUFReader(str(tiny_gguf))
    assert len(parsed) == 2


def test_an_import_error_names_what_failed_to_import(tiny_gguf, tmp_path, monkeypatch):
    """Only a missing `gguf` package is reported as one; another module failing to import (a
    transformers race once did) is named, with gguf said to be installed."""
    from tournament.models import gguf_import

    def fails(error):
        def load(*a, **k):
            raise error
        return load

    monkeypatch.setattr(gguf_import, "_load", fails(ImportError("cannot import name 'GgufConfig' from partially "
                                                                "initialized module", name="transformers")))
    with pytest.raises(gguf_import.GGUFImportError, match="failed on an import of transformers") as got:
        gguf_import.import_gguf(tiny_gguf, tmp_path / "a", dtype="float32")
    assert "pip install gguf" not in str(got.value)
    monkeypatch.setattr(gguf_import, "_load", fails(ModuleNotFoundError("No module named 'gguf'", name="gguf")))
    with pytest.raises(gguf_import.GGUFImportError, match=r"needs the `gguf` package \(pip install gguf\)"):
        gguf_import.import_gguf(tiny_gguf, tmp_path / "b", dtype="float32")


def test_imports_on_two_threads_leave_the_reader_as_it_was(tmp_path):
    """A sweep's build pool can import two GGUFs at once: each still parses its file once, and the
    module's reader is the original afterwards (an import ending inside the other's must not leave
    the other's shared reader behind)."""
    import threading

    from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: F401 - loaded before the threads

    from tournament.models.gguf_import import import_gguf

    original = gguf.GGUFReader
    files = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        files.append(write_tiny_llama_gguf(tmp_path / name / f"{name}.gguf", hidden=32 if name == "a" else 64))
    errors: list[BaseException] = []

    def run(src: Path) -> None:
        try:
            import_gguf(src, tmp_path / f"hf-{src.stem}", dtype="float32")
        except BaseException as e:  # noqa: BLE001 - re-raised below in the test's thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(f,)) for f in files]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert gguf.GGUFReader is original
    for f in files:
        assert json.loads((tmp_path / f"hf-{f.stem}" / "import.json").read_text())["source"] == f.name
