"""winner.json problems name the file and the fix; an explicitly named winner must exist."""

from __future__ import annotations

import json

import pytest

from tournament.serving.config import WinnerFileError, load_serve_config
from tournament.serving.process import ServerProcess


@pytest.mark.parametrize(
    "content,message",
    [
        (b"[]", "holds a JSON list"),
        (b'{"serve": "x"}', 'no "serve" object ("serve" is "x")'),
        (b'{"serve": null}', 'no "serve" object ("serve" is null)'),
        (b'{"schema": 1}', 'no "serve" object (no "serve" key)'),
        (b"\xff\xfe{}", "not UTF-8"),
        (b"{not json", "not valid JSON"),
        (b'{"serve": {"engine": {"engine": "tgi"}}}', "serve.engine.engine"),
    ],
)
def test_bad_winner_json_names_the_file_and_the_fix(tmp_path, content, message):
    w = tmp_path / "winner.json"
    w.write_bytes(content)
    with pytest.raises(WinnerFileError) as e:
        load_serve_config({"TOURNAMENT_WINNER": str(w)})
    assert message in str(e.value) and "tournament pick" in str(e.value)
    assert str(w) in str(e.value) or "winner.json" in str(e.value)


def test_named_winner_must_exist_but_the_default_may_be_missing(tmp_path, monkeypatch):
    with pytest.raises(WinnerFileError, match="no such file"):
        load_serve_config({"TOURNAMENT_WINNER": str(tmp_path / "typo.json")})
    cfg, _ = load_serve_config({"TOURNAMENT_WINNER": "none"})
    assert cfg.engine.engine == "vllm"
    import tournament.serving.config as C

    monkeypatch.setattr(C, "REPO_ROOT", tmp_path)  # a checkout without winner.json: the defaults
    cfg, base = load_serve_config({})
    assert cfg.model.path == "models/winner" and base == tmp_path
    good = tmp_path / "w.json"
    good.write_text(json.dumps({"serve": {"mode": "serial"}}))
    assert load_serve_config({"TOURNAMENT_WINNER": str(good)})[0].mode == "serial"


def test_server_with_a_missing_named_winner_fails_start_with_the_name(tmp_path):
    server = ServerProcess(winner=tmp_path / "nope.json", log_path=tmp_path / "s.log").start()
    try:
        with pytest.raises(RuntimeError, match="nope.json: no such file"):
            server.wait_healthy(60)
    finally:
        server.stop()
