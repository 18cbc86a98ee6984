"""Training on transformers' Trainer: the prompt carries no loss, what a build records (peak
memory, time, kernels), the recipe keys it adds (liger, gradient_checkpointing), the arguments
for several processes, and how many builds fit side by side on one GPU."""

from __future__ import annotations

import json

import pytest

from tests.train.test_train import _cand
from tournament.candidates import CandidateError, parse_candidate
from tournament.train.build import ensure_built



def test_prompt_tokens_carry_no_loss(tiny_model_dir):
    """Through the collator Trainer uses, the loss's gradient reaches no logit that predicts a
    prompt token (nor padding); the logit that predicts the first answer token gets one."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tournament.prompting import PromptSpec
    from tournament.train.examples import IGNORE, CompletionCollator, encode_example

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    spec = PromptSpec(style="chat", system="简洁回答")
    items = [dict(zip(("input_ids", "labels"), encode_example(tok, spec, q, a, 128)))
             for q, a in [("什么是 warp？", "warp 是调度单位。"), ("什么是 tiling，它为什么减少访存？", "分块。")]]
    batch = CompletionCollator(tok.pad_token_id)(items)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    out = model(**batch)
    out.logits.retain_grad()
    out.loss.backward()
    grad = out.logits.grad.abs().sum(-1)  # per position: the gradient on the logits there
    for row, item in enumerate(items):
        n_prompt = sum(1 for x in item["labels"] if x == IGNORE)
        n = len(item["input_ids"])
        assert n_prompt > 0 and (batch["labels"][row, :n_prompt] == IGNORE).all()
        assert (batch["labels"][row, n:] == IGNORE).all() and (batch["attention_mask"][row, n:] == 0).all()
        # logits at t predict token t+1: positions 0..n_prompt-2 predict prompt tokens
        assert torch.count_nonzero(grad[row, : n_prompt - 1]) == 0
        assert (grad[row, n_prompt - 1: n - 1] > 0).all()  # every answer token (and the EOS) counts
        assert torch.count_nonzero(grad[row, n - 1:]) == 0  # the last token and the padding predict nothing
    # the same loss as a cross-entropy over the answer tokens alone
    logits, labels = out.logits[:, :-1].detach(), batch["labels"][:, 1:]
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                           ignore_index=IGNORE)
    assert float(out.loss.detach()) == pytest.approx(float(ce), rel=1e-5)


def test_length_grouped_batches_train(tiny_model_dir, dataset, tmp_path):
    """recipe.group_by_length: Trainer's LengthGroupedSampler reads our examples' input_ids."""
    cand = _cand(tiny_model_dir, dataset, "full", cid="gbl", group_by_length=True, batch_size=2)
    doc = json.loads((ensure_built(cand, tmp_path, max_steps=2).parent / "candidate.json").read_text())
    assert doc["train"]["steps"] == 2 and all(loss > 0 for _, loss in doc["train"]["loss_curve"])
    assert doc["candidate"]["recipe"]["group_by_length"] is True


def test_build_records_peak_memory_time_and_kernels(tiny_model_dir, dataset, tmp_path):
    """A LoRA build with gradient checkpointing trains on Trainer and its candidate.json says
    what it held at peak (CPU: the process's peak RSS), how long it trained, and that Liger
    kernels were not used (auto, on the CPU)."""
    cand = _cand(tiny_model_dir, dataset, "lora", cid="gc", gradient_checkpointing=True)
    assert cand.recipe.liger == "auto"
    doc = json.loads((ensure_built(cand, tmp_path, max_steps=2).parent / "candidate.json").read_text())
    tr = doc["train"]
    assert tr["trainer"] == "transformers.Trainer" and tr["steps"] == 2
    assert tr["gradient_checkpointing"] is True and tr["liger"] is False and tr["processes"] == 1
    assert tr["peak_memory"]["kind"] == "cpu_max_rss" and tr["peak_memory"]["bytes"] > 50 * 2**20
    assert tr["train_seconds"] > 0 and doc["wall_seconds"] >= tr["train_seconds"]
    assert "liger-kernel" in doc["versions"]
    assert all(loss > 0 for _, loss in tr["loss_curve"])
    from tournament.train.build import build_summary

    summary = build_summary(cand, cand.build_dir(tmp_path, 2) / "model", 2)  # `tournament train --json`
    assert summary["peak_memory_bytes"] == tr["peak_memory"]["bytes"] and summary["peak_memory_kind"] == "cpu_max_rss"


def test_liger_setting(tiny_model_dir, dataset):
    import importlib.util

    from tournament.train.sft import use_liger

    installed = importlib.util.find_spec("liger_kernel") is not None
    assert use_liger("auto", "cpu") is False and use_liger(False, "cuda") is False
    assert use_liger("auto", "cuda") is installed
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        use_liger(True, "cpu")
    if not installed:
        with pytest.raises(ValueError, match=r"pip install 'tournament\[liger\]'"):
            use_liger(True, "cuda")
    # a compute choice, not a weight choice: outside the config hash, like the device
    hashes = {_cand(tiny_model_dir, dataset, liger=v).config_hash() for v in ("auto", True, False)}
    assert len(hashes) == 1
    assert _cand(tiny_model_dir, dataset, gradient_checkpointing=True).config_hash() not in hashes
    with pytest.raises(CandidateError, match="recipe.liger"):
        parse_candidate({"id": "x", "base": {"path": "m"},
                         "recipe": {"method": "full", "dataset": "d", "liger": "sometimes"}})


def test_arguments_for_several_processes(tiny_model_dir, dataset, tmp_path):
    """Under `accelerate launch` the recipe's batch is split over the processes (same steps,
    same global batch on any GPU count); Trainer's own reporting and progress bars are off."""
    from tournament.train.sft import training_arguments

    cand = _cand(tiny_model_dir, dataset, batch_size=8, grad_accum=2, scheduler="constant")
    args = training_arguments(cand, tmp_path, device="cpu", total_steps=10, warmup=1, amp=False, liger=False,
                              world_size=2)
    assert args.per_device_train_batch_size == 4 and args.gradient_accumulation_steps == 2
    assert args.max_steps == 10 and args.lr_scheduler_type.value == "constant_with_warmup"
    assert args.report_to in ([], "none", ["none"]) and args.disable_tqdm and args.output_dir.endswith("checkpoints")
    assert args.train_sampling_strategy == "random"
    grouped = training_arguments(_cand(tiny_model_dir, dataset, batch_size=8, group_by_length=True), tmp_path,
                                 device="cpu", total_steps=10, warmup=1, amp=False, liger=False, world_size=1)
    assert grouped.train_sampling_strategy == "group_by_length"
    assert args.use_liger_kernel is False and not args.liger_kernel_config
    # Liger: the layer kernels, the fused loss only when memory needs it (`auto`) or when forced
    kw = dict(device="cuda", total_steps=10, warmup=1, amp=False, world_size=1)
    layers = training_arguments(cand, tmp_path, liger=True, fused_loss=False, **kw)
    assert layers.use_liger_kernel and layers.liger_kernel_config == {"fused_linear_cross_entropy": False,
                                                                       "cross_entropy": False}
    assert training_arguments(cand, tmp_path, liger=True, **kw).liger_kernel_config["fused_linear_cross_entropy"]
    with pytest.raises(ValueError, match="does not split over 3 processes"):
        training_arguments(cand, tmp_path, device="cpu", total_steps=10, warmup=1, amp=False, liger=False,
                           world_size=3)


