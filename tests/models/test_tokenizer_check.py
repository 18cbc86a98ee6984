"""The GGUF tokenizer check: a tokenizer that cuts its own vocabulary's words is refused, with the
way out (tokenizer files from a correct rebuild). transformers 5.17 rebuilds gemma-3's tokenizer
from its GGUF as a unigram model whose scores do not follow gemma's merges ("memory" -> "me" "mo"
"ry"); here two tiny unigram tokenizers over one vocabulary play the right and the wrong rebuild."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

WORDS = ["memory", "kernel", "thread", "block", "warp", "shared", "global", "device", "host", "stream",
         "atomic", "barrier", "tile", "matrix", "vector", "scan", "reduce", "sort", "graph", "launch",
         "cache", "bank", "grid", "index"]
PIECES = ["▁", "me", "mo", "ry", "ke", "rn", "el", "th", "re", "ad", "bl", "oc", "k", "wa", "rp", "sh", "ar",
          "ed", "gl", "ob", "al", "de", "vi", "ce", "ho", "st", "am", "at", "om", "ic", "ba", "ri", "er", "ti",
          "le", "ma", "tr", "ix", "ve", "ct", "or", "sc", "an", "du", "so", "rt", "gr", "ph", "la", "un", "ch",
          "ca", "nk", "id", "in", "ex", "a", "b", "c", "d", "e", "g", "h", "i", "l", "m", "n", "o", "p", "r", "s",
          "t", "u", "v", "w", "x"]


def _tokenizer(whole_word_score: float):
    """A unigram tokenizer whose whole words score `whole_word_score` (pieces -1 each): high keeps
    "▁memory" whole, very low makes the pieces win (the broken rebuild)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = [("<unk>", 0.0)] + [(p, -1.0) for p in PIECES] + [("▁" + w, whole_word_score) for w in WORDS]
    tok = Tokenizer(models.Unigram(vocab, unk_id=0))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")


def test_a_right_rebuild_passes_and_a_wrong_one_is_refused_with_examples():
    from tournament.models.tokenizer_check import TokenizerSplitsWords, check_tokenizer, word_split_share

    good, bad = _tokenizer(-0.5), _tokenizer(-50.0)
    assert good.tokenize(" memory") == ["▁memory"] and bad.tokenize(" memory") != ["▁memory"]
    assert word_split_share(good) == (0.0, [])
    share, examples = word_split_share(bad)
    assert share == 1.0 and len(examples) == 5 and all(len(p) > 1 for _, p in examples)
    assert check_tokenizer(good, "g") == 0.0
    with pytest.raises(TokenizerSplitsWords, match=r"b: the tokenizer splits 100% .*'\w+' -> ▁"):
        check_tokenizer(bad, "b")
    # a sample smaller than the vocabulary's words: every k-th word in id order (24 words, k = 4)
    share, examples = word_split_share(bad, sample=5)
    assert share == 1.0 and [w for w, _ in examples] == [WORDS[i] for i in (0, 4, 8, 12, 16)]


def test_a_tokenizer_that_marks_every_text_start_is_whole():
    """llama-2's legacy shape (and transformers' phi-3 GGUF rebuild) puts "▁" before every text:
    " memory" becomes "▁" "▁memory" and "memory" alone is "▁memory". Not a split."""
    from tokenizers import normalizers

    from tournament.models.tokenizer_check import word_split_share

    tok = _tokenizer(-0.5)
    tok.backend_tokenizer.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.backend_tokenizer.pre_tokenizer = None
    assert tok.tokenize(" memory")[-1] == "▁memory" and tok.tokenize("memory") == ["▁memory"]
    assert word_split_share(tok) == (0.0, [])


def test_too_small_a_vocabulary_is_not_judged(monkeypatch):
    """The tiny test models' vocabularies hold few whole words: no verdict, no refusal."""
    from tournament.models import tokenizer_check

    monkeypatch.setattr(tokenizer_check, "MIN_WORDS", len(WORDS) + 1)
    assert tokenizer_check.word_split_share(_tokenizer(-50.0)) == (None, [])
    assert tokenizer_check.check_tokenizer(_tokenizer(-50.0), "tiny") is None


