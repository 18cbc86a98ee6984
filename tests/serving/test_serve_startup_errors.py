"""serve.py that cannot start says, in one or two lines of its log, which setting is wrong, the
file or variable it came from, and the fix (no traceback to dig through); one that finds no
winner.json at the default path says it serves the defaults."""

from __future__ import annotations

import shutil

import httpx
import pytest

from tournament.serving.config import TOKENIZER_FILES
from tournament.serving.process import ServerProcess

ENGINE = {"engine": "transformers", "device": "cpu", "batch_size": 4, "max_model_len": 512}


def _failed_start(tmp_path, config=None, **kw) -> str:
    log = tmp_path / "server.log"
    server = ServerProcess(config, log_path=log, **kw).start()
    try:
        with pytest.raises(RuntimeError, match="exited with code 3"):
            server.wait_healthy(60)
    finally:
        server.stop()
    text = log.read_text(encoding="utf-8")
    assert "Traceback" not in text, text[-3000:]
    errors = [line for line in text.splitlines() if "serve.py cannot start" in line]
    assert len(errors) == 1, text[-3000:]
    return errors[0]


def test_a_model_path_that_does_not_exist(tmp_path):
    line = _failed_start(tmp_path, {"model": {"path": str(tmp_path / "no-such-model")}, "engine": ENGINE})
    assert "serve.model.path" in line and "TOURNAMENT_SERVE_CONFIG" in line and "does not exist" in line
    assert "download_model.py" in line and "HFValidationError" not in line


def test_tournament_winner_naming_a_folder(tmp_path):
    line = _failed_start(tmp_path, winner=tmp_path)
    assert "TOURNAMENT_WINNER" in line and "is a folder" in line and "winner.json" in line


def test_an_unknown_dtype(tmp_path, tiny_model_dir):
    winner = tmp_path / "winner.json"
    winner.write_text('{"serve": {"model": {"path": "%s"}, "engine": {"engine": "transformers", "dtype": "float99"}}}'
                      % tiny_model_dir)
    line = _failed_start(tmp_path, winner=winner)
    assert "serve.engine.dtype" in line and "float99" in line and str(winner) in line and "tournament pick" in line


def test_max_tokens_that_is_not_a_number(tmp_path, tiny_model_dir):
    line = _failed_start(tmp_path, {"model": {"path": str(tiny_model_dir)}, "engine": ENGINE},
                         env={"TOURNAMENT_MAX_TOKENS": "abc"})
    assert "TOURNAMENT_MAX_TOKENS='abc'" in line and "whole number" in line and "unset it" in line


def test_a_model_folder_without_a_tokenizer(tmp_path, tiny_model_dir):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model, ignore=shutil.ignore_patterns(*TOKENIZER_FILES, "special_tokens_map.json"))
    line = _failed_start(tmp_path, {"model": {"path": str(model)}, "engine": ENGINE})
    assert "serve.model.path" in line and "no tokenizer" in line and "copy the base model's tokenizer" in line


def test_no_winner_json_at_the_default_path_is_said_in_the_log(tmp_path, tiny_model_dir):
    from tournament.serving.config import winner_path

    assert not winner_path({}).exists()  # the checkout holds no winner.json
    log = tmp_path / "server.log"
    cfg = {"model": {"path": str(tiny_model_dir)}, "engine": ENGINE, "decode": {"max_tokens": 4}}
    with ServerProcess(cfg, log_path=log, env={"TOURNAMENT_WINNER": ""}) as server:
        server.wait_healthy(120)
        assert httpx.get(server.url + "/", timeout=5).status_code == 200
    assert "no winner.json at" in log.read_text(encoding="utf-8") and "serving the built-in defaults" in log.read_text()


def test_a_winner_json_nested_too_deeply(tmp_path):
    winner = tmp_path / "winner.json"
    winner.write_text('{"serve": ' + "[" * 5000 + "]" * 5000 + "}")
    line = _failed_start(tmp_path, winner=winner)
    assert str(winner) in line and "nested too deeply" in line and "tournament pick" in line