def test_non_main_process_neither_locks_nor_tracks(tmp_path, monkeypatch):
    """The main process of a launch holds the build's lock for all: another rank must not wait on it."""
    import threading

    from tournament.train.build import build_lock, training_tracker
    from tournament.train.sft import world

    target = tmp_path / "x-1"
    held = threading.Event()
    release = threading.Event()

    def holder():
        with build_lock(target):
            held.set()
            release.wait(30)

    t = threading.Thread(target=holder, daemon=True)
    t.start()
    assert held.wait(10)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert world() == (2, False)
    entered = threading.Event()

    def rank1():
        with build_lock(target):
            entered.set()

    threading.Thread(target=rank1, daemon=True).start()
    assert entered.wait(5)  # did not wait for the holder
    release.set()
    t.join(10)
    assert training_tracker(None) is None


# -- how many builds fit side by side --------------------------------------------------------------
GiB = 2**30


def test_builds_that_fit():
    from tournament.train.memory import CUDA_CONTEXT_BYTES, builds_that_fit

    # 3 GiB peaks on an empty 80 GiB card: (80 * 0.9) // (3 + 0.75) = 19
    assert builds_that_fit([3 * GiB, 2 * GiB], 80 * GiB) == int(80 * GiB * 0.9) // (3 * GiB + CUDA_CONTEXT_BYTES)
    assert builds_that_fit([3 * GiB], 80 * GiB, max_workers=4) == 4
    assert builds_that_fit([54 * GiB], 139 * GiB) == 2  # full SFT of gemma-3-270m without Liger on an H200
    assert builds_that_fit([54 * GiB], 78 * GiB) == 1  # one always runs
    assert builds_that_fit([], 80 * GiB) == 1  # nothing measured: no guess
    assert builds_that_fit([None, 0], 80 * GiB) == 1


