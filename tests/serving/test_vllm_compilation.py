"""`compilation_config` across vLLM versions, on CPU: the pure renaming/checking function with the
field sets of vLLM 0.10.1 (`level`, `use_cudagraph`, `full_cuda_graph`) and 0.26 (`mode`,
`cudagraph_mode`), and the field reader on both kinds of config class (stdlib and pydantic
dataclasses)."""

from __future__ import annotations

import dataclasses

import pydantic
import pytest

from tournament.serving.config import EngineSettings, ServeConfig
from tournament.serving.engines.vllm_engine import compilation_config_fields, portable_compilation_config

V0101 = {"level", "debug_dump_path", "cache_dir", "backend", "custom_ops", "splitting_ops", "use_inductor",
         "compile_sizes", "inductor_compile_config", "inductor_passes", "use_cudagraph", "cudagraph_num_of_warmups",
         "cudagraph_capture_sizes", "cudagraph_copy_inputs", "full_cuda_graph", "pass_config"}
V026 = {"mode", "debug_dump_path", "cache_dir", "backend", "custom_ops", "splitting_ops", "compile_sizes",
        "inductor_compile_config", "inductor_passes", "cudagraph_mode", "cudagraph_num_of_warmups",
        "cudagraph_capture_sizes", "cudagraph_copy_inputs", "max_cudagraph_capture_size", "pass_config"}


def test_mode_becomes_level_on_vllm_0_10_and_back():
    assert portable_compilation_config({"mode": 0}, V0101, "0.10.1") == {"level": 0}
    assert portable_compilation_config({"level": 3, "use_cudagraph": True}, V0101) == {"level": 3, "use_cudagraph": True}
    assert portable_compilation_config({"level": 0}, V026, "0.26.0") == {"mode": 0}
    got = portable_compilation_config({"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}, V026, "0.26.0")
    assert got == {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
    assert portable_compilation_config({"mode": "NONE"}, V0101) == {"level": 0}  # a named mode, numbered
    assert portable_compilation_config({"mode": "VLLM_COMPILE"}, V026) == {"mode": "VLLM_COMPILE"}  # as given
    assert portable_compilation_config({}, V0101) == {}
    cfg = {"mode": 0}
    portable_compilation_config(cfg, V0101)
    assert cfg == {"mode": 0}  # the caller's dict is left alone


def test_a_key_the_installed_vllm_lacks_is_a_clear_error():
    with pytest.raises(ValueError) as e:
        portable_compilation_config({"mode": 0, "cudagraph_mode": "FULL"}, V0101, "0.10.1")
    msg = str(e.value)
    assert "vLLM 0.10.1 has no cudagraph_mode" in msg and "use_cudagraph" in msg
    with pytest.raises(ValueError, match=r"vLLM 0\.26\.0 has no full_cuda_graph, use_cudagraph"):
        portable_compilation_config({"use_cudagraph": True, "full_cuda_graph": True}, V026, "0.26.0")
    with pytest.raises(ValueError, match="not both"):
        portable_compilation_config({"mode": 0, "level": 0}, V026)


def test_fields_of_stdlib_and_pydantic_dataclasses():
    @dataclasses.dataclass
    class Old:  # vLLM 0.10: a plain dataclass
        level: int | None = None
        use_cudagraph: bool = True
        enabled_custom_ops: list = dataclasses.field(default_factory=list, init=False)  # not an argument

    @pydantic.dataclasses.dataclass(config=pydantic.ConfigDict(extra="forbid"))
    class New:  # vLLM 0.26: a pydantic dataclass
        mode: int | None = None
        cudagraph_mode: str | None = None

    class Model(pydantic.BaseModel):
        mode: int | None = None

    assert compilation_config_fields(Old) == {"level", "use_cudagraph"}
    assert compilation_config_fields(New) == {"mode", "cudagraph_mode"}
    assert compilation_config_fields(Model) == {"mode"}
    assert portable_compilation_config({"mode": 0}, compilation_config_fields(Old)) == {"level": 0}


def test_engine_settings_carry_compilation_config():
    assert EngineSettings().compilation_config is None
    s = EngineSettings(compilation_config={"mode": 0, "cudagraph_mode": "FULL"})
    assert s.model_dump()["compilation_config"] == {"mode": 0, "cudagraph_mode": "FULL"}
    with pytest.raises(pydantic.ValidationError):
        EngineSettings(compilation_confg={"mode": 0})  # extra="forbid" still catches a typo
    with pytest.raises(pydantic.ValidationError):
        EngineSettings(compilation_config=["mode", 0])
    sc = ServeConfig.model_validate({"engine": {"engine": "transformers", "compilation_config": {"mode": 0}}})
    assert ServeConfig.model_validate_json(sc.model_dump_json()) == sc


def test_winner_json_and_the_environment_set_compilation_config(tmp_path):
    import json

    from tournament.serving.config import load_serve_config

    w = tmp_path / "winner.json"
    w.write_text(json.dumps({"serve": {"engine": {"compilation_config": {"mode": 0, "cudagraph_mode": "FULL"}}}}))
    cfg, _ = load_serve_config({"TOURNAMENT_WINNER": str(w)})
    assert cfg.engine.compilation_config == {"mode": 0, "cudagraph_mode": "FULL"}
    # TOURNAMENT_SERVE_CONFIG deep-merges: one key changes, null restores vLLM's default
    over = {"engine": {"compilation_config": {"cudagraph_mode": "FULL_DECODE_ONLY"}}}
    cfg, _ = load_serve_config({"TOURNAMENT_WINNER": str(w), "TOURNAMENT_SERVE_CONFIG": json.dumps(over)})
    assert cfg.engine.compilation_config == {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}
    over = {"engine": {"compilation_config": None}}
    cfg, _ = load_serve_config({"TOURNAMENT_WINNER": str(w), "TOURNAMENT_SERVE_CONFIG": json.dumps(over)})
    assert cfg.engine.compilation_config is None
