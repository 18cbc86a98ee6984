"""scripts/gpu/cold_start.sh end to end on CPU (the transformers engine, where vLLM's compile
settings do nothing): the plumbing from COLD_CONFIG to the table, with every start from an empty
compile cache and the shared-cache pair; and its formatter on a failed run and a missing file."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

from tournament.paths import REPO_ROOT

GPU = REPO_ROOT / "scripts" / "gpu"


def _table():
    spec = importlib.util.spec_from_file_location("cold_start_table", GPU / "cold_start_table.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cold_start_script_dry_run_on_cpu(tmp_path, tiny_model_dir, tiny_qa_file):
    winner = tmp_path / "w" / "winner.json"  # a winner.json with a model path relative to it
    winner.parent.mkdir()
    (winner.parent / "m").symlink_to(tiny_model_dir)
    winner.write_text(json.dumps({"serve": {"model": {"path": "m"}, "warmup": False, "decode": {"max_tokens": 4},
                                            "engine": {"device": "cpu", "compilation_config": {"mode": 0}}}}))
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ['PATH']}",
           "COLD_CONFIG": str(winner), "COLD_ENGINE": "transformers", "COLD_QUESTIONS": str(tiny_qa_file),
           "COLD_VARIANTS": "nocompile-fullgraph-decode", "COLD_REPEAT_TO": "8", "COLD_REPEATS": "1",
           "OUT": str(out), "COLD_WORK": str(work)}
    r = subprocess.run(["bash", str(GPU / "cold_start.sh")], env=env, cwd=tmp_path, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((out / "cold_start.json").read_text())
    rows = [(x["variant"], x["cache"]) for x in doc["rows"]]
    assert rows == [("default", "empty (cold)"), ("nocompile-fullgraph-decode", "empty (cold)"),
                    ("default", "shared, 1st start (fills it)"), ("default", "shared, 2nd start (warm)")]
    cold = doc["runs"]["cold"]
    assert {k: v["compile_cache"] for k, v in cold.items()} == {"base": "fresh", "nocompile-fullgraph-decode": "fresh"}
    # 'default' is vLLM's default compile settings, whatever the config said; the variant sets its own
    assert cold["base"]["config"]["engine"]["compilation_config"] is None
    assert cold["nocompile-fullgraph-decode"]["config"]["engine"]["compilation_config"] == {
        "mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
    assert cold["base"]["config"]["model"]["path"] == str(winner.parent / "m")
    assert cold["base"]["n"] == 8 and all(x["health_s"] > 0 and x["chars_per_s"] > 0 for x in doc["rows"])
    shared = [doc["runs"][k]["base"] for k in ("shared_fill", "shared_warm")]
    assert {s["compile_cache"] for s in shared} == {"shared"} and {s["cache_root"] for s in shared} == {
        str(work / "shared-cache")}
    md = (out / "cold_start.md").read_text()
    assert "| nocompile-fullgraph-decode | compilation_config=" in md and "dry run" in md
    assert (out / "cold_start_logs.tgz").stat().st_size > 0
    assert "compilation_config" in r.stderr and "vLLM's defaults" in r.stderr  # the config's own setting, named


def test_cold_start_table_shows_failures_and_missing_files(tmp_path):
    table = _table()
    run = {"config": {"engine": {"engine": "vllm"}}, "healthy_seconds": 80.0, "compile_cache": "fresh",
           "served_chars_per_s": {"median": 20000.0, "min": 19000.0, "max": 21000.0}, "accuracy": 0.11}
    cold = {"base": run,
            "nocompile-fullgraph": {**run, "config": {"engine": {"compilation_config": {"mode": 0, "cudagraph_mode": "FULL"}}},
                                    "healthy_seconds": 50.0, "served_chars_per_s": {"median": 19000.0, "min": 1, "max": 2}},
            "eager": {"error": "RuntimeError: server exited with code 1 | before it was healthy", "config": {}}}
    (tmp_path / "cold.json").write_text(json.dumps(cold))
    warm = {"base": {**run, "compile_cache": "shared", "healthy_seconds": 40.0}}
    (tmp_path / "warm.json").write_text(json.dumps(warm))
    r = subprocess.run([sys.executable, str(GPU / "cold_start_table.py"), str(tmp_path / "cold.json"),
                        str(tmp_path / "missing.json"), str(tmp_path / "warm.json"), "--json", str(tmp_path / "t.json")],
                       capture_output=True, text=True, check=True)
    rows = {(x["variant"], x["cache"]): x for x in json.loads((tmp_path / "t.json").read_text())["rows"]}
    assert rows[("nocompile-fullgraph", "empty (cold)")]["pct_of_default"] == 95.0
    assert rows[("nocompile-fullgraph", "empty (cold)")]["beats_default_on_both"] is False  # faster start, slower
    assert rows[("default", "shared, 2nd start (warm)")]["health_s"] == 40.0
    assert "error: RuntimeError: server exited with code 1 / before it was healthy" in r.stdout
    assert "missing.json: not read" in r.stdout
    assert table.setting({"engine": {"enforce_eager": True}}) == "enforce_eager"
