"""The `vllm.LLM` arguments of the engine settings across vLLM versions, on CPU: the pure
`vllm_llm_kwargs` with the argument names of vLLM 0.10.0 (recorded in vllm_versions.py, the MetaX
judge), of 0.26 (the GPU machine) and of an older vLLM without async scheduling, and the new
EngineSettings (CUDA-graph capture sizes, chunked prefill, async scheduling)."""

from __future__ import annotations

import dataclasses
import json

import pydantic
import pytest

from tournament.serving.config import EngineSettings, load_serve_config
from tournament.serving.engines.vllm_engine import argument_fields, vllm_llm_kwargs
from tournament.serving.engines.vllm_versions import (
    KNOWN,
    VLLM_0_10_0_COMPILATION_CONFIG,
    VLLM_0_10_0_ENGINE_ARGS,
)

V0100 = KNOWN["0.10.0"]
# vLLM 0.26: the capture sizes became `cudagraph_capture_sizes` (engine argument and CompilationConfig)
V026_ENGINE = (VLLM_0_10_0_ENGINE_ARGS - {"cuda_graph_sizes", "task", "swap_space", "max_seq_len_to_capture"}) | {
    "cudagraph_capture_sizes", "max_cudagraph_capture_size", "attention_config"}
V026_COMPILATION = {"mode", "backend", "cache_dir", "compile_sizes", "cudagraph_capture_sizes", "cudagraph_mode",
                    "inductor_compile_config", "inductor_passes", "max_cudagraph_capture_size", "pass_config",
                    "splitting_ops", "custom_ops", "debug_dump_path"}
# an older vLLM (before 0.10.0): no async scheduling yet
V09_ENGINE = VLLM_0_10_0_ENGINE_ARGS - {"async_scheduling"}

TODAY = {"model": "/m", "dtype": "auto", "gpu_memory_utilization": 0.85, "enforce_eager": False, "max_model_len": 2048,
         "max_num_seqs": 256, "enable_prefix_caching": True, "kv_cache_dtype": "auto", "seed": 0}


def kwargs(settings: EngineSettings, engine=V0100.engine_args, compilation=V0100.compilation_config, version="0.10.0"):
    return vllm_llm_kwargs(settings, "/m", None, engine, compilation, version)


def test_defaults_pass_what_they_passed_before_on_both_versions():
    assert kwargs(EngineSettings()) == TODAY
    assert kwargs(EngineSettings(), V026_ENGINE, V026_COMPILATION, "0.26.0") == TODAY
    got = vllm_llm_kwargs(EngineSettings(), "/m/x.gguf", "/m", V0100.engine_args, V0100.compilation_config)
    assert got["model"] == "/m/x.gguf" and got["tokenizer"] == "/m"


def test_the_new_settings_go_only_when_set_false_included():
    s = EngineSettings(enable_chunked_prefill=False, async_scheduling=True, max_num_seqs=384,
                       max_num_batched_tokens=16384, quantization="fp8", kv_cache_dtype="fp8")
    got = kwargs(s)
    assert got == {**TODAY, "max_num_seqs": 384, "kv_cache_dtype": "fp8", "quantization": "fp8",
                   "max_num_batched_tokens": 16384, "enable_chunked_prefill": False, "async_scheduling": True}
    assert kwargs(s, V026_ENGINE, V026_COMPILATION, "0.26.0") == got
    assert "async_scheduling" not in kwargs(EngineSettings(async_scheduling=None))


def test_capture_sizes_travel_as_compilation_config_on_both_versions():
    s = EngineSettings(cudagraph_capture_sizes=[358, 1, 2, 4, 292, 8, 292], max_num_seqs=384)
    sizes = [1, 2, 4, 8, 292, 358]  # sorted, once each
    assert kwargs(s)["compilation_config"] == {"cudagraph_capture_sizes": sizes}
    assert kwargs(s, V026_ENGINE, V026_COMPILATION, "0.26.0")["compilation_config"] == {"cudagraph_capture_sizes": sizes}
    # merged with the compile settings, whose mode/level is renamed to the installed vLLM's
    s = EngineSettings(cudagraph_capture_sizes=[1, 358], compilation_config={"mode": 3, "inductor_compile_config": {"max_autotune": True}})
    assert kwargs(s)["compilation_config"] == {"level": 3, "cudagraph_capture_sizes": [1, 358],
                                               "inductor_compile_config": {"max_autotune": True}}
    assert kwargs(s, V026_ENGINE, V026_COMPILATION, "0.26.0")["compilation_config"]["mode"] == 3
    assert s.compilation_config == {"mode": 3, "inductor_compile_config": {"max_autotune": True}}  # left alone


