"""`tournament bench serve` end to end on the tiny model (numbers are printed, never asserted)."""

import json

from typer.testing import CliRunner

from tournament.cli import app


def test_bench_serve_measures_raw_and_served_runs(tmp_path):
    from tournament.models.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny")
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"问题 {i}", "answer": "warp 32"}) + "\n" for i in range(3)))
    config = {"model": {"path": str(model)}, "engine": {"engine": "transformers", "device": "cpu"},
              "decode": {"max_tokens": 4}, "warmup": False}
    out = tmp_path / "bench.json"
    result = CliRunner().invoke(app, [
        "bench", "serve", "--config", json.dumps(config), "--questions", str(qa), "--repeat-to", "5",
        "--repeats", "1", "--raw-for", "base", "--variant", 'short={"decode":{"max_tokens":2}}', "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    runs = json.loads(out.read_text())
    assert set(runs) == {"base", "short"}
    assert runs["base"]["n"] == 5 and runs["base"]["ratio"] > 0
    assert "raw" not in runs["short"] and runs["short"]["served"][0]["chars"] > 0
    assert runs["short"]["config"]["decode"]["max_tokens"] == 2
