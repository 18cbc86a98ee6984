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


def test_bench_serve_fresh_compile_cache_per_process(tmp_path, monkeypatch):
    """--compile-cache fresh: the server and the raw child each start with their own new, empty
    compile cache (VLLM_CACHE_ROOT), gone afterwards; shared keeps the environment's."""
    import re
    from pathlib import Path

    from tournament.models.tiny import build_tiny_model

    monkeypatch.setenv("VLLM_CACHE_ROOT", str(tmp_path / "machine-cache"))
    model = build_tiny_model(tmp_path / "tiny")
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"问题 {i}", "answer": "warp 32"}) + "\n" for i in range(2)))
    config = {"model": {"path": str(model)}, "engine": {"engine": "transformers", "device": "cpu"},
              "decode": {"max_tokens": 2}, "warmup": False}
    for mode in ("fresh", "shared"):
        out, logs = tmp_path / f"{mode}.json", tmp_path / f"logs-{mode}"
        result = CliRunner().invoke(app, [
            "bench", "serve", "--config", json.dumps(config), "--questions", str(qa), "--repeats", "1",
            "--compile-cache", mode, "--out", str(out), "--log-dir", str(logs)])
        assert result.exit_code == 0, result.output
        run = json.loads(out.read_text())["base"]
        assert run["compile_cache"] == mode
        # the transformers engine names the VLLM_CACHE_ROOT it was given (vLLM: "compile cache: ...")
        served_root = re.search(r"VLLM_CACHE_ROOT=(\S+) unused", (logs / "base" / "server.log").read_text()).group(1)
        raw_root = run["raw"]["cache_root"]
        if mode == "fresh":
            assert run["cache_root"] is None
            assert served_root != raw_root and str(tmp_path / "machine-cache") not in (served_root, raw_root)
            assert not Path(served_root).exists() and not Path(raw_root).exists()  # removed afterwards
        else:
            assert run["cache_root"] == served_root == raw_root == str(tmp_path / "machine-cache")
    bad = CliRunner().invoke(app, ["bench", "serve", "--config", json.dumps(config), "--questions", str(qa),
                                   "--compile-cache", "cold"])
    assert bad.exit_code == 2 and "--compile-cache" in bad.output
