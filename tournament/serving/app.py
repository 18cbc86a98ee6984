"""The FastAPI app the judge runs (`serve.py` re-exports `app`).

- The engine is loaded and warmed inside the lifespan start-up, so the port opens (and `GET /`
  answers) only when the first real request will be fast; warm-up never lands in a timed call.
- `POST /predict` takes `{"prompt": str}` or `{"prompt": [str, ...]}`. The body is parsed by hand
  so that every bad input gets a clear 4xx JSON error instead of a crash or a 500.
- Engine failure never kills the server and never returns an empty answer: a failing batch is
  retried prompt by prompt, and a prompt that still fails (or yields nothing after cleaning) is
  answered with its own question text. Echoing the question is the best cheap fallback under
  the judge's metric (it scores ~0.36 on the basic samples, an empty answer scores 0).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from tournament.prompting import answer_or_fallback, render_prompt
from tournament.serving.config import (
    DecodeSettings,
    ServeConfig,
    WinnerFileError,
    check_model_folder,
    load_serve_config,
    sweep_mode_enabled,
)
from tournament.serving.engines import Engine, load_engine, load_weights

log = logging.getLogger("tournament.serve")

WARMUP_QUESTIONS = ["什么是 CUDA kernel？", "Explain memory coalescing in one sentence.", "什么是 warp？"]


class ServerState:
    def __init__(self) -> None:
        self.config: ServeConfig | None = None
        self.engine: Engine | None = None
        self.lock = threading.Lock()  # engines are not re-entrant; one batch at a time
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="generate")
        self.started_at = time.time()
        self.ready_seconds: float | None = None
        self.stats = {"requests": 0, "prompts": 0, "engine_errors": 0, "fallbacks": 0}
        self.broken: str | None = None  # sweep mode only: a weight swap failed part-way


state = ServerState()


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message})


def answer_questions(questions: list[str]) -> list[str]:
    """Render, dedup, generate, clean, fall back. Always one non-empty answer per question."""
    cfg, engine = state.config, state.engine
    assert cfg is not None and engine is not None
    decode = cfg.effective_decode()
    prompts = [render_prompt(cfg.prompt, q, engine.tokenizer) for q in questions]
    # Identical prompts are generated once: exact under greedy decoding, and the judge's sets
    # repeat questions. With sampling it still returns a valid (shared) sample.
    unique = list(dict.fromkeys(prompts)) if cfg.dedup else prompts
    with state.lock:
        raw = _generate_resilient(engine, unique, decode)
    by_prompt = dict(zip(unique, raw)) if cfg.dedup else None
    answers = []
    for i, (question, prompt) in enumerate(zip(questions, prompts)):
        generated = by_prompt[prompt] if by_prompt is not None else raw[i]
        answer, fell_back = answer_or_fallback(question, generated, decode.stop)
        if fell_back:
            state.stats["fallbacks"] += 1
        answers.append(answer)
    return answers


def _generate_resilient(engine: Engine, prompts: list[str], decode: DecodeSettings) -> list[str | None]:
    try:
        out = engine.generate(prompts, decode)
        if len(out) != len(prompts):
            raise RuntimeError(f"engine returned {len(out)} answers for {len(prompts)} prompts")
        return list(out)
    except Exception:
        state.stats["engine_errors"] += 1
        log.exception("engine failed on a batch of %d; retrying one by one", len(prompts))
    results: list[str | None] = []
    for p in prompts:
        try:
            results.append(engine.generate([p], decode)[0])
        except Exception:
            state.stats["engine_errors"] += 1
            log.exception("engine failed on one prompt; answering with the question")
            results.append(None)
    return results


def _startup() -> None:
    cfg, base = load_serve_config()
    model_dir = check_model_folder(cfg, base)
    root = os.environ.get("VLLM_CACHE_ROOT")
    if cfg.engine.engine == "vllm":
        cache = " (compile cache: " + (root or "vLLM's default") + ")"
    else:  # transformers compiles nothing: name the variable only when a caller set it (benches, cold starts)
        cache = f" (VLLM_CACHE_ROOT={root} unused: this engine compiles nothing)" if root else ""
    log.info("loading %s engine from %s%s", cfg.engine.engine, model_dir, cache)
    t0 = time.time()
    state.config = cfg
    state.engine = load_engine(model_dir, cfg.model, cfg.engine)
    if cfg.warmup:
        # Warm every path a real request takes (tokenizer, kernels, CUDA graphs), on the thread
        # that will serve requests. A few tokens are enough: vLLM compiles and captures its CUDA
        # graphs inside LLM(); on a CPU every warm-up token costs a full read of the weights.
        decode = cfg.decode
        state.config = cfg.model_copy(update={"decode": decode.model_copy(update={"max_tokens": min(decode.max_tokens, 8)})})
        state.executor.submit(answer_questions, WARMUP_QUESTIONS).result()
        state.executor.submit(answer_questions, WARMUP_QUESTIONS[:1]).result()
        state.config = cfg
        state.stats = dict.fromkeys(state.stats, 0)  # count only what the judge sends
    state.ready_seconds = time.time() - state.started_at
    log.info("ready: load+warm-up %.1f s, %.1f s since process start", time.time() - t0, state.ready_seconds)


@asynccontextmanager
async def lifespan(_: FastAPI):
    try:
        _startup()
    except WinnerFileError as e:
        # the message names the setting, where it came from and the fix: a traceback would bury it
        log.error("serve.py cannot start: %s", e)
        logging.shutdown()
        os._exit(3)  # uvicorn's own exit code for a failed start-up
    yield
    if state.engine is not None:
        state.engine.close()


app = FastAPI(title="tournament serve", lifespan=lifespan)


@app.get("/")
def health() -> dict[str, str]:
    assert state.config is not None
    return {"status": state.config.mode}


def _parse_prompt(body: bytes, cfg: ServeConfig) -> tuple[str | list[str] | None, JSONResponse | None]:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return None, _error(400, f"body is not valid UTF-8: {e}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        return None, _error(400, f"body is not JSON: {e.msg} at position {e.pos}")
    except RecursionError:
        return None, _error(400, "body is nested too deeply to parse; send {\"prompt\": str | [str, ...]}")
    except ValueError as e:  # Python's int limit: a number of more than 4300 digits
        return None, _error(400, f"body holds a number too large to parse ({e})")
    if not isinstance(doc, dict) or "prompt" not in doc:
        return None, _error(422, 'expected a JSON object {"prompt": str | [str, ...]}')
    prompt = doc["prompt"]
    if isinstance(prompt, str):
        items = [prompt]
    elif isinstance(prompt, list):
        if not prompt:
            return None, _error(422, "prompt list is empty")
        if len(prompt) > cfg.max_batch:
            return None, _error(413, f"prompt list has {len(prompt)} items; the limit is {cfg.max_batch}")
        if not all(isinstance(p, str) for p in prompt):
            return None, _error(422, "every item of the prompt list must be a string")
        items = prompt
    else:
        return None, _error(422, f"prompt must be a string or a list of strings, not {type(prompt).__name__}")
    too_long = [i for i, p in enumerate(items) if len(p) > cfg.max_prompt_chars]
    if too_long:
        return None, _error(
            413, f"prompt {too_long[0]} has {len(items[too_long[0]])} characters; the limit is {cfg.max_prompt_chars}"
        )
    # json.loads joins escaped surrogate pairs, so a surrogate left is unpaired (JSON "\ud800"): the
    # tokenizer and the JSON response would fail on it and take the whole batch down.
    if isinstance(prompt, str):
        return clean_surrogates(prompt), None
    return [clean_surrogates(p) for p in prompt], None


_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_surrogates(text: str) -> str:
    """Replace unpaired UTF-16 surrogates (valid in JSON, not encodable as UTF-8) with U+FFFD."""
    return _SURROGATE.sub("\ufffd", text)


@app.post("/predict")
async def predict(request: Request) -> JSONResponse:
    cfg = state.config
    assert cfg is not None
    try:  # a client that promises a body and never sends it must not hold a connection for ever
        body = await asyncio.wait_for(request.body(), cfg.body_timeout_s)
    except asyncio.TimeoutError:
        return _error(408, f"the request body did not arrive within {cfg.body_timeout_s:g} s "
                           "(fewer bytes sent than Content-Length declares?)")
    prompt, err = _parse_prompt(body, cfg)
    if err is not None:
        return err
    if state.broken:
        return _error(503, state.broken)
    state.stats["requests"] += 1
    questions = [prompt] if isinstance(prompt, str) else list(prompt)
    state.stats["prompts"] += len(questions)
    # One long-lived generation thread (also the one that warmed up): torch's CPU thread pool and
    # CUDA state stay warm, the event loop stays free, and batches run one at a time.
    answers = await asyncio.get_running_loop().run_in_executor(state.executor, answer_questions, questions)
    return JSONResponse({"response": answers[0] if isinstance(prompt, str) else answers})


@app.get("/info")
def info() -> dict[str, Any]:
    cfg = state.config
    assert cfg is not None
    return {
        "engine": state.engine.name if state.engine else None,
        "config": cfg.model_dump(),
        "ready_seconds": state.ready_seconds,
        "stats": state.stats,
        "sweep_mode": sweep_mode_enabled(),
        "broken": state.broken,
    }


@app.post("/admin/config")
async def admin_config(request: Request) -> JSONResponse:
    """Sweep-only: change decode settings and/or mode between trials without a restart."""
    if not sweep_mode_enabled():
        return _error(404, "not found")
    try:
        doc = json.loads(await request.body())
        cfg = state.config
        assert cfg is not None
        update: dict[str, Any] = {}
        if "decode" in doc:
            update["decode"] = DecodeSettings.model_validate({**cfg.decode.model_dump(), **doc["decode"]})
        if "mode" in doc:
            update["mode"] = ServeConfig.model_validate({"mode": doc["mode"]}).mode
        state.config = cfg.model_copy(update=update)
    except ValidationError as e:  # before ValueError: pydantic's is one
        return _error(422, f"bad admin request: {e.errors()[0]['msg']}")
    except (ValueError, RecursionError, TypeError, AttributeError) as e:  # JSONDecodeError is a ValueError
        return _error(400, f"bad admin request: {str(e)[:300]}")
    return JSONResponse({"decode": state.config.decode.model_dump(), "mode": state.config.mode})


@app.post("/admin/reset_prefix_cache")
async def admin_reset_prefix_cache() -> JSONResponse:
    """Sweep-only: empty the engine's prefix cache before a timed POST. The judge sends each
    question once to a fresh server; a sweep that times the same POST again (repeats, later trials
    on the same server) would otherwise find its prompts' KV blocks cached and time less prefill."""
    if not sweep_mode_enabled():
        return _error(404, "not found")
    from tournament.serving.engines import reset_prefix_cache

    assert state.engine is not None
    # on the generation thread: never while a batch runs
    done = await asyncio.get_running_loop().run_in_executor(state.executor, reset_prefix_cache, state.engine)
    state.stats["prefix_cache_resets"] = state.stats.get("prefix_cache_resets", 0) + 1
    log.info("prefix cache emptied for a timed POST (%s)", "reset" if done else "none kept by this engine")
    return JSONResponse({"reset": done, "engine": state.engine.name})