def test_a_setting_the_installed_vllm_lacks_names_the_setting_and_the_version():
    with pytest.raises(ValueError, match=r"^engine\.async_scheduling: vLLM 0\.9\.2 has no such engine argument"):
        kwargs(EngineSettings(async_scheduling=False), V09_ENGINE, V0100.compilation_config, "0.9.2")
    assert "async_scheduling" not in kwargs(EngineSettings(), V09_ENGINE, V0100.compilation_config, "0.9.2")  # unset: fine
    with pytest.raises(ValueError, match=r"engine\.cudagraph_capture_sizes: vLLM 0\.8\.0's CompilationConfig"):
        kwargs(EngineSettings(cudagraph_capture_sizes=[8]), V0100.engine_args,
               V0100.compilation_config - {"cudagraph_capture_sizes"}, "0.8.0")
    with pytest.raises(ValueError, match=r"^engine\.compilation_config: vLLM 0\.10\.0 has no cudagraph_mode"):
        kwargs(EngineSettings(compilation_config={"cudagraph_mode": "FULL"}))
    with pytest.raises(ValueError, match="engine.enable_chunked_prefill, engine.async_scheduling: vLLM 0.1.0"):
        kwargs(EngineSettings(enable_chunked_prefill=True, async_scheduling=True),
               VLLM_0_10_0_ENGINE_ARGS - {"enable_chunked_prefill", "async_scheduling"}, V0100.compilation_config, "0.1.0")


def test_argument_fields_reads_engine_args_like_dataclasses():
    @dataclasses.dataclass
    class EngineArgs:  # vLLM's EngineArgs: a plain dataclass in 0.10.0 and 0.26
        model: str = ""
        async_scheduling: bool = False
        derived: int = dataclasses.field(default=0, init=False)  # not an argument

    assert argument_fields(EngineArgs) == {"model", "async_scheduling"}
    assert "max_num_seqs" not in argument_fields(EngineArgs)


def test_recorded_0_10_0_facts_hold_what_the_engine_passes():
    # every argument the engine may pass exists in 0.10.0 under that name (the capture sizes via compilation_config)
    full = EngineSettings(quantization="fp8", max_num_batched_tokens=8192, enable_chunked_prefill=True,
                          async_scheduling=True, cudagraph_capture_sizes=[1, 358], compilation_config={"mode": 0})
    assert set(vllm_llm_kwargs(full, "/m", "/t", V0100.engine_args, V0100.compilation_config)) <= VLLM_0_10_0_ENGINE_ARGS
    assert "cuda_graph_sizes" in VLLM_0_10_0_ENGINE_ARGS and "cudagraph_capture_sizes" not in VLLM_0_10_0_ENGINE_ARGS
    assert {"level", "use_cudagraph", "full_cuda_graph"} <= VLLM_0_10_0_COMPILATION_CONFIG
    assert not {"mode", "cudagraph_mode"} & VLLM_0_10_0_COMPILATION_CONFIG


@pytest.mark.parametrize("bad,message", [
    ({"cudagraph_capture_sizes": []}, "at least 1 item"),
    ({"cudagraph_capture_sizes": [0, 8]}, "batch sizes >= 1"),
    ({"cudagraph_capture_sizes": [8, 512], "max_num_batched_tokens": 256}, "512 > max_num_batched_tokens 256"),
    ({"cudagraph_capture_sizes": [8], "compilation_config": {"cudagraph_capture_sizes": [8]}}, "not both"),
    ({"cudagraph_capture_sizes": 358}, "valid list"),
    ({"async_scheduling": "sometimes"}, "valid boolean"),
    ({"cuda_graph_sizes": [8]}, "Extra inputs"),
])
def test_engine_settings_refuse_bad_values(bad, message):
    with pytest.raises(pydantic.ValidationError, match=message):
        EngineSettings(**bad)


def test_new_settings_default_to_vllms_and_come_from_winner_json(tmp_path):
    s = EngineSettings()
    assert (s.cudagraph_capture_sizes, s.enable_chunked_prefill, s.async_scheduling) == (None, None, None)
    w = tmp_path / "winner.json"
    engine = {"max_num_seqs": 384, "cudagraph_capture_sizes": [1, 2, 4, 8, 292, 358], "enable_chunked_prefill": True,
              "async_scheduling": True, "kv_cache_dtype": "fp8", "quantization": "fp8"}
    w.write_text(json.dumps({"serve": {"engine": engine}}))
    cfg, _ = load_serve_config({"TOURNAMENT_WINNER": str(w)})
    assert cfg.engine.model_dump(include=set(engine)) == engine
    over = {"engine": {"async_scheduling": None, "cudagraph_capture_sizes": None}}
    cfg, _ = load_serve_config({"TOURNAMENT_WINNER": str(w), "TOURNAMENT_SERVE_CONFIG": json.dumps(over)})
    assert cfg.engine.async_scheduling is None and cfg.engine.cudagraph_capture_sizes is None
