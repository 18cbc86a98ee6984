"""A new build swapped into running servers (`POST /admin/load`, study/weight_swap.py): real
`serve:app` processes on loopback with tiny random models of one architecture and tokenizer but
other weights. A swapped server must answer exactly as a fresh server of the new build."""

import json
import shutil

import httpx
import pytest

from tests.conftest import spread_weights
from tournament.models.tiny import build_tiny_model
from tournament.serving.config import ServeConfig
from tournament.study.servers import GroupServers, PidFile
from tournament.study.weight_swap import engine_settings_key, model_signature, why_not_swap

QUESTIONS = ["什么是 warp？", "解释 memory coalescing", "CUDA kernel 如何启动？", "什么是 tiling？"]


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """Three builds of one base (the same tokenizer, config and generation files, other weights)
    and one of another architecture."""
    root = tmp_path_factory.mktemp("builds")
    out = {name: spread_weights(build_tiny_model(root / name, seed=seed), seed) for name, seed in (("a", 0), ("b", 1), ("c", 2))}
    out["wide"] = build_tiny_model(root / "wide", hidden_size=32, seed=3)
    return out


def _config(model_dir, **engine):
    return {"model": {"path": str(model_dir)}, "warmup": False, "decode": {"max_tokens": 10},
            "engine": {"engine": "transformers", "device": "cpu", "batch_size": 4, "max_model_len": 256, **engine}}


def _answers(url):
    r = httpx.post(url + "/predict", json={"prompt": QUESTIONS}, timeout=120)
    assert r.status_code == 200, r.text
    return r.json()["response"]


