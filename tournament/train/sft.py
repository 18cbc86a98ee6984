"""Supervised fine-tuning (full or LoRA) on transformers' `Trainer`, over peft and accelerate.

One code path for CPU (tests, the tiny model; fp32), one GPU (bf16) and several GPUs
(`accelerate launch`; see docs/training.md):
- every example is ``render_prompt(spec, question, tokenizer)`` (the serving template, tokenized
  the way the serving engine does: BOS only when the rendered text lacks it) + the answer + EOS;
  labels are -100 on the prompt (`examples.CompletionCollator` pads with -100 too), so the loss
  counts answer tokens (and the EOS) only. No other templating: Trainer sees token ids;
- Trainer does the rest: token-weighted loss over gradient accumulation (`num_items_in_batch`),
  AdamW, cosine/linear/constant schedule with warmup, gradient clipping, bf16 autocast, gradient
  checkpointing, Liger kernels (`recipe.liger`: the fused layer kernels, RMSNorm, RoPE and GeGLU,
  cut the kernel launches a small model's step is bound by; the fused linear cross-entropy never
  materialises the logits of a 262k vocabulary, at a cost in time), DDP across the processes of
  `accelerate launch`;
- checkpoints every ``save_steps`` optimizer steps inside ``<build>.tmp/checkpoints`` (Trainer's
  `checkpoint-N`: weights, optimizer, scheduler, RNG, trainer state), so ``resume=True`` continues
  where a killed run stopped (`Trainer.train(resume_from_checkpoint=...)`: same data order, the
  batches already seen are skipped);
- LoRA adapters are merged (``merge_and_unload``); the result is a plain HF directory
  (safetensors + tokenizer) that vLLM and the transformers engine load as is;
- ``candidate.json`` records the config hash, dataset hashes, base weight hash, library versions,
  hardware, the loss curve, the training time and the peak memory (`memory.measure_peak`);
- MLflow logging through `tournament.tracking` when a `Tracker` is given (`build.py` opens it,
  before any model is loaded); `callbacks.BuildLog` forwards Trainer's per-step logs to it.
No token (HF/ModelScope) is read or logged here.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tournament.candidates import Candidate
from tournament.files import is_temp_name, sha256_file
from tournament.machine import hardware, library_versions, pick_device
from tournament.models.tokenizer_check import check_tokenizer
from tournament.train.examples import IGNORE, CompletionCollator, encode_example, pack, read_rows

if TYPE_CHECKING:
    from tournament.tracking import Tracker

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
# what a build manifest records
TRAIN_LIBRARIES = ("torch", "transformers", "peft", "accelerate", "tournament", "safetensors", "tokenizers",
                   "liger-kernel")
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


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


def world() -> tuple[int, bool]:
    """(processes, whether this one is the main one) of an `accelerate launch`/torchrun; (1, True) alone."""
    return int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")) == 0


def use_liger(setting: bool | str, device: str) -> bool:
    """Can (true: must) this build use Liger? `recipe.liger`: auto = when liger-kernel is
    importable and training runs on CUDA (its kernels are Triton): the layer kernels always, the
    fused loss only if the build would not fit the GPU without it (memory.liger_for_memory,
    decided once the model is loaded); true = every kernel, the fused loss too (an error names
    what is missing); false = never."""
    import importlib.util

    if setting is False:
        return False
    on_cuda = device.startswith("cuda")
    importable = importlib.util.find_spec("liger_kernel") is not None
    if setting == "auto":
        return on_cuda and importable
    if not on_cuda:
        raise ValueError(f"recipe.liger: true needs a CUDA GPU (Liger's kernels are Triton), not {device}; "
                         "use liger: auto")
    if not importable:
        raise ValueError("recipe.liger: true needs liger-kernel (pip install 'tournament[liger]'); or liger: auto")
    return True


def share_cpu_threads(builds_at_once: int) -> int:
    """The CPU threads this build's torch may use: all of this process's cores alone, its share of
    them when its parent started several builds at once (each torch would otherwise start a thread
    per core, and the builds' CPU work, tokenizing and the loss check, slowed each other many times
    over). Returns the number set."""
    import torch

    if builds_at_once > 1:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores // builds_at_once))
    return torch.get_num_threads()


def load_model(base_dir: Path, r, dtype):
    """The model a recipe trains: the base in `dtype`, with gradient checkpointing and the LoRA
    adapters the recipe asks for."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=dtype)
    if r.gradient_checkpointing:
        enable = getattr(model, "activation_checkpointing_enable", None)  # its name from transformers 5.x
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.config.use_cache = False
    if r.method == "lora":
        from peft import LoraConfig, get_peft_model

        if r.gradient_checkpointing:
            model.enable_input_require_grads()
        lcfg = LoraConfig(r=r.rank, lora_alpha=r.alpha, lora_dropout=r.dropout,
                          target_modules=r.target_modules, task_type="CAUSAL_LM")
        model = get_peft_model(model, lcfg)
    return model


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


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    """The last complete `checkpoint-N` (Trainer writes `trainer_state.json` last: a folder
    without it was cut by a kill and is removed)."""
    if not ckpt_root.exists():
        return None
    found = sorted((int(m.group(1)), p) for p in ckpt_root.iterdir() if (m := CHECKPOINT.match(p.name)))
    for _, p in reversed(found):
        if (p / "trainer_state.json").exists():
            return p
        shutil.rmtree(p, ignore_errors=True)
    return None


