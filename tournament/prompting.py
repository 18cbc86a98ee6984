"""The one prompt template shared by training and serving.

A model answers best when it is served with exactly the text it was trained on, so training
(`tournament.train`) and both serving engines build prompts through `render_prompt` and nothing
else. The template travels inside candidate YAML files and `winner.json` as a `PromptSpec`.

Styles:
- ``plain``: ``{prefix}{shots}问题：{question}\\n答案：`` — for base models (the embedded gemma).
- ``chat``: the tokenizer's chat template (system + few-shot turns + user question), with Qwen3's
  thinking switched off. Falls back to ``plain`` when the tokenizer has no chat template.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

THINK_BLOCK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL)


class Shot(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str
    answer: str


class PromptSpec(BaseModel):
    """How a question becomes the text the model continues."""

    model_config = ConfigDict(extra="forbid")

    style: Literal["plain", "chat"] = "plain"
    system: str | None = None
    # Text put before everything in plain style (an instruction such as "用中文回答，保留英文术语").
    prefix: str = ""
    question_label: str = "问题："
    answer_label: str = "答案："
    shots: list[Shot] = Field(default_factory=list)
    # Questions longer than this are cut (keeps prompts inside max_model_len whatever arrives).
    max_question_chars: int = 2000
    # Cut the answer where the model starts inventing the next question (base models do).
    stop: list[str] = Field(default_factory=lambda: ["\n问题：", "问题：", "\n\n\n"])


def _plain(spec: PromptSpec, question: str) -> str:
    parts = [spec.prefix] if spec.prefix else []
    for shot in spec.shots:
        parts.append(f"{spec.question_label}{shot.question}\n{spec.answer_label}{shot.answer}\n\n")
    parts.append(f"{spec.question_label}{question}\n{spec.answer_label}")
    return "".join(parts)


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


# Where transformers saves a chat template beside tokenizer_config.json (chat_template.json is a
# processor's; counted too, so a doubt never merges two prompts).
CHAT_TEMPLATE_FILES = ("chat_template.jinja", "chat_template.json")
CHAT_TEMPLATE_DIR = "additional_chat_templates"


def tokenizer_dir_has_chat_template(model_dir: Any) -> bool | None:
    """Whether the tokenizer saved in `model_dir` carries a chat template, read from the files
    transformers saves it in (``tokenizer_config.json``'s ``chat_template``,
    ``chat_template.jinja`` beside it, named templates in ``additional_chat_templates/``); None
    when the folder holds no tokenizer config to tell (a GGUF file, a hub id)."""
    import json
    from pathlib import Path

    d = Path(str(model_dir))
    if any((d / f).is_file() for f in CHAT_TEMPLATE_FILES) or any((d / CHAT_TEMPLATE_DIR).glob("*")):
        return True
    try:
        cfg = json.loads((d / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return bool(cfg.get("chat_template")) if isinstance(cfg, dict) else None


def effective_spec(spec: PromptSpec, has_template: bool) -> PromptSpec:
    """The spec as `render_prompt` applies it: a chat spec on a tokenizer without a chat template
    renders plain, and a plain prompt has no system text. Two specs equal here render alike."""
    if spec.style == "chat" and has_template:
        return spec
    return spec if spec.style == "plain" and spec.system is None else spec.model_copy(
        update={"style": "plain", "system": None})


def render_prompt(spec: PromptSpec, question: str, tokenizer: Any = None) -> str:
    """Return the exact text the model sees before its answer."""
    question = str(question)[: spec.max_question_chars]
    if spec.style == "plain" or tokenizer is None or not has_chat_template(tokenizer):
        return _plain(spec, question)
    messages: list[dict[str, str]] = []
    if spec.system:
        messages.append({"role": "system", "content": spec.system})
    for shot in spec.shots:
        messages.append({"role": "user", "content": shot.question})
        messages.append({"role": "assistant", "content": shot.answer})
    messages.append({"role": "user", "content": question})
    try:
        # enable_thinking is read by Qwen3's template and ignored by the others.
        return tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=False
        )
    except TypeError:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def clean_answer(text: str, stop: list[str] | tuple[str, ...] = ()) -> str:
    """Strip Qwen3 thinking blocks, cut at the first stop string, trim whitespace."""
    text = THINK_BLOCK.sub("", str(text))
    cut = len(text)
    for s in stop:
        if s:
            i = text.find(s)
            if 0 <= i < cut:
                cut = i
    return text[:cut].strip()


def fallback_answer(question: str) -> str:
    """The answer when generation failed or came back empty: the question itself. It scores > 0
    under the judge's metric (~0.36 on the basic samples); an empty answer scores 0."""
    return str(question).strip() or "?"


def answer_or_fallback(question: str, raw: str | None,
                       stop: list[str] | tuple[str, ...] = ()) -> tuple[str, bool]:
    """What the server returns for one question, and whether it is the fallback: the cleaned
    answer, else (generation failed: `raw` is None, or nothing is left after cleaning) the question."""
    cleaned = clean_answer(raw, stop) if raw is not None else ""
    return (cleaned, False) if cleaned else (fallback_answer(question), True)


def final_answer(question: str, raw: str | None, stop: list[str] | tuple[str, ...] = ()) -> str:
    """What the server returns for one question: the cleaned answer, else the fallback."""
    return answer_or_fallback(question, raw, stop)[0]


def starts_with_bos(tokenizer: Any, text: str) -> bool:
    """True when a rendered template already starts with the BOS text: tokenize it without adding
    special tokens, or the model sees BOS twice (training and serving must agree on this)."""
    bos = getattr(tokenizer, "bos_token", None)
    return bool(bos) and text.startswith(bos)
