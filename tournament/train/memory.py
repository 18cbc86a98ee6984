"""Memory of training builds: the peak a build measured (recorded in its candidate.json) and how
many builds fit side by side on one GPU given those peaks and the GPU's free memory.

A build records `train.peak_memory`: on CUDA `torch.cuda.max_memory_allocated` (`bytes`) and
`max_memory_reserved` (`reserved_bytes`, what the caching allocator really took from the card);
on the CPU the process's peak RSS. `builds_that_fit` plans with the reserved figure plus the
CUDA context every process pays, so `build_workers` comes from measured numbers, not a guess.
torch is imported inside the functions; the planning functions need none of it (the sweep's
process must not create a CUDA context), and free memory is read with nvidia-smi."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable

# What a process pays on a CUDA GPU beyond the tensors torch counts (context, cuBLAS workspace,
# kernels): about 0.5 GiB on H100/H200 with torch 2.x; 0.75 GiB keeps a margin.
CUDA_CONTEXT_BYTES = int(0.75 * 2**30)
# Leave this share of the free memory unplanned (fragmentation, a longer batch than measured).
HEADROOM = 0.10


AT_ONCE_ENV = "TOURNAMENT_BUILDS_AT_ONCE"  # set by the parent of side-by-side builds (builds_at_once)
SHARE_ENV = "TOURNAMENT_BUILD_SHARE_BYTES"  # and each one's share of the free memory it read then
# Per token, per hidden unit, per layer: the activations a decoder layer keeps for its backward pass
# in bf16 without checkpointing (~34 bytes, as in Korthikanti et al., 2022, with fused attention).
ACTIVATION_BYTES = 34


def training_bytes_without_liger(*, trainable: int, frozen_bytes: int, micro_tokens: int, vocab: int,
                                 hidden: int, layers: int, logit_tokens: int | None = None) -> int:
    """A rough peak of one training process without Liger's fused loss, from the shapes alone:
    trainable weights at 16 bytes each (fp32 master, gradient, AdamW's two moments), the frozen
    ones as stored, the activations, and the logits of one micro-batch (fp32 logits, their
    softmax and their gradient: 3 x 4 bytes per token and vocabulary entry). The logits dominate a
    small model with a large vocabulary: gemma-3-270m (262,144 entries), batch 16 x 512 tokens,
    ~24 of the ~31 GiB estimated; measured on one H100: 26.5 GiB allocated (full SFT), 20.1 (LoRA).
    `logit_tokens`: the positions whose logits are computed when fewer than the micro-batch's
    (train/answer_loss.py: the trained ones only)."""
    return (16 * trainable + frozen_bytes + ACTIVATION_BYTES * micro_tokens * hidden * layers
            + 3 * 4 * (micro_tokens if logit_tokens is None else logit_tokens) * vocab)


def liger_needed(estimate_bytes: int, free_bytes: int, headroom: float = HEADROOM) -> bool:
    """`recipe.liger: auto` on a GPU: Liger's fused loss only when the build would not fit without
    it. Every Liger kernel, the fused loss with them, cost time (on one H100, gemma-3-270m: 2.8x
    the step time of a full SFT, 1.5x of a LoRA r16) for memory (3.3x / 4.7x less), so a build
    that fits runs faster without the fused loss."""
    return estimate_bytes > free_bytes * (1.0 - headroom)


def liger_for_memory(model, micro_tokens: int, device: str, logit_tokens: int | None = None,
                     measured: tuple[str, int] | None = None) -> tuple[bool, str]:
    """(use Liger's fused loss?, why in words) for a model about to train on CUDA `device`: what it
    needs without it against its share of the GPU's free memory (other builds beside it included).
    What it needs: `measured` (a build id and the peak it measured without the fused loss:
    `measured_peak_of_kind`) where an earlier build of its kind measured one, the peak the parent
    planned the side-by-side builds with; else the estimate from the shapes, which runs high (batch
    32 of gemma-3-270m: ~21 GiB estimated, 13.8 GiB measured on an H100). Planned with the
    estimate, three side-by-side builds each turned the fused loss on and stepped ~5x slower.
    Against what: alone, 90 % of the free memory read now; beside others, with a measured peak,
    the whole slot the parent planned (its reading / N), less a CUDA context, as the parent's plan
    kept the headroom already; with the estimate (probes side by side), 90 % of the slot."""
    import torch

    from tournament.train.answer_loss import text_config

    cfg = text_config(model)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    est = training_bytes_without_liger(trainable=trainable, frozen_bytes=frozen, micro_tokens=micro_tokens,
                                       vocab=cfg.vocab_size, hidden=cfg.hidden_size, layers=cfg.num_hidden_layers,
                                       logit_tokens=logit_tokens)
    share = builds_sharing_the_gpu()
    planned = os.environ.get(SHARE_ENV, "")
    need = measured[1] if measured else est
    if share > 1 and planned.isdigit():  # the parent's reading before any of them allocated
        free = int(planned)
        # The parent kept its headroom on the whole card when it planned these slots
        # (builds_that_fit), for a batch longer than the probe's; here the build needs only its
        # peak and its context to fit its slot. Taking the headroom again per slot turned the fused
        # loss on (2x slower steps) for every build started after a refit had measured 17.9 GiB
        # against the probe's 13.8 (H100, 2026-12-08: 4 slots of 19.8 GiB).
        # An estimate (no build of its kind measured: a probe) keeps the headroom: the parent
        # planned these slots by count, not by peaks.
        fused = need + CUDA_CONTEXT_BYTES > free if measured else liger_needed(need + CUDA_CONTEXT_BYTES, free)
    else:  # read now: builds that start later would see the earlier ones' memory and count it twice
        free, _ = torch.cuda.mem_get_info(torch.device(device))
        free //= share  # the builds started beside it get the same share, whichever allocates first
        fused = liger_needed(need, free)
    gib = 2**30
    of = f" ({share} builds share this GPU)" if share > 1 else ""
    basis = f" (measured by {measured[0]})" if measured else ""
    if fused:
        return True, (f"Liger's fused loss on: without it this build needs ~{need / gib:.1f} GiB{basis}, more than "
                      f"its {free / gib:.1f} GiB of free memory{of} allows")
    return False, (f"Liger's layer kernels on, its fused loss off: ~{need / gib:.1f} GiB without it{basis} fits its "
                   f"{free / gib:.1f} GiB of free memory{of}, and it would slow each step (recipe.liger: true "
                   "forces it)")


def out_of_memory(error: BaseException | str) -> bool:
    """Did a build fail for want of GPU memory (torch's OutOfMemoryError, a CUDA or cuBLAS
    allocation error), as its child's last lines tell? Beside other builds that is the plan's
    failure, not the recipe's: the build trains again with fewer beside it."""
    text = str(error).lower()
    return any(s in text for s in ("out of memory", "outofmemoryerror", "cublas_status_alloc_failed"))


def builds_sharing_the_gpu() -> int:
    """How many builds the parent started at once on this build's GPU (`builds_at_once`)."""
    try:
        return max(1, int(os.environ.get(AT_ONCE_ENV, "1")))
    except ValueError:
        return 1


@contextmanager
def builds_at_once(n: int):
    """Tell the build children started inside (their environment is a copy of this process's)
    that `n` builds share each GPU, and each one's share of the free memory read now, before any
    of them allocates: `liger: auto` plans with that share (a child that starts after the others
    have allocated would otherwise see their memory gone and divide what is left again)."""
    n = max(1, int(n))
    free = free_gpu_bytes(first_visible_gpu())
    new = {AT_ONCE_ENV: str(n), SHARE_ENV: str(free // n) if free is not None else None}
    old = {k: os.environ.get(k) for k in new}
    for k, v in new.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def reset_peak(device: str) -> None:
    """Start a fresh CUDA peak (the model's weights, already allocated, stay counted)."""
    if device.startswith("cuda"):
        import torch

        torch.cuda.reset_peak_memory_stats()


def measure_peak(device: str) -> dict[str, Any]:
    """The peak memory of this build so far, for candidate.json's `train.peak_memory`."""
    if device.startswith("cuda"):
        import torch

        idx = torch.device(device).index
        idx = torch.cuda.current_device() if idx is None else idx
        return {"kind": "cuda_max_allocated", "bytes": int(torch.cuda.max_memory_allocated(idx)),
                "reserved_bytes": int(torch.cuda.max_memory_reserved(idx)),
                "device_total_bytes": int(torch.cuda.get_device_properties(idx).total_memory)}
    import resource  # Unix; a build's peak RSS

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"kind": "cpu_max_rss", "bytes": int(rss if sys.platform == "darwin" else rss * 1024)}


def gpu_peak_bytes(manifest: dict[str, Any]) -> int | None:
    """What one earlier build of a candidate.json held on its GPU (reserved, else allocated);
    None for a CPU build or one that recorded nothing."""
    peak = ((manifest.get("train") or {}).get("peak_memory")) or {}
    if not str(peak.get("kind", "")).startswith("cuda"):
        return None
    got = peak.get("reserved_bytes") or peak.get("bytes")
    return int(got) if got else None


def memory_key(candidate: dict[str, Any]) -> str:
    """What a build's peak memory depends on, from its candidate as candidate.json records it: the
    base model, the method, the batch, the length cap, packing, gradient checkpointing, Liger, and
    what the answer target trains (template, answer cap: the loss computes the logits of the trained
    positions); not the learning rate, the epochs, the LoRA rank or the dataset (refit and honest
    builds of a recipe share it). Builds of one key plan with each other's measured peaks."""
    r = candidate.get("recipe") or {}
    return json.dumps([candidate.get("base"), r.get("method"), r.get("batch_size"), r.get("max_length"),
                       r.get("packing"), r.get("gradient_checkpointing"), r.get("liger"),
                       # how many positions are trained: their logits are what the loss computes
                       r.get("target_template"), r.get("max_answer_chars")], sort_keys=True)


def covering_keys(key: str) -> list[str]:
    """The memory keys whose measured peak covers a build of `key`: its own, and for a LoRA build
    the full fine-tune's of the same kind (same logits and activations, plus the optimizer state
    of every weight: estimated 26.5 vs 20.1 GiB for gemma-3-270m at batch 16 x 512)."""
    doc = json.loads(key)
    if doc[1] != "lora":
        return [key]
    return [key, json.dumps([doc[0], "full", *doc[2:]], sort_keys=True)]


def measured_peaks(builds_dir: Path, ids: Iterable[str] | None = None,
                   keys: Iterable[str] | None = None, dataset: str | None = None) -> dict[str, int]:
    """{candidate id: the largest GPU peak any of its builds under `builds_dir` recorded}.
    `ids`: only these candidates; `keys`: only builds of these memory keys (`memory_key`);
    `dataset`: only builds trained on these rows (`recipe.dataset` as candidate.json records it).
    Builds of other hashes of the same id count: a recipe's memory depends on its model, batch and
    length far more than on its learning rate."""
    wanted = set(ids) if ids is not None else None
    kinds = set(keys) if keys is not None else None
    out: dict[str, int] = {}
    for f in sorted(Path(builds_dir).glob("*/candidate.json")):
        try:
            doc = json.loads(f.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        cid, peak = doc.get("id"), gpu_peak_bytes(doc)
        if not (cid and peak and (wanted is None or cid in wanted)):
            continue
        if kinds is not None and (doc.get("train") or {}).get("liger_fused_loss"):
            continue  # Liger's fused loss (chosen when memory was short) says nothing of a build without it
        if dataset is not None and ((doc.get("candidate") or {}).get("recipe") or {}).get("dataset") != dataset:
            continue
        if kinds is None or memory_key(doc.get("candidate") or {}) in kinds:
            out[cid] = max(peak, out.get(cid, 0))
    return out


def measured_peak_of_kind(builds_dir: Path, candidate: dict[str, Any]) -> tuple[str, int] | None:
    """(build id, peak) of the largest peak an earlier build under `builds_dir` of this
    candidate's memory kind (or of a kind that covers it) measured without Liger's fused loss,
    on the same rows where one of the kind has (a batch pads to its longest row, so a kind's peak
    is its data's: on an H100 a batch-32 full SFT reserved 13.8 GiB on the honest split and 17.9
    on the refit split), else on any; None when none has. `candidate`: as candidate.json records
    it (`model_dump(mode="json")`)."""
    keys = covering_keys(memory_key(candidate))
    rows = (candidate.get("recipe") or {}).get("dataset")
    peaks = (measured_peaks(builds_dir, keys=keys, dataset=rows) if rows is not None else {}) or \
        measured_peaks(builds_dir, keys=keys)
    if not peaks:
        return None
    cid = max(peaks, key=peaks.get)
    return cid, peaks[cid]


def builds_that_fit(peaks: Iterable[int], free_bytes: int, *, max_workers: int | None = None,
                    context_bytes: int = CUDA_CONTEXT_BYTES, headroom: float = HEADROOM) -> int:
    """How many builds can train side by side on one GPU with `free_bytes` free, given the
    measured peaks of the builds to run (the largest is planned for every slot). At least 1 (one
    build always runs, as without planning); 1 when nothing was measured (no guess); at most
    `max_workers`."""
    peaks = [int(p) for p in peaks if p]
    if not peaks:
        return 1
    per_build = max(peaks) + context_bytes
    n = int(free_bytes * (1.0 - headroom)) // per_build
    n = max(1, n)
    return min(n, max_workers) if max_workers else n


def first_visible_gpu() -> str:
    """This process's first visible GPU as nvidia-smi numbers it (sweep --gpus gives each worker one)."""
    return (os.environ.get("CUDA_VISIBLE_DEVICES") or "0").split(",")[0] or "0"


def free_gpu_bytes(gpu: str | int = 0) -> int | None:
    """Free memory of one GPU (nvidia-smi's index), without creating a CUDA context here; None
    when nvidia-smi is missing or fails."""
    return gpu_memory_bytes(gpu, "free")


def gpu_memory_bytes(gpu: str | int = 0, field: str = "free") -> int | None:
    """nvidia-smi's `memory.<field>` (free, total, used) of one GPU in bytes; None without a reading."""
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu=memory.{field}", "--format=csv,noheader,nounits",
                              "-i", str(gpu)], capture_output=True, text=True, timeout=30, check=True).stdout
        return int(float(out.strip().splitlines()[0])) * 2**20  # MiB
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


def room_for_builds(builds_dir: Path, n: int = 1, gpu: str | int | None = None) -> bool:
    """Do the `n` long builds of a batch (a refit per recipe: the honest builds, a quarter of the
    rows, fill the gaps) fit beside what holds the GPU now (running servers), as many side by side
    as would fit on the whole card? Then keeping the servers costs the builds nothing; else they
    stop (a pair's start again takes ~35-90 s, a refit's build ~1.5-3 min, and each slot lost
    slows the batch: two builds side by side do ~1.6x the work of one). Planned with the largest
    peak earlier builds measured, plus a context each and the headroom. True without a GPU
    reading (a CPU machine: the GPU is not what builds share); False on a GPU before any build
    recorded its peak (no guess)."""
    g = first_visible_gpu() if gpu is None else gpu
    free = free_gpu_bytes(g)
    if free is None:
        return True
    peaks = measured_peaks(builds_dir)
    if not peaks:
        return False
    per_build = max(peaks.values()) + CUDA_CONTEXT_BYTES
    beside = int(free * (1.0 - HEADROOM)) // per_build
    alone = int((gpu_memory_bytes(g, "total") or free) * (1.0 - HEADROOM)) // per_build
    return beside >= max(1, min(n, alone))


def plan_build_workers(builds_dir: Path, ids: Iterable[str] | None, gpu: str | int = 0, *,
                       max_workers: int | None = None, keys: Iterable[str] | None = None) -> tuple[int, str]:
    """`build_workers` for one GPU from earlier builds' measured peaks of these candidate ids
    (None: of every build there; `keys`: of these memory keys) and the GPU's free memory now,
    with the reason in words."""
    peaks = measured_peaks(builds_dir, None if ids is None else list(ids), keys)
    free = free_gpu_bytes(gpu)
    if free is None:
        return 1, "no free-memory reading (nvidia-smi): 1 at a time"
    if not peaks:
        return 1, "no earlier build of these candidates recorded its peak: 1 at a time"
    n = builds_that_fit(peaks.values(), free, max_workers=max_workers)
    largest = max(peaks, key=peaks.get)
    return n, (f"{n} at a time: largest measured peak {peaks[largest] / 2**30:.1f} GiB ({largest}) "
               f"+ {CUDA_CONTEXT_BYTES / 2**30:.2f} GiB context each, {free / 2**30:.1f} GiB free on GPU {gpu}")
