"""Is a tokenizer cutting text the way its vocabulary says? A check for tokenizers rebuilt from a GGUF.

A GGUF carries no tokenizer.json: transformers rebuilds the tokenizer from the file's token list,
and how it does that changed between releases. transformers 5.17 rebuilds gemma-3's as a unigram
model over the file's scores, which do not follow gemma's merge order: "memory" comes out as
"me" "mo" "ry" although "memory" is one token of the vocabulary (5.25 rebuilds the merges in file
order and keeps it whole). A model fine-tuned and served with such a tokenizer reads every text cut
unlike its pretraining, and spends ~2x the tokens per character: both accuracy and chars/s suffer,
and nothing fails.

The check: a correct BPE or sentencepiece tokenizer returns an ordinary whole word of its own
vocabulary (a word-start piece of plain letters) as that one token. Take a fixed sample of such
words and count how many come back split.
"""

from __future__ import annotations

import re
from typing import Any

WORD = re.compile(r"^\u2581[a-z]{4,12}$")  # a word-start piece of plain lower-case letters
SAMPLE = 400
MAX_SPLIT_SHARE = 0.10  # a correct rebuild splits ~none; the 5.17 gemma rebuild splits most
MIN_WORDS = 20  # fewer whole words than this (a tiny test vocabulary): nothing to judge by


class TokenizerSplitsWords(ValueError):
    pass


def word_split_share(tokenizer: Any, sample: int = SAMPLE) -> tuple[float | None, list[tuple[str, list[str]]]]:
    """(share of sampled whole-word vocabulary pieces the tokenizer splits, up to 5 examples). The
    sample is every k-th such piece in id order, so the same tokenizer always gives the same
    answer. None when the vocabulary holds fewer than MIN_WORDS such pieces."""
    words = sorted((i, t) for t, i in tokenizer.get_vocab().items() if WORD.match(t))
    if len(words) < MIN_WORDS:
        return None, []
    step = max(1, len(words) // sample)
    picked = words[::step][:sample]
    split = []
    for _, piece in picked:
        # "▁memory" is how " memory" is spelled inside the vocabulary; a tokenizer that puts the
        # word-start mark before every text itself (llama-2's legacy shape, phi-3's) spells it from
        # "memory" alone, and turns " memory" into "▁" "▁memory": either way is whole
        tries = [tokenizer.convert_ids_to_tokens(tokenizer(text, add_special_tokens=False)["input_ids"])
                 for text in (" " + piece[1:], piece[1:])]
        if [piece] not in tries:
            split.append((piece[1:], tries[0]))
    return len(split) / len(picked), split[:5]


def check_tokenizer(tokenizer: Any, where: str) -> float | None:
    """The split share (None: too small to judge); TokenizerSplitsWords when above MAX_SPLIT_SHARE,
    naming examples."""
    share, examples = word_split_share(tokenizer, SAMPLE)
    if share is not None and share > MAX_SPLIT_SHARE:
        shown = "; ".join(f"{w!r} -> {' '.join(p)}" for w, p in examples)
        raise TokenizerSplitsWords(
            f"{where}: the tokenizer splits {share:.0%} of the whole words of its own vocabulary "
            f"({shown}): a model trained and served with it reads text cut unlike its pretraining")
    return share
