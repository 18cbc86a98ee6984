"""The loss of a completion-only SFT from the logits of the trained positions alone.

A causal LM's forward computes the vocabulary logits of every position (batch x width x
vocabulary), then the loss ignores the prompt's and the padding's. gemma's 262,144-entry
vocabulary makes those logits most of a small model's training memory (in fp32 with their softmax
and gradient: ~12 bytes per position and entry, ~10 of the ~15 GiB a full SFT of gemma-3-270m
held at batch 16), and bounds how many builds train side by side on one GPU. Here the decoder runs
as usual, the hidden states of the positions whose next token is trained are gathered, and only
they go through the output layer (and the final soft-capping where the model has one) and the
cross-entropy: the same loss, the same mean over the same tokens (`num_items_in_batch` across
gradient accumulation, as Trainer passes it), with the logits of ~40-70 % fewer positions (no
prompt, no padding). Liger's fused loss goes further (no logits at all) at ~2.8x the step time.

`matches_stock_loss` checks it against the model's own loss on two examples before a build trains
(in eval mode: no dropout), so an architecture whose forward does more than decoder -> output
layer -> soft-capping keeps the stock loss. An unwrapped model only: under DDP (several
processes) or DataParallel (several GPUs in one process) the forward must go through the wrapper,
so those keep the stock loss too. The decoder and the output layer are called directly, outside the
model's forward, which is where accelerate puts mixed precision: the trainer puts its autocast
around them itself (bf16 on a GPU, as the stock path)."""

from __future__ import annotations

from typing import Any

from tournament.train.examples import IGNORE


def answer_only_loss(model, inputs: dict[str, Any], num_items_in_batch=None):
    """The mean cross-entropy of the trained tokens (labels != -100, shifted by one), computed from
    their positions' logits only; divided by `num_items_in_batch` when given (Trainer's count over
    the gradient-accumulation steps), else by the trained tokens of this batch."""
    import torch.nn.functional as F

    labels = inputs["labels"]
    out = model.get_decoder()(input_ids=inputs["input_ids"], attention_mask=inputs.get("attention_mask"),
                              use_cache=False)
    hidden = out[0] if isinstance(out, tuple) else out.last_hidden_state
    targets = labels[:, 1:]
    keep = targets != IGNORE
    logits = model.get_output_embeddings()(hidden[:, :-1][keep])
    cap = getattr(text_config(model), "final_logit_softcapping", None)
    if cap:
        logits = (logits / cap).tanh() * cap
    loss = F.cross_entropy(logits.float(), targets[keep], reduction="sum")
    if num_items_in_batch is None:
        return loss / keep.sum().clamp(min=1)
    if hasattr(num_items_in_batch, "to"):
        num_items_in_batch = num_items_in_batch.to(loss.device)
    return loss / num_items_in_batch


def text_config(model):
    """The language model's config (a multimodal model such as gemma-3 nests it; a text-only one is it)."""
    cfg = model.config
    return cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg


def matches_stock_loss(model, batch: dict[str, Any], rtol: float = 1e-3) -> tuple[bool, str]:
    """(does `answer_only_loss` equal the model's own loss on `batch`?, what was compared). Run in
    eval mode without gradients; the model's training mode is restored."""
    import torch

    was_training = model.training
    device = next(model.parameters()).device  # the batch goes where the model is (a GPU, say)
    batch = {k: v.to(device) if hasattr(v, "to") else v for k, v in batch.items()}
    model.eval()
    try:
        with torch.no_grad():
            stock = float(model(**batch).loss)
            mine = float(answer_only_loss(model, batch))
    except Exception as e:  # noqa: BLE001 - an architecture it cannot take: the stock loss then
        return False, f"{type(e).__name__}: {e}"
    finally:
        model.train(was_training)
    ok = abs(stock - mine) <= rtol * max(1.0, abs(stock))
    return ok, f"loss {mine:.6f} from the trained positions vs {stock:.6f} from the model's forward"


def answer_only_trainer():
    """transformers' `Trainer` whose training loss is `answer_only_loss` (one process; evaluation
    and `return_outputs` keep the stock path)."""
    from transformers import Trainer

    class AnswerOnlyTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            # a wrapped model (DDP across processes, DataParallel over several visible GPUs in one
            # process) must be called through its wrapper: the stock path then
            wrapped = self.accelerator.num_processes > 1 or self.args.n_gpu > 1 or (
                self.accelerator.unwrap_model(model) is not model)
            if return_outputs or wrapped or "labels" not in inputs:
                return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                            num_items_in_batch=num_items_in_batch)
            # as the stock path: the model is given the count only when its forward takes it, and
            # Trainer then leaves the loss unscaled for gradient accumulation (training_step)
            n = num_items_in_batch if self.model_accepts_loss_kwargs else None
            # accelerate puts bf16 autocast around the model's own forward only (prepare wraps
            # `forward`): the decoder and the output layer called here need it around them
            with self.accelerator.autocast():
                return answer_only_loss(model, inputs, n)

    return AnswerOnlyTrainer