def test_a_failure_for_want_of_gpu_memory_is_told_apart():
    """What a build child's last lines say when the GPU ran out (torch, CUDA, cuBLAS) against a
    recipe's own failure: only the first kind trains again with fewer builds beside it."""
    from tournament.train.memory import out_of_memory

    assert out_of_memory(RuntimeError("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert out_of_memory("RuntimeError: CUDA error: out of memory")
    assert out_of_memory("CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`")
    assert not out_of_memory(ValueError("recipe.rank must be positive"))
    assert not out_of_memory("building c failed in its child process (exit -9):")  # a kill says nothing


def test_measured_peaks_read_earlier_builds(tmp_path):
    from tournament.train.memory import measured_peaks, plan_build_workers

    def manifest(folder: str, cid: str, peak: dict | None) -> None:
        d = tmp_path / folder
        d.mkdir()
        (d / "candidate.json").write_text(json.dumps({"id": cid, "train": {"peak_memory": peak} if peak else None}))

    manifest("a-1", "a", {"kind": "cuda_max_allocated", "bytes": 5 * GiB, "reserved_bytes": 6 * GiB})
    manifest("a-2", "a", {"kind": "cuda_max_allocated", "bytes": 7 * GiB})  # an older record: allocated only
    manifest("b-1", "b", {"kind": "cpu_max_rss", "bytes": 9 * GiB})  # a CPU build says nothing of a GPU
    manifest("c-1", "c", None)  # an untrained base
    (tmp_path / "broken-1").mkdir()
    (tmp_path / "broken-1" / "candidate.json").write_text("{")
    assert measured_peaks(tmp_path) == {"a": 7 * GiB}
    assert measured_peaks(tmp_path, ["b", "c"]) == {}
    n, why = plan_build_workers(tmp_path, ["b"], gpu=0)
    assert n == 1 and ("no earlier build" in why or "no free-memory reading" in why)



def test_servers_stay_through_a_batch_only_when_its_long_builds_fit_beside_them(tmp_path, monkeypatch):
    """Before recipes train, the sweep keeps its servers when the batch's refits (one per recipe)
    fit beside them as many at a time as on the whole card; else they stop. 80 GiB card, builds
    of 25 GiB measured: 2 fit alone (72 GiB planned). No reading: a CPU machine, room; no
    measured peak on a GPU: no guess, no room."""
    from tournament.train import memory

    readings = {"free": 48 * GiB, "total": 80 * GiB}  # two server pairs of 16 GiB up
    monkeypatch.setattr(memory, "gpu_memory_bytes", lambda gpu=0, field="free": readings[field])
    assert not memory.room_for_builds(tmp_path, 1)  # nothing measured yet
    d = tmp_path / "r-1"
    d.mkdir()
    (d / "candidate.json").write_text(json.dumps({"id": "r", "train": {"peak_memory": {
        "kind": "cuda_max_allocated", "bytes": 24 * GiB, "reserved_bytes": 25 * GiB}}}))
    assert memory.room_for_builds(tmp_path, 1)  # one recipe: its refit fits beside them
    assert not memory.room_for_builds(tmp_path, 4)  # four: 1 slot beside them, 2 without
    readings["free"] = 64 * GiB  # one pair up: 2 slots, as many as without it
    assert memory.room_for_builds(tmp_path, 4) and memory.room_for_builds(tmp_path, 2)
    readings["free"] = 20 * GiB  # not even one
    assert not memory.room_for_builds(tmp_path, 1)
    readings["free"] = None
    assert memory.room_for_builds(tmp_path, 4)

def test_liger_auto_turns_on_only_when_the_build_would_not_fit():
    """`liger: auto` weighs memory against time: on one H100 (2026-12-07, BENCHMARKS.md) Liger
    made a gemma-3-270m full SFT 2.8x slower per step for 3.3x less memory. The estimate without
    Liger, from the model's shapes, must cover what was measured there (and not by much more),
    so that a build that fits runs without Liger and one that does not turns it on."""
    from tournament.train.memory import liger_needed, training_bytes_without_liger

    GiB = 2**30
    gemma = {"micro_tokens": 16 * 512, "vocab": 262_144, "hidden": 640, "layers": 18}  # batch 16 x 512
    params = 268_098_176
    full = training_bytes_without_liger(trainable=params, frozen_bytes=0, **gemma)
    lora = training_bytes_without_liger(trainable=3_796_992, frozen_bytes=2 * params, **gemma)  # r16, bf16 base
    for est, measured in ((full, 26.45 * GiB), (lora, 20.09 * GiB)):  # torch's peak allocated, H100
        assert 1.0 <= est / measured <= 1.5
    free_h100, free_24gb = 79 * GiB, 23 * GiB
    assert not liger_needed(full, free_h100) and not liger_needed(lora, free_h100)  # fits: faster without
    assert liger_needed(full, free_24gb) and liger_needed(lora, free_24gb)  # a 24 GB card: Liger or no build
    assert liger_needed(full, 80 * GiB - 68 * GiB)  # another build beside it holds 68 GB


def test_side_by_side_builds_plan_liger_for_their_share_of_the_gpu(monkeypatch):
    """A parent that starts N builds at once tells its children (their environment), so each
    plans with 1/N of the free memory: N gemma-3-270m full SFTs on an H100 turn Liger on together."""
    from tournament.train.memory import (AT_ONCE_ENV, builds_at_once, builds_sharing_the_gpu, liger_needed,
                                         training_bytes_without_liger)

    monkeypatch.delenv(AT_ONCE_ENV, raising=False)
    GiB = 2**30
    full = training_bytes_without_liger(trainable=268_098_176, frozen_bytes=0, micro_tokens=8192, vocab=262_144,
                                        hidden=640, layers=18)
    assert builds_sharing_the_gpu() == 1
    with builds_at_once(3):
        assert builds_sharing_the_gpu() == 3
        assert liger_needed(full, 79 * GiB // builds_sharing_the_gpu())
        with builds_at_once(1):
            assert not liger_needed(full, 79 * GiB // builds_sharing_the_gpu())
        assert builds_sharing_the_gpu() == 3
    assert AT_ONCE_ENV not in __import__("os").environ


def test_side_by_side_builds_plan_with_the_parents_reading_of_free_memory(monkeypatch):
    """The children of a batch start one after another; each reading the free memory itself would
    see the earlier ones' allocations and divide what is left again (on one H100 two of three
    refits turned Liger's slow fused loss on that way). The parent reads it once, before any of
    them allocates, and hands each its share."""
    import os

    from tournament.train import memory

    GiB = 2**30
    monkeypatch.delenv(memory.SHARE_ENV, raising=False)
    monkeypatch.setattr(memory, "free_gpu_bytes", lambda gpu=0: 78 * GiB)
    with memory.builds_at_once(4):
        assert os.environ[memory.SHARE_ENV] == str(78 * GiB // 4)
    assert memory.SHARE_ENV not in os.environ
    monkeypatch.setattr(memory, "free_gpu_bytes", lambda gpu=0: None)  # no reading: each child reads its own
    with memory.builds_at_once(2):
        assert memory.SHARE_ENV not in os.environ and os.environ[memory.AT_ONCE_ENV] == "2"


def test_side_by_side_builds_decide_the_fused_loss_by_their_kinds_measured_peak(tiny_model_dir, tmp_path,
                                                                                monkeypatch):
    """The parent plans the builds of a batch with the peak a probe of their kind measured; each
    child must decide Liger's fused loss by that same peak, not by the shape estimate, which runs
    high (H100, 2026-12-07: batch 32 of gemma-3-270m estimated ~21 GiB, measured 13.8 GiB). With
    the estimate, three refits planned 3 at once on 58 GiB each found 19.6 GiB too little, turned the
    fused loss on and stepped at 1.4 s instead of ~0.3 s. A build that used the fused loss, or one
    of another kind, says nothing of this one's peak without it."""
    from transformers import AutoModelForCausalLM

    from tournament.train import memory

    def manifest(folder: str, cid: str, recipe: dict, peak_gib: float, fused: bool = False) -> None:
        d = tmp_path / folder
        d.mkdir()
        (d / "candidate.json").write_text(json.dumps({
            "id": cid, "candidate": {"base": {"embedded": "gemma-3-270m"}, "recipe": recipe},
            "train": {"liger_fused_loss": fused, "peak_memory": {
                "kind": "cuda_max_allocated", "bytes": int(peak_gib * GiB),
                "reserved_bytes": int(peak_gib * GiB)}}}))

    b32 = {"method": "full", "batch_size": 32, "max_length": 512, "liger": "auto"}
    drawn = {"base": {"embedded": "gemma-3-270m"}, "recipe": {**b32, "learning_rate": 7.8e-5, "epochs": 1}}
    assert memory.measured_peak_of_kind(tmp_path, drawn) is None
    manifest("probe-1", "b32-probe", {**b32, "learning_rate": 5.9e-5}, 13.82)
    manifest("fused-1", "b32-fused", b32, 8.34, fused=True)  # planned with the estimate: says nothing
    manifest("b16-1", "b16", {**b32, "batch_size": 16}, 30.0)  # another kind
    assert memory.measured_peak_of_kind(tmp_path, drawn) == ("b32-probe", int(13.82 * GiB))
    lora = {**drawn, "recipe": {**drawn["recipe"], "method": "lora"}}  # covered by the full SFT's peak
    assert memory.measured_peak_of_kind(tmp_path, lora) == ("b32-probe", int(13.82 * GiB))

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    cfg = model.config
    n = sum(p.numel() for p in model.parameters())
    # micro-batch tokens that make the shape estimate ~21 GiB, as gemma's batch 32 was
    per_token = 12 * cfg.vocab_size + memory.ACTIVATION_BYTES * cfg.hidden_size * cfg.num_hidden_layers
    tokens = int(21 * GiB) // per_token
    est = memory.training_bytes_without_liger(trainable=n, frozen_bytes=0, micro_tokens=tokens, vocab=cfg.vocab_size,
                                              hidden=cfg.hidden_size, layers=cfg.num_hidden_layers)
    assert 20.5 * GiB < est < 21.5 * GiB
    monkeypatch.setenv(memory.AT_ONCE_ENV, "3")
    monkeypatch.setenv(memory.SHARE_ENV, str(int(58.8 * GiB) // 3))  # the parent's reading, 3 builds
    fused, why = memory.liger_for_memory(model, tokens, "cuda:0")
    assert fused and "~21.0 GiB" in why and "3 builds share" in why
    fused, why = memory.liger_for_memory(model, tokens, "cuda:0",
                                         measured=memory.measured_peak_of_kind(tmp_path, drawn))
    assert not fused and "~13.8 GiB without it (measured by b32-probe) fits its 19.6 GiB" in why
    monkeypatch.setenv(memory.SHARE_ENV, str(12 * GiB))  # a share the measured peak does not fit
    fused, why = memory.liger_for_memory(model, tokens, "cuda:0", measured=("b32-probe", int(13.82 * GiB)))
    assert fused and "needs ~13.8 GiB (measured by b32-probe)" in why


def test_a_kinds_peak_is_read_on_the_same_rows_where_one_was_measured(tmp_path):
    """A batch pads to its longest row, so the same kind of build peaks higher on longer rows: on
    one H100 (2026-12-08) a batch-32 full SFT reserved 13.8 GiB on the honest split and 17.9 on
    the refit split. A build reads its kind's peak on its own rows where one was measured there,
    else the largest on any rows (a refit before any refit of its kind measured)."""
    from tournament.train import memory

    GiB = 2**30
    b32 = {"method": "full", "batch_size": 32, "max_length": 512}

    def manifest(folder: str, rows: str, peak_gib: float, method: str = "full") -> None:
        d = tmp_path / folder
        d.mkdir()
        (d / "candidate.json").write_text(json.dumps({
            "id": folder, "candidate": {"base": {"embedded": "gemma-3-270m"},
                                        "recipe": {**b32, "method": method, "dataset": rows}},
            "train": {"liger_fused_loss": False, "peak_memory": {
                "kind": "cuda_max_allocated", "bytes": int(peak_gib * GiB), "reserved_bytes": int(peak_gib * GiB)}}}))

    def wanted(rows: str, method: str = "full") -> dict:
        return {"base": {"embedded": "gemma-3-270m"}, "recipe": {**b32, "method": method, "dataset": rows}}

    manifest("probe", "data/honest", 13.82)
    assert memory.measured_peak_of_kind(tmp_path, wanted("data/refit")) == ("probe", int(13.82 * GiB))
    manifest("refit", "data/refit", 17.87)
    assert memory.measured_peak_of_kind(tmp_path, wanted("data/honest")) == ("probe", int(13.82 * GiB))
    assert memory.measured_peak_of_kind(tmp_path, wanted("data/refit", "lora")) == ("refit", int(17.87 * GiB))
    assert memory.measured_peak_of_kind(tmp_path, wanted("data/other")) == ("refit", int(17.87 * GiB))
    # the parent's plan reads every row's peaks: the largest
    assert max(memory.measured_peaks(tmp_path, keys=memory.covering_keys(
        memory.memory_key(wanted("data/honest")))).values()) == int(17.87 * GiB)


def test_a_side_by_side_build_fits_its_slot_without_a_second_headroom(tiny_model_dir, monkeypatch):
    """The parent keeps 10 % of the card unplanned (builds_that_fit) for a batch longer than the
    probe's; a child then needs only its peak and its context to fit its slot. H100, 2026-12-08:
    4 slots of 19.8 GiB planned with the batch-32 probe's 13.8 GiB; once a full refit had measured
    17.9 GiB, every build started after it took 90 % of its slot again (17.8 GiB), turned the fused
    loss on and stepped 0.46-0.61 s instead of ~0.25 s, though four such refits (4 x 18.65 GiB with
    their contexts) fit the 79.2 GiB the parent read."""
    from transformers import AutoModelForCausalLM

    from tournament.train import memory

    GiB = 2**30
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    monkeypatch.setenv(memory.AT_ONCE_ENV, "4")
    monkeypatch.setenv(memory.SHARE_ENV, str(int(79.2 * GiB) // 4))
    fused, why = memory.liger_for_memory(model, 64, "cuda:0", measured=("b32-refit", int(17.9 * GiB)))
    assert not fused and "~17.9 GiB without it (measured by b32-refit) fits its 19.8 GiB" in why
    assert 4 * (17.9 * GiB + memory.CUDA_CONTEXT_BYTES) <= 79.2 * GiB
    # a peak that with its context overflows the slot still turns it on
    fused, why = memory.liger_for_memory(model, 64, "cuda:0", measured=("b32-refit", int(19.2 * GiB)))
    assert fused and "needs ~19.2 GiB (measured by b32-refit), more than its 19.8 GiB" in why
    # a probe beside others (no peak measured: the estimate from its shapes) keeps the headroom
    cfg = model.config
    per_token = 12 * cfg.vocab_size + memory.ACTIVATION_BYTES * cfg.hidden_size * cfg.num_hidden_layers
    tokens = int(18.5 * GiB) // per_token
    fused, why = memory.liger_for_memory(model, tokens, "cuda:0")
    assert fused and "needs ~18.5 GiB, more than its 19.8 GiB" in why