def test_import_takes_tokenizer_files_when_the_rebuild_is_wrong(tmp_path, monkeypatch):
    """gguf_tokenizer: the GGUF's rebuild (here the wrong one, standing in for transformers' loader)
    is refused with the fix; tokenizer files of the same vocabulary (argument or environment) are
    taken; another vocabulary's files are refused."""
    import transformers

    from tournament.models import gguf_import
    from tournament.models.gguf_import import ENV_TOKENIZER, GGUFImportError, gguf_tokenizer

    real = transformers.AutoTokenizer.from_pretrained

    def fake_from_pretrained(path, *args, **kwargs):
        if kwargs.get("gguf_file"):
            return _tokenizer(-50.0)  # what a wrong rebuild gives
        return real(path, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_from_pretrained)
    monkeypatch.delenv(ENV_TOKENIZER, raising=False)
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF")
    with pytest.raises(GGUFImportError, match=r"splits 100% .* models export-tokenizer m.gguf DIR.*"
                                              + ENV_TOKENIZER):
        gguf_tokenizer(src)
    right = tmp_path / "right"
    _tokenizer(-0.5).save_pretrained(str(right))
    tok, share, origin = gguf_tokenizer(src, right)
    assert share == 0.0 and tok.tokenize(" memory") == ["▁memory"] and str(right) in origin
    monkeypatch.setenv(ENV_TOKENIZER, str(right))
    assert gguf_tokenizer(src)[1] == 0.0
    # the export never takes the environment's files: it writes what this machine rebuilds
    with pytest.raises(GGUFImportError, match="splits 100%"):
        gguf_import.export_tokenizer(src, tmp_path / "out")
    monkeypatch.setenv(ENV_TOKENIZER, str(tmp_path / "nowhere"))
    with pytest.raises(GGUFImportError, match="no such tokenizer folder"):
        gguf_tokenizer(src)
    other = tmp_path / "other"
    words, pieces = WORDS[:], PIECES[:]
    try:  # another model's vocabulary: other pieces under the same ids
        PIECES[:] = [p[::-1] + "q" for p in pieces]
        _tokenizer(-0.5).save_pretrained(str(other))
    finally:
        PIECES[:] = pieces
    assert WORDS == words
    with pytest.raises(GGUFImportError, match="vocabulary is not m.gguf's"):
        gguf_tokenizer(src, other)


def test_an_import_made_before_the_check_is_not_reused(tmp_path):
    from tournament.models.gguf_import import CHECKED, is_imported

    out = tmp_path / "hf"
    out.mkdir()
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"x")
    (out / "import.json").write_text(json.dumps({"source_sha256": "a"}))
    assert not is_imported(out) and not is_imported(out, "a")
    (out / "import.json").write_text(json.dumps({"source_sha256": "a", CHECKED: 0.0}))
    assert is_imported(out) and is_imported(out, "a") and not is_imported(out, "b")
    assert Path(out / "import.json").exists()


def test_import_records_the_check_and_is_reused(tmp_path, monkeypatch, tiny_model_dir):
    """import_gguf end to end with transformers' GGUF loaders standing in (a tiny model, the right
    tokenizer): import.json records the check, so the next call reuses the import; a wrong
    rebuild leaves no import behind."""
    import hashlib

    import transformers

    from tournament.models.gguf_import import CHECKED, ENV_TOKENIZER, GGUFImportError, import_gguf, is_imported

    rebuild = {"score": -0.5}
    real_tok, real_model = transformers.AutoTokenizer.from_pretrained, transformers.AutoModelForCausalLM.from_pretrained

    def tok(path, *a, **kw):
        return _tokenizer(rebuild["score"]) if kw.get("gguf_file") else real_tok(path, *a, **kw)

    def model(path, *a, **kw):
        return real_model(str(tiny_model_dir)) if kw.get("gguf_file") else real_model(path, *a, **kw)

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", tok)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", model)
    monkeypatch.delenv(ENV_TOKENIZER, raising=False)
    src = tmp_path / "m.gguf"
    src.write_bytes(b"GGUF" + b"\2" * 32)
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    out = import_gguf(src, tmp_path / "hf", expected_sha256=sha)
    doc = json.loads((out / "import.json").read_text())
    assert doc[CHECKED] == 0.0 and "rebuilt from the GGUF" in doc["tokenizer"] and is_imported(out, sha)
    assert transformers.AutoTokenizer.from_pretrained(str(out)).tokenize(" memory") == ["▁memory"]
    lines: list[str] = []
    assert import_gguf(src, out, expected_sha256=sha, log=lines.append) == out and lines == [f"reusing {out}"]
    rebuild["score"] = -50.0  # a release that rebuilds it wrong: refused, nothing written
    with pytest.raises(GGUFImportError, match="splits 100%"):
        import_gguf(src, tmp_path / "hf2")
    assert not (tmp_path / "hf2").exists() and not (tmp_path / "hf2.part").exists()