def _torch_dtype(name: str):
    import torch

    return {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}[name]


def training_arguments(candidate: Candidate, out_dir: Path, *, device: str, total_steps: int, warmup: int,
                       amp: bool, liger: bool, world_size: int, fused_loss: bool | None = None):
    """Trainer's arguments for a recipe. The recipe's batch_size is the global micro-batch: with
    N processes each takes batch_size / N, so a build means the same steps on any GPU count."""
    import dataclasses

    from transformers import TrainingArguments

    r = candidate.recipe
    if r.batch_size % world_size:
        raise ValueError(f"recipe.batch_size {r.batch_size} does not split over {world_size} processes")
    known = {f.name for f in dataclasses.fields(TrainingArguments)}
    kw: dict[str, Any] = dict(
        output_dir=str(out_dir / "checkpoints"), per_device_train_batch_size=r.batch_size // world_size,
        gradient_accumulation_steps=r.grad_accum, max_steps=total_steps, learning_rate=r.learning_rate,
        weight_decay=r.weight_decay, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        optim="adamw_torch_fused" if device.startswith("cuda") else "adamw_torch",
        lr_scheduler_type={"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}[r.scheduler],
        warmup_steps=warmup, max_grad_norm=r.max_grad_norm or 0.0,
        logging_strategy="steps", logging_steps=1, save_strategy="steps", save_steps=r.save_steps,
        save_total_limit=2, report_to="none", disable_tqdm=True, seed=r.seed, data_seed=r.seed,
        bf16=amp, use_cpu=device == "cpu", remove_unused_columns=False, dataloader_num_workers=0,
        use_liger_kernel=liger, ddp_find_unused_parameters=False if world_size > 1 else None,
        # the layer kernels with Liger; its fused loss only when asked (it trades time for memory)
        liger_kernel_config={"fused_linear_cross_entropy": liger if fused_loss is None else fused_loss,
                             "cross_entropy": False} if liger else None,
        # batches of similar length (recipe.group_by_length); older transformers spell it as a flag
        train_sampling_strategy="group_by_length" if r.group_by_length else "random",
        group_by_length=r.group_by_length,
    )
    return TrainingArguments(**{k: v for k, v in kw.items() if k in known})


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
    callbacks: list | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> TrainResult:
    """Train `candidate` from `base_dir` into `out_dir` (its `model/`, `checkpoints/`, `train_log.jsonl`).
    `callbacks`: more `TrainerCallback`s. Low level: no atomic rename, no reuse (see `build_candidate`)."""
    import torch
    from transformers import AutoTokenizer, PrinterCallback, Trainer

    from tournament.train.answer_loss import answer_only_trainer, matches_stock_loss
    from tournament.train.callbacks import BuildLog, loss_curve, truncate_log
    from tournament.train.memory import (builds_sharing_the_gpu, liger_for_memory, measure_peak, measured_peak_of_kind,
                                         reset_peak)

    r = candidate.recipe
    if r.method == "none":
        raise ValueError("recipe.method is none: nothing to train")
    t_start = time.time()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ckpt_root = out_dir / "checkpoints"
    world_size, is_main = world()
    device = pick_device(device)
    if world_size > 1 and device.startswith("cuda"):
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    on_gpu = device.startswith("cuda")
    if on_gpu and torch.device(device).index is not None:
        torch.cuda.set_device(torch.device(device))
    # GPU: bf16 compute under autocast. Full SFT keeps fp32 master weights (pure-bf16 weights lose
    # updates of relative size < 2^-8, i.e. most AdamW steps at lr 5e-5); LoRA keeps the frozen base
    # in bf16 and the adapters in fp32 (peft's default). CPU: fp32 throughout.
    amp = on_gpu and torch.cuda.is_bf16_supported()
    compute_dtype = torch.bfloat16 if amp else torch.float32
    train_dtype = torch.bfloat16 if amp and r.method == "lora" else torch.float32
    liger = use_liger(r.liger, device)
    _seed_everything(r.seed)
    at_once = builds_sharing_the_gpu()  # builds its parent started side by side on this GPU
    cpu_threads = share_cpu_threads(at_once)

    # data
    ds_file = candidate.dataset_file()
    assert ds_file is not None
    rows = read_rows(ds_file)
    if not rows:
        raise ValueError(f"{ds_file}: no training rows")
    tokenizer = AutoTokenizer.from_pretrained(str(base_dir))
    # a tokenizer that cuts its own vocabulary's words would train a build that is never reused
    # (build.py: _complete): refuse it before training, as a GGUF import does
    split_share = check_tokenizer(tokenizer, f"{candidate.id}: the base model {base_dir}")
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
        f"{total_steps} optimizer steps on {device}" + (f" x {world_size} processes" if world_size > 1 else "")
        + (" with Liger kernels" if liger and r.liger is True else ""))

    model = load_model(base_dir, r, train_dtype)
    if world_size == 1:
        # on the device it trains on (the Trainer moves it there anyway) before the loss check
        # below: one forward with the logits of a 262k vocabulary, milliseconds on a GPU; on the
        # CPU it took ~1 s alone and 37-80 s each with four builds at once (an H100, 16 cores)
        model.to(device)
    collator = CompletionCollator(tokenizer.pad_token_id)
    # the loss from the trained positions' logits alone (answer_loss.py), where it equals the model's own
    answer_only, why = (False, "several processes") if world_size > 1 else matches_stock_loss(
        model, collator([{"input_ids": ids, "labels": labels} for ids, labels in seqs[:2]]))
    log(("loss from the trained positions' logits only: " if answer_only else "the model's own loss: ") + why)
    fused_loss = liger
    if liger and r.liger == "auto":  # on a GPU with Liger installed: its fused loss only when memory needs it
        # a batch pads to its longest sequence, so no batch holds more than the longest one's width
        widest = max(len(s[0]) for s in seqs)
        trained = max(sum(1 for x in s[1] if x != IGNORE) for s in seqs) if answer_only else None
        per = r.batch_size // world_size
        # out_dir is `<build>.tmp` beside the other builds: one of its kind may have measured its peak
        fused_loss, why = liger_for_memory(model, per * min(r.max_length, widest), device,
                                           None if trained is None else per * trained,
                                           measured_peak_of_kind(out_dir.parent, candidate.model_dump(mode="json")))
        log(why)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())

    checkpoint = latest_checkpoint(ckpt_root) if resume else None
    train_log = out_dir / "train_log.jsonl"
    if is_main:
        if checkpoint is None:
            shutil.rmtree(ckpt_root, ignore_errors=True)
        truncate_log(train_log, int(CHECKPOINT.match(checkpoint.name).group(1)) if checkpoint else 0)
    if checkpoint is not None:
        log(f"resumed from {checkpoint.name}")

    from tournament.tracking import Run, environment_tags

    ml = tracker.start_run(run_name or candidate.id, tags={
        **environment_tags(), "tournament.kind": "train", "tournament.candidate": candidate.id,
    }) if tracker is not None and is_main else Run()
    ml.params({"candidate": candidate.id, "config_hash": candidate.config_hash(max_steps),
               "base": candidate.base.describe(), "device": device,
               "dtype": str(train_dtype).removeprefix("torch."), "compute_dtype": str(compute_dtype).removeprefix("torch."),
               "rows": len(rows), "sequences": len(seqs), "tokens": n_tokens, "total_steps": total_steps,
               "trainable_params": n_trainable, "liger_used": liger, "liger_fused_loss": fused_loss,
               "answer_only_logits": answer_only and not fused_loss,
               "processes": world_size,
               **{f"recipe.{k}": v for k, v in r.model_dump(mode="json").items()},
               "prompt.style": candidate.prompt.style})

    args = training_arguments(candidate, out_dir, device=device, total_steps=total_steps, warmup=warmup,
                              amp=amp, liger=liger, world_size=world_size, fused_loss=fused_loss)
    dataset = [{"input_ids": ids, "labels": labels} for ids, labels in seqs]
    # Liger's fused loss replaces the model's forward: it keeps the stock loss path
    trainer_class = answer_only_trainer() if answer_only and not fused_loss else Trainer
    trainer = trainer_class(model=model, args=args, train_dataset=dataset, data_collator=collator,
                      callbacks=[BuildLog(train_log, ml, total_steps, log), *(callbacks or [])])
    trainer.remove_callback(PrinterCallback)  # it prints every log dict on stdout (a --json child's channel)
    status = "FAILED"
    try:
        reset_peak(device)
        t_loop = time.time()
        trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
        train_seconds = time.time() - t_loop
        peak = measure_peak(device)
        step = trainer.state.global_step
        curve = loss_curve(trainer.state.log_history)
        if not is_main:  # the main process saves the model and writes the manifest
            status = "FINISHED"
            return TrainResult(out_dir / "model", out_dir, step, curve, time.time() - t_start, {})

        # merge + save
        model = trainer.model
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
            # the file that holds this recipe; none for a drawn or overridden one, which reached
            # this process as a temporary YAML (gone by now): `candidate` above is all of it
            "candidate_file": (str(candidate.source) if candidate.source and not is_temp_name(candidate.source)
                               else None),
            "dataset": {**candidate.dataset_fingerprint(), "rows": len(rows), "examples": len(examples),
                        "sequences": len(seqs), "tokens": n_tokens, "answer_tokens": n_answer_tokens},
            "base": {"source": candidate.base.describe(), "dir": str(base_dir), "sha256": weights_hash(base_dir)},
            # a build reused later is checked by this (train/build.py: _complete)
            "tokenizer_word_split_share": split_share,
            "versions": library_versions(TRAIN_LIBRARIES),
            "hardware": hardware(device),
            "train": {"method": r.method, "trainer": "transformers.Trainer", "steps": step,
                      "total_steps": total_steps, "max_steps": max_steps,
                      "dtype": str(train_dtype).removeprefix("torch."),
                      "compute_dtype": str(compute_dtype).removeprefix("torch."), "saved_dtype": save_dtype,
                      "trainable_params": n_trainable, "total_params": n_total,
                      "loss_curve": curve, "final_loss": curve[-1][1] if curve else None,
                      "train_seconds": round(train_seconds, 3),
                      "tokens_per_s": round(n_tokens * r.epochs / train_seconds, 1) if train_seconds > 0 else None,
                      "peak_memory": peak, "liger": liger, "liger_fused_loss": fused_loss,
                      "loss_logits": "trained positions" if answer_only and not fused_loss else "every position",
                      "gradient_checkpointing": r.gradient_checkpointing,
                      "processes": world_size, "resumed_from": checkpoint.name if checkpoint else None,
                      "builds_at_once": at_once, "cpu_threads": cpu_threads},  # their steps share the GPU
            "wall_seconds": round(wall, 3),
            "mlflow_run_id": ml.run_id,
            "pid": os.getpid(),  # the process that trained (builds run in a child: build_in_subprocess)
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        (out_dir / "candidate.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n",
                                                encoding="utf-8")
        ml.metrics({"train_seconds": train_seconds, "peak_memory_bytes": peak["bytes"]}, step)
        ml.artifact(out_dir / "candidate.json")
        if candidate.dataset_file() and (candidate.dataset_file().parent / "manifest.json").exists():
            ml.artifact(candidate.dataset_file().parent / "manifest.json")
        status = "FINISHED"
        return TrainResult(model_dir, out_dir, step, curve, wall, manifest)
    finally:
        ml.end(status)
