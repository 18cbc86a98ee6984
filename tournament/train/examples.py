"""Training examples: QA rows -> token sequences with answer-only labels, packing, and the
collation Trainer uses (padding; labels -100 on the prompt and the padding)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tournament.prompting import PromptSpec, render_prompt, starts_with_bos

IGNORE = -100  # label of the tokens the loss does not count (the prompt, padding)


def read_rows(path: Path) -> list[tuple[str, str]]:
    """(question, answer) pairs of any QA file (see tournament.data.ingest.load_qa_rows)."""
    from tournament.data.ingest import load_qa_rows

    return [(r.question, r.answer) for r in load_qa_rows(path)]


SENTENCE_ENDS = "。！？；.!?;\n"


def cap_answer(answer: str, max_chars: int | None) -> str:
    """Cut an answer to at most max_chars, at a sentence end when one lies in the second half."""
    if not max_chars or len(answer) <= max_chars:
        return answer
    cut = max(answer.rfind(p, 0, max_chars) for p in SENTENCE_ENDS)
    return answer[: cut + 1] if cut >= max_chars // 2 else answer[:max_chars]


def encode_example(tokenizer: Any, spec: PromptSpec, question: str, answer: str, max_length: int,
                   max_answer_chars: int | None = None,
                   target_template: str = "{answer}") -> tuple[list[int], list[int]] | None:
    """input_ids and labels (prompt masked with -100; target + EOS kept)."""
    prompt = render_prompt(spec, question, tokenizer)
    p_ids = tokenizer(prompt, add_special_tokens=not starts_with_bos(tokenizer, prompt))["input_ids"]
    answer = cap_answer(answer.strip(), max_answer_chars)
    answer = target_template.format(question=question.strip()[: spec.max_question_chars], answer=answer).strip()
    a_ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        a_ids = a_ids + [tokenizer.eos_token_id]
    if not a_ids:
        return None
    budget = max_length - min(len(a_ids), max_length // 2)
    if len(p_ids) > budget:  # keep the end of the prompt ("答案：" / the assistant header)
        p_ids = p_ids[len(p_ids) - budget:]
    a_ids = a_ids[: max_length - len(p_ids)]
    return p_ids + a_ids, [IGNORE] * len(p_ids) + a_ids


def pack(examples: list[tuple[list[int], list[int]]], max_length: int) -> list[tuple[list[int], list[int]]]:
    """Concatenate whole examples, in order, into sequences of at most max_length tokens."""
    out: list[tuple[list[int], list[int]]] = []
    ids: list[int] = []
    labels: list[int] = []
    for e_ids, e_labels in examples:
        if ids and len(ids) + len(e_ids) > max_length:
            out.append((ids, labels))
            ids, labels = [], []
        ids = ids + e_ids
        labels = labels + e_labels
    if ids:
        out.append((ids, labels))
    return out


def collate(seqs: list[tuple[list[int], list[int]]], pad_id: int):
    import torch

    width = max(len(s[0]) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (s_ids, s_labels) in enumerate(seqs):
        ids[i, : len(s_ids)] = torch.tensor(s_ids)
        labels[i, : len(s_labels)] = torch.tensor(s_labels)
        mask[i, : len(s_ids)] = 1
    return ids, labels, mask


class CompletionCollator:
    """Trainer's data collator: pads `{"input_ids", "labels"}` items to the longest of the batch.
    The labels keep the -100 that `encode_example` put on the prompt (and padding gets -100), so
    the loss counts the completion only."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, items: list[dict[str, list[int]]]) -> dict[str, Any]:
        ids, labels, mask = collate([(it["input_ids"], it["labels"]) for it in items], self.pad_id)
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
