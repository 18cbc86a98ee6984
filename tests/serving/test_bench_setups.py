"""P2 (`tournament bench setups`): the shipped setup files say what they claim, and the command runs
each setup as the real serve.py judged by the emulator (tiny model, transformers engine on CPU;
the numbers are printed, never asserted beyond being measured)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tournament.paths import REPO_ROOT
from tournament.serving import bench_setups as P2
from tournament.serving.config import ServeConfig

SETUPS = REPO_ROOT / "benchmarks" / "setups"


def test_course_template_setup():
    s = P2.load_setup(SETUPS / "course-template.yaml")
    cfg = ServeConfig.model_validate(s.serve)
    assert s.name == "course-template" and cfg.mode == "serial"
    d = cfg.decode
    assert (d.temperature, d.top_p, d.top_k, d.max_tokens, d.seed) == (0.7, 0.9, 50, 50, None)
    assert cfg.engine.engine == "vllm" and cfg.engine.gpu_memory_utilization == 0.6
    from tournament.prompting import render_prompt

    q = "什么是 warp？"
    # the question as it arrives (plus the newline the plain style puts before the answer label), no template
    assert render_prompt(cfg.prompt, q) == q + "\n" and cfg.prompt.stop == [] and cfg.prompt.shots == []


def test_public_bonus_best_setup_runs_on_vllm_0_10_0_and_0_26():
    from tournament.serving.engines.vllm_engine import vllm_llm_kwargs
    from tournament.serving.engines.vllm_versions import KNOWN

    s = P2.load_setup(SETUPS / "public-bonus-best.yaml")
    cfg = ServeConfig.model_validate(s.serve)
    e = cfg.engine
    assert s.name == "public-bonus-best" and cfg.mode == "batch" and cfg.prompt.style == "chat"
    assert (e.quantization, e.kv_cache_dtype, e.max_num_seqs) == ("fp8", "fp8", 384)
    assert 358 in e.cudagraph_capture_sizes and min(e.cudagraph_capture_sizes) == 1
    assert (cfg.decode.temperature, cfg.decode.max_tokens) == (0.0, 256)
    facts = KNOWN["0.10.0"]
    kw = vllm_llm_kwargs(e, "/m", None, facts.engine_args, facts.compilation_config, facts.version)
    assert kw["compilation_config"]["inductor_compile_config"] == {"max_autotune": True}
    assert 358 in kw["compilation_config"]["cudagraph_capture_sizes"]
    assert kw["quantization"] == kw["kv_cache_dtype"] == "fp8"


def test_setup_files_winner_json_and_overrides(tmp_path):
    w = tmp_path / "winner.json"
    w.write_text(json.dumps({"schema": 1, "serve": {"model": {"path": "models/winner"}, "decode": {"max_tokens": 7}},
                             "candidate": {"id": "c"}}))
    s = P2.load_setup(w)
    assert (s.name, s.serve["decode"]) == ("winner", {"max_tokens": 7})
    cfg = P2.served_config(s, tmp_path / "m", "transformers")
    assert cfg["model"]["path"] == str((tmp_path / "m").resolve()) and cfg["engine"]["engine"] == "transformers"
    assert cfg["decode"]["max_tokens"] == 7
    kept = P2.served_config(P2.load_setup(SETUPS / "public-bonus-best.yaml"), tmp_path / "m")
    assert kept["engine"]["quantization"] == "fp8"  # no override: the setup's own engine block
    (tmp_path / "bad.yaml").write_text("name: x\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: a setup needs a \"serve\" object"):
        P2.load_setup(tmp_path / "bad.yaml")
    (tmp_path / "typo.yaml").write_text("serve: {decode: {max_tokns: 5}}\n")
    with pytest.raises(ValueError, match=r"setup typo .*serve\.decode\.max_tokns"):
        P2.served_config(P2.load_setup(tmp_path / "typo.yaml"), tmp_path)
    with pytest.raises(ValueError, match="engine override 'vllm2'"):
        P2.served_config(s, tmp_path, "vllm2")


def _qa(tmp_path: Path) -> Path:
    qa = tmp_path / "qa.jsonl"
    rows = [("什么是 warp？", "warp 32"), ("SM 是什么？", "streaming multiprocessor"), ("什么是 warp？", "warp 32"),
            ("什么是数据并行？", "data parallel")]
    qa.write_text("".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n" for q, a in rows))
    return qa


def test_bench_setups_runs_each_setup_and_the_winner(tmp_path, tiny_model_dir):
    from tournament.cli import app

    w = tmp_path / "winner.json"
    w.write_text(json.dumps({"schema": 1, "serve": {"mode": "batch", "decode": {"max_tokens": 3}, "warmup": False},
                             "candidate": {"id": "c"}}))
    out = tmp_path / "p2.json"
    r = CliRunner().invoke(app, [
        "bench", "setups", "--model", str(tiny_model_dir), "--questions", str(_qa(tmp_path)),
        "--setup", str(SETUPS / "course-template.yaml"), "--setup", str(SETUPS / "public-bonus-best.yaml"),
        "--winner", str(w), "--engine", "transformers", "--out", str(out), "--log-dir", str(tmp_path / "logs"),
        "--limit", "3", "--again", "2"])
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())
    assert [(x["setup"], x["mode"], x["engine"]) for x in rows] == [
        ("course-template", "serial", "transformers"), ("public-bonus-best", "batch", "transformers"),
        ("winner", "batch", "transformers")]
    for x in rows:
        assert not x["failed"], x
        assert (x["n"], x["distinct"]) == (3, 2)
        assert x["chars_per_s"] > 0 and x["predict_seconds"] > 0 and x["healthy_seconds"] > 0
        assert 0.0 <= x["accuracy"] <= 1.0 and x["answered"] == 3
        assert (tmp_path / "logs" / f"{x['setup']}.log").exists()
        assert x["setup"] in r.output  # the table: one row per setup
    assert r.output.count(" ok ") == 3 and "failed" not in r.output, r.output
    # --again: a batch setup's POST twice more, each from an empty prefix cache, beside the first
    assert "chars_per_s_again" not in rows[0]  # serial: 3 calls already, no first-POST figure to compare
    for x in rows[1:]:
        assert len(x["chars_per_s_again_runs"]) == 2 and "again_failed" not in x, x
        assert x["chars_per_s_again"] > 0 and x["first_vs_again"] == x["chars_per_s"] / x["chars_per_s_again"]
        log = (tmp_path / "logs" / f"{x['setup']}.log").read_text()
        assert log.count("prefix cache emptied for a timed POST") == 2, log[-2000:]
    assert "again chars/s" in r.output and "1st / again" in r.output
    # each ran its own decode settings on the one model; only the engine block was replaced
    assert rows[0]["config"]["decode"]["top_k"] == 50 and rows[1]["config"]["decode"]["max_tokens"] == 256
    assert rows[2]["config"]["decode"]["max_tokens"] == 3
    assert {x["config"]["model"]["path"] for x in rows} == {str(Path(tiny_model_dir).resolve())}


def test_a_setup_that_cannot_start_is_a_row_and_the_others_run(tmp_path, tiny_model_dir):
    from tournament.cli import app

    broken, good = tmp_path / "broken.yaml", tmp_path / "good.json"
    broken.write_text("name: broken\nserve: {engine: {engine: transformers, device: 'cuda:99'}, warmup: false}\n")
    good.write_text(json.dumps({"name": "good", "serve": {"engine": {"engine": "transformers", "device": "cpu"},
                                                          "decode": {"max_tokens": 2}, "warmup": False}}))
    r = CliRunner().invoke(app, [
        "bench", "setups", "--model", str(tiny_model_dir), "--questions", str(_qa(tmp_path)), "--limit", "1",
        "--setup", str(broken), "--setup", str(good), "--setup", str(good), "--compile-cache", "shared", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert [x["setup"] for x in rows] == ["broken", "good", "good-3"]  # a repeated name gets its own log
    assert rows[0]["failed"] and "before it was healthy" in rows[0]["reason"]
    assert not rows[1]["failed"] and rows[1]["chars_per_s"] > 0 and not rows[2]["failed"]
    assert rows[1]["n"] == 1 and "config" not in rows[1]  # --json prints the numbers; --out keeps the configs
    bad = CliRunner().invoke(app, ["bench", "setups", "--model", str(tiny_model_dir), "--questions",
                                   str(_qa(tmp_path)), "--setup", str(good), "--compile-cache", "cold"])
    assert bad.exit_code == 2 and "--compile-cache" in bad.output
    bad = CliRunner().invoke(app, ["bench", "setups", "--model", str(tiny_model_dir), "--questions",
                                   str(_qa(tmp_path)), "--setup", str(good), "--engine", "tgi"])
    assert bad.exit_code == 2 and "--engine" in bad.output


def test_several_fresh_starts_give_medians_and_keep_each_start():
    from tournament.serving.bench_setups import combine_starts

    def run(cps, healthy, again=None, failed=False):
        r = {"setup": "b", "mode": "batch", "accuracy": 0.4, "chars_per_s": cps, "healthy_seconds": healthy,
             "predict_seconds": 1.0, "failed": failed, "reason": "RuntimeError: died" if failed else None}
        if again:
            r.update(chars_per_s_again=again, chars_per_s_again_runs=[again], first_vs_again=cps / again)
        return r

    one = run(100.0, 30.0)
    assert combine_starts([one]) is one  # one start: the row as it ran
    row = combine_starts([run(100.0, 30.0, 120.0), run(300.0, 50.0, 140.0), run(200.0, 40.0, 160.0)])
    assert row["starts"] == 3 and row["chars_per_s"] == 200.0 and row["chars_per_s_starts"] == [100.0, 300.0, 200.0]
    assert row["healthy_seconds"] == 40.0 and row["chars_per_s_again"] == 140.0
    assert row["first_vs_again"] == 200.0 / 140.0 and "chars_per_s_again_runs" not in row
    assert not row["failed"] and "failed_starts" not in row
    # a start that failed is counted, the others stand
    row = combine_starts([run(0.0, 0.0, failed=True), run(100.0, 30.0), run(300.0, 50.0)])
    assert not row["failed"] and row["failed_starts"] == ["RuntimeError: died"] and row["chars_per_s"] == 200.0
    from rich.console import Console

    from tournament.serving.bench_setups import setups_table

    row.update(engine="vllm", n=1, distinct=1)
    console = Console(record=True, width=200)
    console.print(setups_table([row], "m", ["q"], "fresh"))
    text = console.export_text()
    assert "ok (1/3 starts failed)" in text and "medians of 3 fresh starts" in text, text
    # a later start's failed again-POSTs are reported too, beside the medians of those that ran
    row = combine_starts([run(100.0, 30.0, 120.0), {**run(300.0, 50.0), "again_failed": "TimeoutError: x"}])
    assert row["again_failed"] == "TimeoutError: x" and row["chars_per_s_again"] == 120.0
    # all failed: a failed row
    row = combine_starts([run(0.0, 0.0, failed=True), run(0.0, 0.0, failed=True)])
    assert row["failed"] and len(row["failed_starts"]) == 2


def test_starts_on_the_command_line(tmp_path, tiny_model_dir):
    from tournament.cli import app

    good = tmp_path / "good.json"
    good.write_text(json.dumps({"name": "good", "serve": {"engine": {"engine": "transformers", "device": "cpu"},
                                                          "decode": {"max_tokens": 2}, "warmup": False}}))
    out = tmp_path / "p2.json"
    r = CliRunner().invoke(app, [
        "bench", "setups", "--model", str(tiny_model_dir), "--questions", str(_qa(tmp_path)), "--limit", "2",
        "--setup", str(good), "--starts", "2", "--again", "1", "--compile-cache", "shared", "--out", str(out),
        "--log-dir", str(tmp_path / "logs")])
    assert r.exit_code == 0, r.output
    [row] = json.loads(out.read_text())
    assert row["starts"] == 2 and len(row["chars_per_s_starts"]) == 2 and len(row["chars_per_s_again_starts"]) == 2
    assert "medians of 2 fresh starts" in r.output
    assert (tmp_path / "logs" / "good.log").read_text().count("ready: load+warm-up") == 2  # two servers, one log
    bad = CliRunner().invoke(app, ["bench", "setups", "--model", str(tiny_model_dir), "--questions",
                                   str(_qa(tmp_path)), "--setup", str(good), "--starts", "0"])
    assert bad.exit_code == 2 and "--starts" in bad.output
