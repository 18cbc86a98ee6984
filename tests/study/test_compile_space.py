"""vLLM's `compilation_config` as a searched engine setting: dict-valued choices through Optuna's
categorical distribution, one engine group per choice."""

from __future__ import annotations

import json

import pytest

CC = {"mode": 0, "cudagraph_mode": "FULL_DECODE_ONLY"}


def _cfg(model_path: str, qa: str, **over):
    from tournament.study.config import parse_sweep_config

    doc = {"study": "cc", "candidates": [{"id": "tiny", "model_path": model_path}], "eval": {"path": qa},
           "space": {"engine": {"engine": "transformers", "device": "cpu", "compilation_config": {"choices": [None, CC]}},
                     "decode": {"max_tokens": [4, 6]}},
           "enqueue": [{"engine": {"compilation_config": CC}}, {"engine": {"compilation_config": None}}]}
    doc.update(over)
    return parse_sweep_config(doc)


def test_a_dict_valued_engine_choice_round_trips_into_the_serve_config(tiny_model_dir, tiny_qa_file):
    import optuna

    from tournament.serving.config import ServeConfig
    from tournament.study.inputs import resolve_candidates
    from tournament.study.space import enqueue_params, group_param_names, serve_config, suggest_plan

    cfg = _cfg(str(tiny_model_dir), str(tiny_qa_file))
    cands = resolve_candidates(cfg)
    assert "engine.compilation_config" in group_param_names(cfg, cands)  # a new server per choice
    study = optuna.create_study(directions=["maximize", "maximize"])
    for e in cfg.enqueue:
        study.enqueue_trial(enqueue_params(e, cfg, cands))
    plans = []
    for want in (CC, None):
        trial = study.ask()
        plan = suggest_plan(trial, cfg, cands)
        # Optuna holds the dict as JSON text; the plan and the server's config hold the dict
        assert trial.params["engine.compilation_config"] == (json.dumps(want, sort_keys=True) if want else None)
        assert plan.engine["compilation_config"] == want
        sc = serve_config(plan, cfg, cands["tiny"], str(tiny_model_dir))
        assert sc["engine"]["compilation_config"] == want
        assert ServeConfig.model_validate(json.loads(json.dumps(sc))).engine.compilation_config == want
        plans.append(plan)
    assert plans[0].group_key != plans[1].group_key
    # the same dict written in another key order is the same categorical value
    same = enqueue_params({"engine": {"compilation_config": {"cudagraph_mode": "FULL_DECODE_ONLY", "mode": 0}}},
                          cfg, cands)
    assert same["engine.compilation_config"] == json.dumps(CC, sort_keys=True)


def test_bad_compilation_config_values_and_fixed_list_settings(tiny_model_dir, tiny_qa_file):
    from tournament.study.config import SweepConfigError, parse_sweep_config

    with pytest.raises(SweepConfigError, match="space.engine.compilation_config"):
        _cfg(str(tiny_model_dir), str(tiny_qa_file),
             space={"engine": {"compilation_config": {"choices": [None, "FULL"]}}})
    # a fixed dict is one value, not a choice; a bare list for a list-valued setting is fixed too
    cfg = parse_sweep_config({"candidates": [{"id": "tiny", "model_path": str(tiny_model_dir)}],
                              "eval": {"path": str(tiny_qa_file)},
                              "space": {"engine": {"compilation_config": CC}, "decode": {"stop": ["\n\n"]}}})
    from tournament.study.config import normalize_param

    assert normalize_param("engine.compilation_config", CC) is None
    assert normalize_param("decode.stop", ["\n\n"]) is None
    assert normalize_param("decode.stop", {"choices": [[], ["\n\n"]]}).choices == [[], ["\n\n"]]
