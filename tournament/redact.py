"""Secrets, recognised in one place: which names hold one, and which text looks like one.

Everything that lets text leave the process uses this set: MLflow params, tags and artifacts and
the sweep's records (`tournament.tracking` re-exports `scrub` / `scrub_text`), a teacher
server's error text (`tournament.data.teacher`), and the Dockerfile lint (`tournament.images.lint`:
an image holds no secret).

- A *name* holds a secret when it contains TOKEN, KEY, SECRET, PASSW(OR)D or CREDENTIAL
  (HF_TOKEN, MODELSCOPE_API_TOKEN, OPENAI_API_KEY, PGPASSWORD); TOKENS counts tokens (MAX_TOKENS)
  and TOKENIZER names a tokenizer (TOURNAMENT_GGUF_TOKENIZER: a folder, shown in the logs).
  The value of every such environment variable is masked wherever it appears.
- A config *key* is dropped when its last dotted part ends in one of those words (api_key,
  HF_TOKEN, db.password), so settings that count tokens stay (max_tokens, stop_token_ids,
  max_num_batched_tokens), and so do the sweep's content hashes (group_key, cache_key).
- Text that looks like a credential is masked whatever its source: hub tokens (hf_, ms-, sk-,
  gh*_), a URL's password, an HTTP ``Bearer`` value.
"""

from __future__ import annotations

import os
import re
from typing import Any, Iterable

SECRET_NAME = re.compile(r"TOKEN(?!S|IZER)|KEY|SECRET|PASSW|CREDENTIAL", re.IGNORECASE)
SECRET_KEY_END = re.compile(r"(TOKEN|KEY|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$", re.IGNORECASE)
HASH_KEYS = {"group_key", "cache_key"}
TOKEN_LIKE = re.compile(r"\b(hf_[A-Za-z0-9]{20,}|ms-[A-Za-z0-9-]{20,}|sk-[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,})\b")
URL_PASSWORD = re.compile(r"(://[^/:@\s]+):[^@/\s]+@")
BEARER = re.compile(r"(Bearer\s+)[^\s\"',}]+", re.IGNORECASE)
MASK = "***"


def secret_name(name: str) -> bool:
    """An environment variable (or Docker ARG/ENV) name that holds a secret."""
    return bool(SECRET_NAME.search(str(name)))


def secret_key(key: Any) -> bool:
    """A config key that names a secret: its last dotted part ends in a secret word, and it is not
    one of the sweep's content hashes."""
    last = str(key).rsplit(".", 1)[-1]
    return last.lower() not in HASH_KEYS and bool(SECRET_KEY_END.search(last))


def _secret_values(env: dict[str, str] | None = None) -> list[str]:
    # Values under 6 characters ("1", "true") would mask ordinary text, not a secret.
    env = os.environ if env is None else env
    return [v for k, v in env.items() if secret_name(k) and v and len(v) >= 6]


def scrub_text(text: str, env: dict[str, str] | None = None, values: Iterable[str | None] = ()) -> str:
    """`text` with secrets masked: the values of secret-named variables of `env` (default: this
    process's environment), every non-empty one of `values` (a key given as an argument), and
    anything that looks like a credential."""
    for v in sorted({*_secret_values(env), *(v for v in values if v)}, key=len, reverse=True):
        text = text.replace(v, MASK)
    text = TOKEN_LIKE.sub(MASK, text)
    text = BEARER.sub(rf"\1{MASK}", text)
    return URL_PASSWORD.sub(rf"\1:{MASK}@", text)


def scrub(obj: Any, env: dict[str, str] | None = None) -> Any:
    """Drop secret-named keys and mask secret values, recursively."""
    if isinstance(obj, dict):
        return {k: scrub(v, env) for k, v in obj.items() if not secret_key(k)}
    if isinstance(obj, (list, tuple)):
        return [scrub(v, env) for v in obj]
    if isinstance(obj, str):
        return scrub_text(obj, env)
    return obj
