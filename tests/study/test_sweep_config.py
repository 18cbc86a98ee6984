"""The sweep file's judge section: judge.set (the question set) and judge.hardware (the hardware
track, whose health limit the `health` constraint uses); the old key judge.track still reads."""

from __future__ import annotations

import warnings

import pytest
import yaml

from tournament.study.config import (
    SweepConfigError,
    load_sweep_config,
    parse_sweep_config,
    stored_judge_set,
)


def _cfg(judge: dict, **over):
    return parse_sweep_config({"candidates": ["candidates/x.yaml"], "eval": {"path": "eval.jsonl"},
                               "judge": judge, **over}, source="sweep.yaml")


def test_set_and_hardware():
    j = _cfg({"set": "plus", "hardware": "paratera", "sets": ["basic"]}).judge
    assert (j.set, j.hardware, j.questions, j.health_timeout) == ("bonus", "paratera", 358, 420.0)
    assert j.sets == ["bonus", "basic"] and j.start_timeout == 3 * 420.0
    j = _cfg({}).judge
    assert (j.set, j.hardware, j.health_timeout, j.sets) == ("basic", "metax", 180.0, ["basic"])
    assert _cfg({"hardware": "paratera", "health_timeout": 60}).judge.health_timeout == 60  # given: kept


def test_moore_threads_gives_its_health_limit():
    j = _cfg({"hardware": "moore-threads"}).judge
    assert j.hardware == "moore-threads" and j.health_timeout == 180.0
    assert _cfg({"hardware": "mthreads"}).judge.hardware == "moore-threads"  # the image track's name
    with pytest.raises(SweepConfigError, match="moore-threads: Moore Threads S4000 has no vLLM"):
        _cfg({"hardware": "moore-threads"}, space={"engine": {"engine": ["transformers", "vllm"]}})
    assert _cfg({"hardware": "moore-threads"}, space={"engine": {"engine": "transformers"}}).judge.hardware


def test_an_unknown_hardware_is_a_clear_error():
    with pytest.raises(SweepConfigError) as e:
        _cfg({"hardware": "nvidia"})
    msg = str(e.value)
    assert "sweep.yaml" in msg and "judge.hardware" in msg and "'nvidia'" in msg
    assert all(name in msg for name in ("metax", "paratera", "moore-threads"))
    with pytest.raises(SweepConfigError, match="judge.set: .*unknown judge set 'extra'"):
        _cfg({"set": "extra"})


def test_the_old_track_key_still_reads_with_a_deprecation_warning(tmp_path):
    p = tmp_path / "old.yaml"
    p.write_text(yaml.safe_dump({"candidates": ["candidates/x.yaml"], "eval": {"path": "eval.jsonl"},
                                 "judge": {"track": "bonus", "sets": ["basic"]}}), encoding="utf-8")
    with pytest.warns(DeprecationWarning, match=r"old\.yaml: judge\.track is deprecated, write judge\.set"):
        cfg = load_sweep_config(p)
    assert (cfg.judge.set, cfg.judge.hardware, cfg.judge.questions, cfg.judge.sets) == ("bonus", "metax", 358, ["bonus", "basic"])
    assert "track" not in cfg.judge.model_dump()
    with pytest.warns(DeprecationWarning):
        assert _cfg({"track": "basic", "set": "basic"}).judge.set == "basic"  # both, agreeing
    with pytest.warns(DeprecationWarning), pytest.raises(SweepConfigError, match=r"judge.track \(bonus\) and judge.set \(basic\) differ"):
        _cfg({"track": "bonus", "set": "basic"})


def test_the_new_keys_warn_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _cfg({"set": "basic", "hardware": "metax"})


def test_a_stored_judge_section_of_any_version():
    assert stored_judge_set({"set": "bonus", "track": "basic"}) == "bonus"  # set first
    assert stored_judge_set({"track": "bonus"}) == "bonus"  # a study or winner.json before judge.set
    assert stored_judge_set({}) == stored_judge_set(None) == "basic" and stored_judge_set({}, "?") == "?"


def test_shipped_sweep_files_use_the_new_keys():
    from tournament.paths import REPO_ROOT

    files = sorted((REPO_ROOT / "sweeps").glob("*.yaml"))
    assert files
    for f in files:
        with warnings.catch_warnings():
            warnings.simplefilter("error", DeprecationWarning)
            cfg = load_sweep_config(f)
        assert cfg.judge.hardware == "metax", f