def test_what_may_be_swapped(builds, tmp_path):
    a, b, wide = (ServeConfig.model_validate(_config(builds[k])) for k in ("a", "b", "wide"))
    assert model_signature(builds["a"]) == model_signature(builds["b"]) != model_signature(builds["wide"])
    assert why_not_swap(a, b) is None
    assert why_not_swap(a, b.model_copy(update={"decode": a.decode.model_copy(update={"max_tokens": 3})})) is None
    assert "architecture" in why_not_swap(a, wide)
    assert "engine settings" in why_not_swap(a, ServeConfig.model_validate(_config(builds["b"], max_model_len=128)))
    gguf = a.model_copy(update={"model": a.model.model_copy(update={"gguf_file": "m.gguf"})})
    assert "GGUF" in why_not_swap(gguf, b)
    # saving noise does not count; another tokenizer or generation config does
    copy = tmp_path / "copy"
    shutil.copytree(builds["b"], copy)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "_name_or_path": "/elsewhere", "transformers_version": "0"}))
    assert model_signature(copy) == model_signature(builds["a"])
    gen = json.loads((copy / "generation_config.json").read_text())
    (copy / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": [1, 2]}))
    assert model_signature(copy) != model_signature(builds["a"])
    assert model_signature(tmp_path) is None  # no config.json: never swapped


def test_a_swapped_pair_answers_as_fresh_servers_of_the_new_build(builds, tmp_path):
    servers = GroupServers(tmp_path / "servers", PidFile(tmp_path), 120, str, together=False, swap=True,
                           check_questions=QUESTIONS[:3])
    try:
        assert servers.ensure("a", {"ship": _config(builds["a"]), "unseen": _config(builds["c"])})
        pids = {r: s.proc.proc.pid for r, s in servers.servers.items()}
        before = _answers(servers.ship.proc.url)
        health = servers.ship.health_seconds

        # a new recipe on the same engine settings: its weights go into the running pair
        assert servers.ensure("b", {"ship": _config(builds["b"]), "unseen": _config(builds["a"])}) is False
        assert servers.swapped is not None and servers.key == "b"
        # the first swap went there and back on the ship: build a's greedy answers came back
        assert servers.swap_note.startswith("weight swap checked: 3 greedy answers came back")
        settings = engine_settings_key(ServeConfig.model_validate(_config(builds["b"])))
        assert servers.swap_checked == {settings} and not servers.swap_off  # once a sweep for these settings
        assert {r: s.proc.proc.pid for r, s in servers.servers.items()} == pids
        assert servers.ship.health_seconds == health  # the servers' start stands for the new build
        swapped_ship, swapped_unseen = _answers(servers.ship.proc.url), _answers(servers.servers["unseen"].proc.url)
        info = httpx.get(servers.ship.proc.url + "/info", timeout=5).json()
        assert info["config"]["model"]["path"] == str(builds["b"]) and info["stats"]["weight_swaps"] == 3  # b, a, b
        assert swapped_unseen == _fresh(builds["a"], tmp_path / "fa")
        assert swapped_ship == _fresh(builds["b"], tmp_path / "fb") != before
        assert servers.ensure("b", {"ship": _config(builds["b"]), "unseen": _config(builds["a"])}) is False
        assert servers.swapped is None  # the same group: nothing to do

        # another architecture, or other engine settings: new servers
        assert servers.ensure("wide", {"ship": _config(builds["wide"]), "unseen": _config(builds["wide"])})
        assert servers.swapped is None and servers.ship.proc.proc.pid not in pids.values()
        assert servers.ensure("short", {"ship": _config(builds["a"], max_model_len=128)})
    finally:
        servers.stop()


def _fresh(model_dir, tmp_path):
    servers = GroupServers(tmp_path, PidFile(tmp_path), 120, str, swap=False)
    try:
        servers.ensure("fresh", {"ship": _config(model_dir)})
        return _answers(servers.ship.proc.url)
    finally:
        servers.stop()


def test_admin_load_refuses_bad_requests_and_a_failed_swap_is_never_served(builds, tmp_path):
    from tournament.serving.process import ServerProcess

    with ServerProcess(_config(builds["a"]), log_path=tmp_path / "s.log", sweep_mode=True) as server:
        server.wait_healthy(120)
        url = server.url + "/admin/load"
        for body in (b"not json", b"[1]", json.dumps({"path": ""}).encode(), json.dumps({"path": 3}).encode()):
            r = httpx.post(url, content=body, timeout=10)
            assert r.status_code == 400 and "bad admin request" in r.json()["error"], body
        r = httpx.post(url, json={"path": str(tmp_path / "missing")}, timeout=10)
        assert r.status_code == 400 and "does not exist" in r.json()["error"]
        assert _answers(server.url)  # still serving build a

        # a folder with a tokenizer but no loadable weights: the swap fails part-way, and the
        # server refuses to answer from weights it cannot vouch for (the sweep then restarts it)
        broken = tmp_path / "broken"
        shutil.copytree(builds["b"], broken)
        for f in broken.glob("*.safetensors"):
            f.write_bytes(b"garbage")
        r = httpx.post(url, json={"path": str(broken)}, timeout=60)
        assert r.status_code == 500 and "weight swap failed" in r.json()["error"]
        r = httpx.post(server.url + "/predict", json={"prompt": "什么是 warp？"}, timeout=30)
        assert r.status_code == 503 and "weight swap failed" in r.json()["error"]
        assert httpx.get(server.url + "/info", timeout=5).json()["broken"]

    with ServerProcess(_config(builds["a"]), log_path=tmp_path / "judge.log") as server:  # the judge's mode
        server.wait_healthy(120)
        assert httpx.post(server.url + "/admin/load", json={"path": str(builds["b"])}, timeout=10).status_code == 404


def test_a_parked_pair_takes_the_next_build_of_its_settings(builds, tmp_path):
    """keep=2: draws alternating between two engine settings (here two architectures) swap into
    the pair that runs theirs, instead of a start each time; stop() ends them all."""
    servers = GroupServers(tmp_path / "servers", PidFile(tmp_path), 120, str, together=False, swap=True, keep=2)
    try:
        assert servers.ensure("a", {"ship": _config(builds["a"])})
        pid_a = servers.ship.proc.proc.pid
        assert servers.ensure("wide", {"ship": _config(builds["wide"])})  # another architecture: a start
        pid_wide = servers.ship.proc.proc.pid
        assert [k for k, _ in servers.parked] == ["a"]
        assert servers.ensure("b", {"ship": _config(builds["b"])}) is False  # into a's parked server
        assert servers.swapped is not None and servers.ship.proc.proc.pid == pid_a
        assert [k for k, _ in servers.parked] == ["wide"]
        assert _answers(servers.ship.proc.url) == _fresh(builds["b"], tmp_path / "fb")
        assert servers.ensure("wide", {"ship": _config(builds["wide"])}) is False  # as it was: no swap
        assert servers.swapped is None and servers.changed and servers.ship.proc.proc.pid == pid_wide
        assert servers.ensure("wide", {"ship": _config(builds["wide"])}) is False and not servers.changed
        procs = [servers.ship.proc] + [s.proc for _, group in servers.parked for s in group.values()]
        assert servers.ensure("short", {"ship": _config(builds["a"], max_model_len=128)})  # a third: one stops
        assert len(servers.parked) == 1 and sum(p.alive() for p in procs) == 1
    finally:
        servers.stop()
    assert not any(p.alive() for p in procs) and not servers.parked


def test_a_failed_check_of_the_first_swap_turns_swaps_off_on_its_engine_settings(builds, tmp_path):
    """The first swap on each engine settings goes there and back (the pair test above sees it
    pass). A folder whose weights changed under a running server (what a reload that loads stale or
    wrong tensors looks like from outside) fails it: swaps on those settings are off, new servers.
    Other engine settings still swap, after their own check (on an H100, the fp8 pair failed its
    check and the bf16 pair's swaps were right)."""
    questions = QUESTIONS[:3]
    moved = tmp_path / "moved"
    shutil.copytree(builds["a"], moved)
    servers = GroupServers(tmp_path / "bad", PidFile(tmp_path), 120, str, together=False, swap=True,
                           check_questions=questions, keep=2)
    try:
        servers.ensure("m", {"ship": _config(moved)})
        pid = servers.ship.proc.proc.pid
        for f in builds["c"].glob("*.safetensors"):  # the folder now holds other weights (a new file:
            shutil.copy(f, moved / (f.name + ".new"))  # the running server may map the old one)
            (moved / (f.name + ".new")).replace(moved / f.name)
        started = servers.ensure("b", {"ship": _config(builds["b"])})
        assert started, servers.swap_note  # started: the check failed
        assert "changed after a swap there and back" in servers.swap_note and servers.swap
        bad = engine_settings_key(ServeConfig.model_validate(_config(builds["b"])))
        assert list(servers.swap_off) == [bad] and servers.ship.proc.proc.pid != pid and servers.swapped is None
        # other engine settings: a start, then the next build of them swaps in after its own check
        assert servers.ensure("a-short", {"ship": _config(builds["a"], max_model_len=128)})
        short_pid = servers.ship.proc.proc.pid
        assert servers.ensure("b-short", {"ship": _config(builds["b"], max_model_len=128)}) is False
        assert servers.swapped is not None and servers.ship.proc.proc.pid == short_pid
        assert servers.swap_note.startswith("weight swap checked") and len(servers.swap_checked) == 2
        # the failed settings swap no more: their next build starts servers (the parked pair stops)
        assert servers.ensure("c", {"ship": _config(builds["c"])}) and servers.swapped is None
    finally:
        servers.stop()
