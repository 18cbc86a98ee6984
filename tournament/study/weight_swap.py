"""Serving a new build on running servers (sweep only): its weights swapped in, no restart.

A drawn recipe is a new build of the same base model: the same architecture, the same tokenizer,
only other weights. Starting a server pair for it costs ~90 s on an H100 (imports, engine start,
compile, CUDA graphs), most of a recipe's measuring time. When the running servers' engine
settings and prompt equal the new trial's, and the new build's config.json and tokenizer files
equal the running build's, each server gets ``POST /admin/load {"path": <build>}`` instead
(vLLM's in-place reload: the same tensors, so its compiled graphs stay valid; the prefix cache is
emptied). Speed is unchanged by construction (the same kernels on the same shapes), and the time
to healthy a trial reports stays the servers' start: it depends on the engine settings, which did
not change. Anything else (another engine setting, a GGUF file, a checkpoint-quantized build whose
config differs, an engine that cannot) starts new servers as before.

The first swap on each engine settings of a sweep is checked (`check_round_trip`): the running
build's greedy answers to a few eval questions, the new build swapped in, the old one swapped back,
and the old answers must come back exactly; else the sweep swaps no more on those settings and
starts servers for them as before. Per settings, because a reload is only as good as the engine's
path for it: on an H100 (vLLM 0.26) the bf16 pair's swaps came back exactly, while a pair with
on-the-fly fp8 changed 2 of 8 greedy answers after a swap there and back (its weights are
quantized when loaded), and one such failure had turned the bf16 pair's swaps off too."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from tournament.serving.config import ServeConfig

# config.json keys that say where and by what a build was saved, not what it is
CONFIG_NOISE = ("_name_or_path", "transformers_version")
# what the server reads besides the weights: they must be the same files
SERVED_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                "added_tokens.json", "chat_template.jinja", "chat_template.json", "generation_config.json")


def model_signature(model_dir: Path) -> str | None:
    """A hash of what a server builds from a model folder apart from the weights: config.json
    (without the saving noise) and the tokenizer and generation files. None without config.json."""
    model_dir = Path(model_dir)
    try:
        config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    h = hashlib.sha256(json.dumps({k: v for k, v in config.items() if k not in CONFIG_NOISE},
                                  sort_keys=True).encode())
    for name in SERVED_FILES:
        f = model_dir / name
        h.update(name.encode() + (f.read_bytes() if f.is_file() else b"<none>"))
    return h.hexdigest()


def engine_settings_key(config: ServeConfig) -> str:
    """What a swap's check holds for: everything a server is started with but the weights' folder
    and the per-request settings (engine, quantization, prompt, model source)."""
    from tournament.files import json_hash

    return json_hash(config.model_dump(mode="json", exclude={"decode": True, "mode": True, "model": {"path"}}), 16)


def why_not_swap(running: ServeConfig, wanted: ServeConfig) -> str | None:
    """None when `wanted` can be served by swapping weights into a server running `running`;
    else the reason in words."""
    if running.model.gguf_file or wanted.model.gguf_file:
        return "a GGUF model is loaded whole"
    if running.model_dump(exclude={"model", "decode", "mode"}) != wanted.model_dump(exclude={"model", "decode", "mode"}):
        return "other engine settings or prompt"
    if running.model.model_dump(exclude={"path"}) != wanted.model.model_dump(exclude={"path"}):
        return "another model source"
    old, new = model_signature(Path(running.model.path)), model_signature(Path(wanted.model.path))
    if old is None or new is None or old != new:
        return "another architecture, tokenizer or generation config"
    return None


def swap_weights(url: str, model_path: str, timeout: float = 600.0) -> float:
    """``POST /admin/load`` on one running server; its seconds. A refusal or failure raises with
    the server's own words."""
    from tournament.judge.emulator import http_client

    t0 = time.monotonic()
    with http_client() as client:
        r = client.post(url + "/admin/load", json={"path": model_path}, timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError(f"POST /admin/load answered {r.status_code}: {r.text[:300]}")
    return time.monotonic() - t0


def _answers(url: str, questions: list[str], timeout: float) -> list[str]:
    from tournament.judge.emulator import http_client

    with http_client() as client:
        r = client.post(url + "/predict", json={"prompt": list(questions)}, timeout=timeout)
    if r.status_code != 200:
        raise RuntimeError(f"POST /predict answered {r.status_code}: {r.text[:300]}")
    return list(r.json()["response"])


def check_round_trip(url: str, old_path: str, new_path: str, questions: list[str],
                     timeout: float = 600.0) -> tuple[bool, str]:
    """Swap `new_path` into the server at `url` (running `old_path`), checked: the old build's greedy
    answers to `questions`, the new build in, the old one back, the same answers again, then the new
    one in for good. (passed?, what was seen). A reload that corrupted or kept stale weights would
    not give the old answers back; new answers equal to the old ones prove nothing either way."""
    before = _answers(url, questions, timeout)
    swap_weights(url, new_path, timeout)
    new = _answers(url, questions, timeout)
    swap_weights(url, old_path, timeout)
    again = _answers(url, questions, timeout)
    swap_weights(url, new_path, timeout)
    changed = sum(a != b for a, b in zip(before, again))
    differ = sum(a != b for a, b in zip(before, new))
    if changed:
        return False, (f"{changed} of {len(questions)} greedy answers changed after a swap there and back: "
                       "weight swaps on these engine settings are off for the rest of this sweep")
    return True, (f"weight swap checked: {len(questions)} greedy answers came back after a swap there and back "
                  f"({differ} differ between the two builds)")