def _build(tmp_path: Path, name: str, tokenizer, manifest: dict) -> Path:
    """A finished build's folder as `ensure_built` reuses it: candidate.json and model/ with its tokenizer."""
    build = tmp_path / name
    (build / "model").mkdir(parents=True)
    (build / "model" / "config.json").write_text("{}")
    tokenizer.save_pretrained(str(build / "model"))
    (build / "candidate.json").write_text(json.dumps(manifest))
    return build


def test_a_build_trained_with_a_splitting_tokenizer_is_not_reused(tmp_path):
    """A build trained on a broken GGUF rebuild has the config hash of a sound one: reuse measures
    the tokenizer of a build that recorded no share, and trains a splitting one again. Reading
    never writes (a reader must not race a rebuild of the same folder)."""
    from tournament.train.build import _complete, _reuse_or_build

    logs: list[str] = []
    sound = _build(tmp_path, "sound", _tokenizer(-0.5), {"id": "sound"})
    assert _complete(sound, logs.append) and not logs
    assert json.loads((sound / "candidate.json").read_text()) == {"id": "sound"}

    broken = _build(tmp_path, "broken", _tokenizer(-50.0), {"id": "broken"})
    retrained: list[Path] = []
    got = _reuse_or_build(broken, False, logs.append, lambda: retrained.append(broken) or broken / "model")
    assert retrained == [broken] and got == broken / "model"
    assert any(line.startswith(f"not reusing {broken}: its tokenizer splits 100%") for line in logs), logs


def test_a_recorded_share_decides_without_loading_the_tokenizer(tmp_path):
    from tournament.train.build import _complete

    build = _build(tmp_path, "b", _tokenizer(-50.0), {"tokenizer_word_split_share": 0.0})
    assert _complete(build)  # measured, this tokenizer splits every word: the record decided
    (build / "candidate.json").write_text(json.dumps({"tokenizer_word_split_share": 0.5}))
    assert not _complete(build)
    (build / "candidate.json").write_text(json.dumps({"tokenizer_word_split_share": None}))  # too small to judge
    assert _complete(build)


@pytest.mark.parametrize("what", ["tokenizer not json", "tokenizer of the wrong shape", "manifest not json",
                                  "manifest a list", "share a string", "manifest a folder"])
def test_unreadable_files_leave_reuse_as_it_was(tmp_path, what):
    """Files this check cannot read never crash a sweep or `tournament train`: the build is reused
    as before the check (serving it says what is wrong)."""
    from tournament.train.build import _build_split_share, _complete

    build = _build(tmp_path, "b", _tokenizer(-50.0), {"id": "b"})
    model, manifest = build / "model", build / "candidate.json"
    if what == "tokenizer not json":
        (model / "tokenizer.json").write_text("not a tokenizer")
        (model / "tokenizer_config.json").write_text("{")
    elif what == "tokenizer of the wrong shape":
        (model / "tokenizer.json").write_text("{}")
    elif what == "manifest not json":
        manifest.write_text("{")
    elif what == "manifest a list":
        manifest.write_text("[]")
    elif what == "share a string":
        manifest.write_text(json.dumps({"tokenizer_word_split_share": "0.5"}))
    else:
        manifest.unlink()
        manifest.mkdir()
    # a manifest that is valid JSON but holds no record: the (splitting) tokenizer is measured
    measured = what == "manifest a list"
    assert _build_split_share(build) == (1.0 if measured else None)
    assert _complete(build) is not measured


def test_training_refuses_a_base_whose_tokenizer_splits_words(tiny_model_dir, tmp_path):
    """A base model (not only a GGUF import) whose tokenizer cuts its vocabulary's words would
    train a build that reuse then refuses, again and again: training stops before it starts."""
    import shutil

    from tournament.candidates import parse_candidate
    from tournament.models.tokenizer_check import TokenizerSplitsWords
    from tournament.train.build import ensure_built

    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (base / f).unlink(missing_ok=True)
    _tokenizer(-50.0).save_pretrained(str(base))
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps({"question": "What is a warp?", "answer": "32 threads."}) + "\n", encoding="utf-8")
    cand = parse_candidate({"id": "split", "base": {"path": str(base)},
                            "recipe": {"method": "full", "dataset": str(data), "batch_size": 1, "epochs": 1}})
    with pytest.raises(TokenizerSplitsWords, match=r"split: the base model .* splits 100%"):
        ensure_built(cand, tmp_path / "builds", max_steps=1, device="cpu")
    assert not cand.build_dir(tmp_path / "builds", 1).exists()