@app.post("/admin/load")
async def admin_load(request: Request) -> JSONResponse:
    """Sweep-only: serve another build of the same architecture without a restart: `{"path": dir}`
    (the sweep has checked that its config and tokenizer equal the running build's). The weights
    are swapped on the generation thread, never while a batch runs. 501: this engine cannot (the
    sweep starts a new server); 500: the swap failed part-way, so this server's weights are
    undefined and it answers 503 to every predict until it is stopped."""
    if not sweep_mode_enabled():
        return _error(404, "not found")
    try:
        doc = json.loads(await request.body())
        if not isinstance(doc, dict) or not isinstance(doc.get("path"), str) or not doc["path"]:
            raise ValueError('send {"path": "<model folder>"}')
        cfg = state.config
        assert cfg is not None and state.engine is not None
        if cfg.model.gguf_file:
            raise ValueError("a GGUF model is not swapped: start a server for it")
        new = cfg.model_copy(update={"model": cfg.model.model_copy(update={"path": doc["path"]})})
        model_dir = check_model_folder(new)
    except (ValueError, WinnerFileError) as e:  # JSONDecodeError is a ValueError
        return _error(400, f"bad admin request: {str(e)[:300]}")
    t0 = time.time()
    try:
        await asyncio.get_running_loop().run_in_executor(state.executor, _swap_weights, model_dir)
    except NotImplementedError as e:
        return _error(501, str(e)[:300])
    except Exception as e:  # noqa: BLE001 - reported; the server stays up to say so
        log.exception("swapping in %s failed", model_dir)
        state.broken = f"a weight swap failed part-way ({type(e).__name__}: {str(e)[:200]})"
        return _error(500, state.broken)
    state.config = state.config.model_copy(update={"model": new.model})  # decode settings may have changed meanwhile
    state.stats["weight_swaps"] = state.stats.get("weight_swaps", 0) + 1
    log.info("serving %s now (weights swapped in %.2f s)", model_dir, time.time() - t0)
    return JSONResponse({"path": str(model_dir), "seconds": round(time.time() - t0, 3)})


def _swap_weights(model_dir) -> None:
    with state.lock:
        load_weights(state.engine, model_dir)

