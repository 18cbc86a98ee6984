"""Supervised fine-tuning (full or LoRA) with a plain PyTorch loop over transformers + peft.

One code path for CPU (tests, the tiny model; fp32) and GPU (bf16):
- every example is ``render_prompt(spec, question, tokenizer)`` (the serving template, tokenized
  the way the serving engine does: BOS only when the rendered text lacks it) + the answer + EOS;
  the loss counts answer tokens (and the EOS) only;
- optional packing (whole examples concatenated up to ``max_length``), gradient accumulation with
  token-weighted loss, AdamW, cosine/linear/constant schedule with warmup, gradient clipping;
- checkpoints every ``save_steps`` optimizer steps inside ``<build>.tmp/checkpoints`` (trainable
  weights, optimizer, scheduler, RNG, loss curve), so ``resume=True`` continues where a killed run
  stopped (same data order: batches are a pure function of seed and epoch);
- LoRA adapters are merged (``merge_and_unload``); the result is a plain HF directory
  (safetensors + tokenizer) that vLLM and the transformers engine load as is;
- ``candidate.json`` records the config hash, dataset hashes, base weight hash, library versions,
  hardware, the loss curve and the wall time; the finished ``<build>.tmp`` is renamed to
  ``<build>`` (a build directory either is complete or does not exist);
- MLflow logging through `tournament.tracking` when a `Tracker` is given (`build.py` opens it,
  before any model is loaded): params, per-step loss and lr, ``candidate.json`` as an artifact.
No token (HF/ModelScope) is read or logged here.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tournament.candidates import Candidate
from tournament.files import sha256_file
from tournament.machine import hardware, library_versions, pick_device
from tournament.train.examples import IGNORE, collate, encode_example, epoch_batches, pack, read_rows

if TYPE_CHECKING:
    from tournament.tracking import Tracker

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
# what a build manifest records
TRAIN_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "tournament", "safetensors", "tokenizers")


# -- environment -------------------------------------------------------------------------------
def weights_hash(model_dir: Path) -> str:
    """sha256 over the weight files of a model directory (names + content), in name order."""
    import hashlib

    h = hashlib.sha256()
    files = sorted(p for p in Path(model_dir).iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))
    for p in files:
        h.update(p.name.encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


# -- training ------------------------------------------------------------------------------------
@dataclass
class TrainResult:
    model_dir: Path
    build_dir: Path
    steps: int
    loss_curve: list[list[float]] = field(default_factory=list)
    wall_seconds: float = 0.0
    manifest: dict[str, Any] = field(default_factory=dict)


def _tmp_dir(build: Path) -> Path:
    return build.with_name(build.name + ".tmp")


def _latest_checkpoint(ckpt_root: Path) -> Path | None:
    cands = sorted(p for p in ckpt_root.glob("step-*") if (p / "state.pt").exists())
    return cands[-1] if cands else None


def _save_checkpoint(ckpt_root: Path, step: int, model, optimizer, scheduler, curve, keep: int = 2) -> None:
    import torch

    d = ckpt_root / f"step-{step:08d}"
    tmp = ckpt_root / f".step-{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    state = {
        "step": step,
        "trainable": {n: p.detach().cpu() for n, p in model.named_parameters() if p.requires_grad},
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": random.getstate(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None},
        "loss_curve": curve,
    }
    torch.save(state, tmp / "state.pt")
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
    for old in sorted(ckpt_root.glob("step-*"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def _load_checkpoint(path: Path, model, optimizer, scheduler) -> tuple[int, list]:
    import torch

    state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for n, t in state["trainable"].items():
            params[n].copy_(t.to(params[n].device, params[n].dtype))
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng"]["torch"])
    random.setstate(state["rng"]["python"])
    if state["rng"].get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng"]["cuda"])
    return int(state["step"]), list(state["loss_curve"])


def _scheduler(name: str, optimizer, warmup: int, total: int):
    from transformers import (
        get_constant_schedule_with_warmup,
        get_cosine_schedule_with_warmup,
        get_linear_schedule_with_warmup,
    )

    if name == "cosine":
        return get_cosine_schedule_with_warmup(optimizer, warmup, total)
    if name == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total)
    return get_constant_schedule_with_warmup(optimizer, warmup)


def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def train_sft(
    candidate: Candidate,
    base_dir: Path,
    out_dir: Path,
    *,
    resume: bool = False,
    max_steps: int | None = None,
    device: str = "auto",
    tracker: "Tracker | None" = None,
    run_name: str | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> TrainResult:
    """Train `candidate` from `base_dir` into `out_dir` (its `model/`, `checkpoints/`, `train_log.jsonl`).

    Low level: no atomic rename, no reuse (see `build_candidate`)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    r = candidate.recipe
    if r.method == "none":
        raise ValueError("recipe.method is none: nothing to train")
    t_start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_root = out_dir / "checkpoints"
    device = pick_device(device)
    on_gpu = device.startswith("cuda")
    # GPU: bf16 compute under autocast. Full SFT keeps fp32 master weights (pure-bf16 weights lose
    # updates of relative size < 2^-8, i.e. most AdamW steps at lr 5e-5); LoRA keeps the frozen base
    # in bf16 and the adapters in fp32 (peft's default). CPU: fp32 throughout.
    amp = on_gpu and torch.cuda.is_bf16_supported()
    compute_dtype = torch.bfloat16 if amp else torch.float32
    train_dtype = torch.bfloat16 if amp and r.method == "lora" else torch.float32
    _seed_everything(r.seed)

    # data
    ds_file = candidate.dataset_file()
    assert ds_file is not None
    rows = read_rows(ds_file)
    if not rows:
        raise ValueError(f"{ds_file}: no training rows")
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    examples = [e for q, a in rows
                if (e := encode_example(tokenizer, candidate.prompt, q, a, r.max_length, r.max_answer_chars,
                                     r.target_template))]
    seqs = pack(examples, r.max_length) if r.packing else examples
    n_tokens = sum(len(s[0]) for s in seqs)
    n_answer_tokens = sum(sum(1 for x in s[1] if x != IGNORE) for s in seqs)
    micro_per_epoch = math.ceil(len(seqs) / r.batch_size)
    steps_per_epoch = max(1, math.ceil(micro_per_epoch / r.grad_accum))
    total_steps = max(1, math.ceil(steps_per_epoch * r.epochs))
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    warmup = int(round(r.warmup_ratio * total_steps))
    log(f"{len(rows)} rows -> {len(seqs)} sequences, {n_tokens} tokens ({n_answer_tokens} trained); "
        f"{total_steps} optimizer steps on {device}")

    # model
    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=train_dtype)
    model.to(device)
    if r.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
    if r.method == "lora":
        from peft import LoraConfig, get_peft_model

        if r.gradient_checkpointing:
            model.enable_input_require_grads()
        lcfg = LoraConfig(r=r.rank, lora_alpha=r.alpha, lora_dropout=r.dropout,
                          target_modules=r.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, lcfg)
    trainable = [p for p in model.parameters() if p.requires_grad]
    n_trainable = sum(p.numel() for p in trainable)
    n_total = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(trainable, lr=r.learning_rate, weight_decay=r.weight_decay,
                                  betas=(0.9, 0.999), eps=1e-8)
    scheduler = _scheduler(r.scheduler, optimizer, warmup, total_steps)

    step, curve = 0, []
    if resume and (ck := _latest_checkpoint(ckpt_root)) is not None:
        step, curve = _load_checkpoint(ck, model, optimizer, scheduler)
        log(f"resumed from {ck.name} (step {step})")
    elif ckpt_root.exists():
        shutil.rmtree(ckpt_root)

    from tournament.tracking import Run, environment_tags

    ml = tracker.start_run(run_name or candidate.id, tags={
        **environment_tags(), "tournament.kind": "train", "tournament.candidate": candidate.id,
    }) if tracker is not None else Run()
    ml.params({"candidate": candidate.id, "config_hash": candidate.config_hash(max_steps),
               "base": candidate.base.describe(), "device": device,
               "dtype": str(train_dtype).removeprefix("torch."), "compute_dtype": str(compute_dtype).removeprefix("torch."),
               "rows": len(rows), "sequences": len(seqs), "tokens": n_tokens, "total_steps": total_steps,
               "trainable_params": n_trainable,
               **{f"recipe.{k}": v for k, v in r.model_dump(mode="json").items()},
               "prompt.style": candidate.prompt.style})

    # the micro-batch stream: a pure function of (seed, epoch) so resume replays the same order
    def micro_batches():
        epoch = 0
        while True:
            yield from epoch_batches(len(seqs), r.batch_size, r.seed, epoch)
            epoch += 1

    stream = micro_batches()
    for _ in range(step * r.grad_accum):  # skip what the checkpointed run already consumed
        next(stream)
    train_log = open(out_dir / "train_log.jsonl", "a", encoding="utf-8")
    model.train()
    t_loop = time.time()
    status = "FAILED"
    try:
        while step < total_steps:
            window = [next(stream) for _ in range(r.grad_accum)]
            n_items = sum(sum(1 for x in seqs[i][1] if x != IGNORE) for mb in window for i in mb)
            n_items = max(1, n_items)
            step_loss = 0.0
            for mb in window:
                ids, labels, mask = collate([seqs[i] for i in mb], tokenizer.pad_token_id)
                ids, labels, mask = ids.to(device), labels.to(device), mask.to(device)
                with torch.autocast(device_type="cuda", dtype=torch.bfloat16, enabled=amp):
                    out = model(input_ids=ids, attention_mask=mask, labels=labels, use_cache=False,
                                num_items_in_batch=torch.tensor(n_items, device=device))
                loss = out.loss
                loss.backward()
                step_loss += float(loss.detach())
            grad_norm = None
            if r.max_grad_norm:
                grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, r.max_grad_norm))
            lr = scheduler.get_last_lr()[0]  # the rate this step uses
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            curve.append([step, round(step_loss, 6)])
            train_log.write(json.dumps({"step": step, "loss": step_loss, "lr": lr, "grad_norm": grad_norm,
                                        "elapsed": round(time.time() - t_loop, 3)}) + "\n")
            train_log.flush()
            ml.metrics({"train_loss": step_loss, "lr": lr}, step)
            if step % max(1, total_steps // 20) == 0 or step == total_steps:
                log(f"step {step}/{total_steps} loss {step_loss:.4f} lr {lr:.2e}")
            if step % r.save_steps == 0 and step < total_steps:
                _save_checkpoint(ckpt_root, step, model, optimizer, scheduler, curve)
        train_seconds = time.time() - t_loop

        # merge + save
        if r.method == "lora":
            model = model.merge_and_unload()
        save_dtype = r.save_dtype
        if save_dtype == "auto":  # bf16 from a GPU run; else the base model's own dtype
            base_cfg = json.loads((Path(base_dir) / "config.json").read_text(encoding="utf-8"))
            base_dtype = str(base_cfg.get("dtype") or base_cfg.get("torch_dtype") or "")
            save_dtype = "bfloat16" if on_gpu else (
                base_dtype if base_dtype in ("bfloat16", "float16", "float32") else "float32")
        model = model.to(_torch_dtype(save_dtype))
        model_dir = out_dir / "model"
        shutil.rmtree(model_dir, ignore_errors=True)
        model.config.use_cache = True
        gen = model.generation_config
        if tokenizer.eos_token_id is not None:
            eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else (
                [gen.eos_token_id] if gen.eos_token_id is not None else [])
            if tokenizer.eos_token_id not in eos:
                gen.eos_token_id = eos + [tokenizer.eos_token_id] if eos else tokenizer.eos_token_id
        model.save_pretrained(str(model_dir))
        tokenizer.save_pretrained(str(model_dir))
        shutil.rmtree(ckpt_root, ignore_errors=True)

        wall = time.time() - t_start
        manifest = {
            "schema": 1,
            "id": candidate.id,
            "config_hash": candidate.config_hash(max_steps),
            "candidate": candidate.model_dump(mode="json"),
            "candidate_file": str(candidate.source) if candidate.source else None,
            "dataset": {**candidate.dataset_fingerprint(), "rows": len(rows), "examples": len(examples),
                        "sequences": len(seqs), "tokens": n_tokens, "answer_tokens": n_answer_tokens},
            "base": {"source": candidate.base.describe(), "dir": str(base_dir), "sha256": weights_hash(base_dir)},
            "versions": library_versions(TRAIN_LIBRARIES),
            "hardware": hardware(device),
            "train": {"method": r.method, "steps": step, "total_steps": total_steps, "max_steps": max_steps,
                      "dtype": str(train_dtype).removeprefix("torch."),
                      "compute_dtype": str(compute_dtype).removeprefix("torch."), "saved_dtype": save_dtype,
                      "trainable_params": n_trainable, "total_params": n_total,
                      "loss_curve": curve, "final_loss": curve[-1][1] if curve else None,
                      "train_seconds": round(train_seconds, 3),
                      "tokens_per_s": round(n_tokens * r.epochs / train_seconds, 1) if train_seconds > 0 else None},
            "wall_seconds": round(wall, 3),
            "mlflow_run_id": ml.run_id,
            "pid": os.getpid(),  # the process that trained (builds run in a child: build_in_subprocess)
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (out_dir / "candidate.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                                encoding="utf-8")
        ml.metrics({"train_seconds": train_seconds}, step)
        ml.artifact(out_dir / "candidate.json")
        if candidate.dataset_file() and (candidate.dataset_file().parent / "manifest.json").exists():
            ml.artifact(candidate.dataset_file().parent / "manifest.json")
        status = "FINISHED"
        return TrainResult(model_dir, out_dir, step, curve, wall, manifest)
    finally:
        train_log.close()
        ml.end(status)
