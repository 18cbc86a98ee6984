"""vLLM's `compilation_config` as a searched engine setting (dict-valued choices through Optuna's
categorical distribution, one engine group per choice) and cold starts: with `judge.cold_start`
every server the sweep starts has its own empty compile cache under the study folder, gone once
the server stops. The servers are real serve.py processes on the tiny model (the transformers
engine ignores compilation_config, as it does every vLLM setting)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from tournament.cli import app

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
        assert plan.engine.compilation_config == want  # the plan carries validated settings (models)
        sc = serve_config(plan, cfg, cands["tiny"], str(tiny_model_dir))
        assert sc.engine.compilation_config == want
        assert ServeConfig.model_validate(json.loads(sc.model_dump_json())).engine.compilation_config == want
        plans.append(plan)
    assert plans[0].group_key != plans[1].group_key
    # the same dict written in another key order is the same categorical value
    same = enqueue_params({"engine": {"compilation_config": {"cudagraph_mode": "FULL_DECODE_ONLY", "mode": 0}}},
                          cfg, cands)
    assert same["engine.compilation_config"] == json.dumps(CC, sort_keys=True)


def test_enqueued_entries_naming_the_same_settings_share_one_engine_group(tiny_model_dir, tiny_qa_file):
    """A group setting an enqueue entry leaves out takes the space's first choice, not a fresh draw
    each time: two entries that differ only in decode settings land in one group (one server start)."""
    import optuna

    from tournament.study.inputs import resolve_candidates
    from tournament.study.space import enqueue_params, suggest_plan

    space = {"engine": {"engine": "transformers", "device": "cpu", "compilation_config": {"choices": [None, CC]},
                        "max_num_seqs": [384, 256, 512], "kv_cache_dtype": ["auto", "fp8"]},
             "decode": {"max_tokens": [4, 6, 8]}}
    entries = [{"engine": {"kv_cache_dtype": "fp8"}, "decode": {"max_tokens": m}} for m in (4, 6, 8)]
    cfg = _cfg(str(tiny_model_dir), str(tiny_qa_file), space=space, enqueue=entries)
    cands = resolve_candidates(cfg)
    params = [enqueue_params(e, cfg, cands) for e in cfg.enqueue]
    assert all(p["engine.max_num_seqs"] == 384 and p["engine.compilation_config"] is None for p in params)
    study = optuna.create_study(directions=["maximize", "maximize"],
                                sampler=optuna.samplers.RandomSampler(seed=3))
    for p in params:
        study.enqueue_trial(p)
    plans = [suggest_plan(study.ask(), cfg, cands) for _ in params]
    assert len({p.group_key for p in plans}) == 1
    assert [p.decode.max_tokens for p in plans] == [4, 6, 8]
    assert plans[0].engine.kv_cache_dtype == "fp8" and plans[0].engine.max_num_seqs == 384



def test_enqueued_groups_run_in_the_order_the_file_names_them(tiny_model_dir, tiny_qa_file, tmp_path):
    """A sweep cut short by --timeout runs the groups the user wrote first: entries of one group
    run together (one server start), groups in file order (a sort on the settings' text would run
    kv_cache_dtype auto before the fp8 group written first). Read from the study the sweep
    creates: Optuna hands waiting trials out in the order they were enqueued."""
    from optuna.trial import TrialState

    from tournament.study.sweep import Sweep
    from tournament.study.sweep_result import SweepOptions

    space = {"engine": {"engine": "transformers", "device": "cpu", "kv_cache_dtype": ["auto", "fp8"]},
             "decode": {"max_tokens": [4, 6, 8]}}
    entries = [{"engine": {"kv_cache_dtype": k}, "decode": {"max_tokens": m}}
               for k, m in (("fp8", 4), ("auto", 4), ("fp8", 6), ("auto", 8))]
    cfg = _cfg(str(tiny_model_dir), str(tiny_qa_file), space=space, enqueue=entries)
    runs = tmp_path / "runs"
    sweep = Sweep(cfg, SweepOptions(trials=4, study="order", storage=f"sqlite:///{tmp_path / 'optuna.db'}",
                                    runs_dir=runs, tracking=False), echo=lambda s: None)
    waiting = sorted(sweep._study().get_trials(states=(TrialState.WAITING,)), key=lambda t: t.number)
    assert [(t.system_attrs["fixed_params"]["engine.kv_cache_dtype"], t.system_attrs["fixed_params"]["decode.max_tokens"])
            for t in waiting] == [("fp8", 4), ("fp8", 6), ("auto", 4), ("auto", 8)]


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
    assert cfg.judge.cold_start is False


def _environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes()
    return dict(x.split("=", 1) for x in raw.decode("utf-8", "replace").split("\0") if "=" in x)


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc/<pid>/environ (Linux)")
def test_cold_start_servers_get_their_own_empty_compile_cache(tmp_path, tiny_model_dir, monkeypatch):
    from tournament.study.servers import GroupServers, PidFile

    for var in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    study = tmp_path / "studies" / "cc"
    cache = study / "compile-cache"
    config = {"model": {"path": str(tiny_model_dir)}, "warmup": False,
              "engine": {"engine": "transformers", "device": "cpu", "compilation_config": CC}}
    monkeypatch.chdir(tmp_path)  # a relative runs folder (the default, mlruns): the server runs elsewhere
    servers = GroupServers(study / "servers", PidFile(tmp_path), 120, str, together=False,
                           compile_cache=cache.relative_to(tmp_path))
    try:
        assert servers.ensure("g1", {"ship": config, "unseen": config})
        roots = {}
        for role, s in servers.servers.items():
            env = _environ(s.proc.proc.pid)
            root = Path(env["VLLM_CACHE_ROOT"])
            assert root.is_absolute() and root.parent == cache and root.is_dir() and root == s.cache_dir
            assert env["TRITON_CACHE_DIR"].startswith(str(root)) and env["TORCHINDUCTOR_CACHE_DIR"].startswith(str(root))
            roots[role] = root
        assert roots["ship"] != roots["unseen"]  # one cache per server, never shared
        assert servers.ensure("g2", {"ship": config})  # a new group: the old servers and their caches go
        assert not any(r.exists() for r in roots.values())
        assert Path(_environ(servers.ship.proc.proc.pid)["VLLM_CACHE_ROOT"]) not in roots.values()
    finally:
        servers.stop()
    assert cache.is_dir() and not list(cache.iterdir())

    # without cold starts the server keeps this machine's caches (nothing set, nothing made)
    plain = GroupServers(study / "servers", PidFile(tmp_path), 120, str, together=False)
    try:
        plain.ensure("g3", {"ship": config})
        assert "VLLM_CACHE_ROOT" not in _environ(plain.ship.proc.proc.pid) and plain.ship.cache_dir is None
    finally:
        plain.stop()


def test_a_failed_cold_start_leaves_no_cache_behind(tmp_path, monkeypatch):
    from tournament.study.servers import GroupServers, PidFile

    cache = tmp_path / "compile-cache"
    servers = GroupServers(tmp_path / "servers", PidFile(tmp_path), 60, lambda e: str(e)[-200:], compile_cache=cache)
    bad = {"model": {"path": str(tmp_path / "no-such-model")}, "engine": {"engine": "transformers", "device": "cpu"}}
    with pytest.raises(RuntimeError):
        servers.ensure("bad", {"ship": bad})
    assert "bad" in servers.bad_groups and not list(cache.iterdir())


def test_a_cold_start_sweep_over_compilation_config(tmp_path, tiny_model_dir, tiny_qa_file, runs_dir):
    import optuna

    sweep = tmp_path / "cc.yaml"
    sweep.write_text(yaml.safe_dump({
        "study": "cc", "trials": 2, "decode_trials_per_engine": 1,
        "candidates": [{"id": "tiny", "model_path": str(tiny_model_dir)}], "eval": {"path": str(tiny_qa_file), "limit": 2},
        "judge": {"set": "basic", "pass_mark": 0.0, "health_timeout": 120, "cold_start": True},
        "space": {"engine": {"engine": "transformers", "device": "cpu", "compilation_config": {"choices": [None, CC]}},
                  "decode": {"max_tokens": 4}},
        "enqueue": [{"engine": {"compilation_config": CC}}, {"engine": {"compilation_config": None}}],
    }), encoding="utf-8")
    r = CliRunner().invoke(app, ["sweep", "-c", str(sweep), "--runs-dir", str(runs_dir), "--json", "--no-mlflow"])
    assert r.exit_code == 0, r.output
    st = optuna.load_study(study_name="cc", storage=f"sqlite:///{runs_dir / 'optuna.db'}")
    done = [t for t in st.get_trials() if t.state.name == "COMPLETE"]
    assert sorted(json.dumps(t.user_attrs["serve_config"]["engine"]["compilation_config"], sort_keys=True)
                  for t in done) == sorted(
        [json.dumps(CC, sort_keys=True), "null"])
    assert len({t.user_attrs["group_key"] for t in done}) == 2
    assert all(t.user_attrs["metrics"]["cold_start"] == 1.0 for t in done)
    assert st.user_attrs["judge"]["cold_start"] is True
    cache = runs_dir / "studies" / "cc" / "compile-cache"
    assert cache.is_dir() and not list(cache.iterdir())  # every server's cache went with it
