"""The loss from the trained positions' logits alone (train/answer_loss.py) is the model's own
loss: the same value and the same gradients, for a full model and a LoRA one, with Trainer's
token count across gradient accumulation; a build trains the same with it as without it; and a
model whose forward does more than its output layer keeps its own loss."""

from __future__ import annotations

import json

import pytest

from tests.train.test_train import _cand, _tensors
from tournament.train.build import ensure_built


def _batch(model_dir):
    from transformers import AutoTokenizer

    from tournament.prompting import PromptSpec
    from tournament.train.examples import CompletionCollator, encode_example

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    spec = PromptSpec(style="chat", system="简洁回答")
    items = [dict(zip(("input_ids", "labels"), encode_example(tok, spec, q, a, 128)))
             for q, a in [("什么是 warp？", "warp 是调度单位。"), ("什么是 tiling，它为什么减少访存？", "分块。"),
                          ("What is a kernel?", "A function that runs on the GPU.")]]
    return CompletionCollator(tok.pad_token_id)(items)


@pytest.mark.parametrize("method", ["full", "lora"])
def test_the_same_loss_and_gradients_as_the_models_own(tiny_model_dir, method):
    import torch
    from transformers import AutoModelForCausalLM

    from tournament.train.answer_loss import answer_only_loss, matches_stock_loss

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
        for n, p in model.named_parameters():  # adapters away from their zero start: a real update
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.05)
    batch = _batch(tiny_model_dir)
    trained = int((batch["labels"][:, 1:] != -100).sum())
    ok, why = matches_stock_loss(model, batch)
    assert ok, why
    params = [p for p in model.parameters() if p.requires_grad]

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return [p.grad.detach().clone() for p in params]

    stock = model(**batch, num_items_in_batch=trained * 2)  # Trainer's count over two accumulated batches
    mine = answer_only_loss(model, batch, torch.tensor(trained * 2))
    assert float(mine.detach()) == pytest.approx(float(stock.loss.detach()), rel=1e-5)
    assert float(mine.detach()) == pytest.approx(float(answer_only_loss(model, batch).detach()) / 2, rel=1e-5)
    for a, b in zip(grads(stock.loss), grads(mine)):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_forward_that_does_more_keeps_the_models_own_loss(tiny_model_dir):
    """A logit scale inside the model's forward (as some architectures have after the output
    layer) is not what the trained positions' logits give: the check says so, and the model is
    back in the mode it was in."""
    from transformers import AutoModelForCausalLM

    from tournament.train.answer_loss import matches_stock_loss

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    inner = model.forward

    def scaled(**kwargs):
        labels = kwargs.pop("labels")
        out = inner(**kwargs)
        out.loss = model.loss_function(out.logits * 0.5, labels, model.config.vocab_size)
        return out

    model.forward = scaled
    model.train()
    ok, why = matches_stock_loss(model, _batch(tiny_model_dir))
    assert not ok and "from the model's forward" in why
    assert model.training


def test_a_build_trains_the_same_with_either_loss(tiny_model_dir, dataset, tmp_path, monkeypatch):
    """Two real builds of one recipe, one with the trained positions' logits (the default where the
    check passes) and one with the model's own loss: the same loss curve and the same weights."""
    import torch

    from tournament.train import answer_loss

    cand = _cand(tiny_model_dir, dataset, "full", cid="al", batch_size=4, grad_accum=2)
    built = ensure_built(cand, tmp_path / "a", max_steps=3)
    doc = json.loads((built.parent / "candidate.json").read_text())
    assert doc["train"]["loss_logits"] == "trained positions"
    monkeypatch.setattr(answer_loss, "matches_stock_loss", lambda model, batch: (False, "forced off"))
    stock = ensure_built(cand, tmp_path / "b", max_steps=3)
    other = json.loads((stock.parent / "candidate.json").read_text())
    assert other["train"]["loss_logits"] == "every position"
    assert [s for s, _ in doc["train"]["loss_curve"]] == [s for s, _ in other["train"]["loss_curve"]]
    for (_, a), (_, b) in zip(doc["train"]["loss_curve"], other["train"]["loss_curve"]):
        assert a == pytest.approx(b, rel=1e-4)
    ta, tb = _tensors(built), _tensors(stock)
    assert ta.keys() == tb.keys()
    for k in ta:
        torch.testing.assert_close(ta[k].float(), tb[k].float(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("answer_only", [False, True])
def test_the_decoder_runs_under_the_trainers_mixed_precision(tiny_model_dir, tmp_path, answer_only):
    """bf16 (on this CPU, as on a GPU): accelerate puts autocast around the model's own forward;
    the trained positions' path calls the decoder outside it, so it must put it there itself, or
    a full SFT (fp32 master weights) would run its decoder in fp32: slower, twice the activations."""
    from transformers import AutoModelForCausalLM, Trainer, TrainingArguments

    from tournament.train.answer_loss import answer_only_trainer
    from tournament.train.examples import CompletionCollator

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir))
    dtypes = []
    import torch

    linear = next(m for m in model.get_decoder().layers[0].modules() if isinstance(m, torch.nn.Linear))
    linear.register_forward_hook(lambda m, i, o: dtypes.append(o.dtype))  # bf16 under autocast
    batch = _batch(tiny_model_dir)
    items = [{"input_ids": [int(x) for x, m in zip(ids, mask) if m], "labels": [int(y) for y, m in zip(lab, mask) if m]}
             for ids, lab, mask in zip(batch["input_ids"], batch["labels"], batch["attention_mask"])]
    args = TrainingArguments(output_dir=str(tmp_path / "out"), bf16=True, use_cpu=True, max_steps=1,
                             per_device_train_batch_size=3, report_to=[], save_strategy="no")
    cls = answer_only_trainer() if answer_only else Trainer
    trainer = cls(model=model, args=args, train_dataset=items, data_collator=CompletionCollator(0))
    trainer.train()
    assert dtypes and set(dtypes) == {torch.bfloat16}, dtypes
