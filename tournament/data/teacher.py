"""Teacher generation: ask an OpenAI-compatible endpoint for QA pairs about each book chunk.

``vllm serve`` (or any ``/v1/chat/completions`` server) of a larger model writes questions and
answers in the style of the course samples; we parse and validate its JSON, drop duplicates of
existing data, and append JSONL rows with provenance (chunk id, prompt hash, model).

Robustness: each request is retried (tenacity) with exponential backoff on timeouts, connection
errors, HTTP 429/5xx and unparseable replies; a chunk that still fails is reported and left for the next
run. Resumable: a sidecar ``OUT.chunks.jsonl`` records finished chunks (with their prompt hash),
which a re-run skips; rows are appended chunk by chunk, so an interrupted run loses at most the
chunks in flight.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from tournament.data.book import Chunk, split_book
from tournament.data.neardup import NearIndex, shingles
from tournament.data.normalize import match_key
from tournament.prompting import THINK_BLOCK
from tournament.redact import scrub_text

SYSTEM_PROMPT = (
    "你是《Programming Massively Parallel Processors》（Kirk & Hwu）课程的助教，"
    "负责根据教材内容出考试用的问答题。只输出 JSON，不要输出任何其他文字。"
)

USER_TEMPLATE = """请根据下面的教材片段，出 {n} 道问答题。
要求：
- 问题用中文，具体、可独立理解（不要写“本段”“上文”）；
- 答案用中文，保留教材中的英文术语、API 名、变量名和数字（如 __syncthreads()、TILE_WIDTH、warp），长度 {min_chars}-{max_chars} 个字符；
- 答案只依据片段内容，先给结论，再给关键原因或机制。
示例：
{{"question": "CUDA中的__syncthreads()函数有什么作用？", "answer": "__syncthreads()是CUDA中的屏障同步函数，线程块内的线程调用它后会等待，直到同一线程块的所有线程都到达该同步点才继续执行，用于保证共享内存读写的先后顺序。"}}
输出格式（严格 JSON）：{{"pairs": [{{"question": "...", "answer": "..."}}]}}

教材片段（{title}）：
{text}
"""

_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL)
_CJK = re.compile(r"[\u4e00-\u9fff]")
_EXPECTED = "expected an OpenAI chat completion: {\"choices\": [{\"message\": {\"content\": ...}}]}"


class TeacherReplyError(ValueError):
    """The teacher's reply could not be turned into QA pairs."""


@dataclass
class ChunkOutcome:
    chunk_id: str
    status: str  # "ok" or "failed"
    pairs: int = 0  # valid pairs in the reply
    kept: int = 0  # written after dedupe
    rejected: dict[str, int] = field(default_factory=dict)
    attempts: int = 0
    error: str | None = None


@dataclass
class GenerateSummary:
    out: Path
    chunks_total: int
    chunks_skipped: int  # done in an earlier run
    outcomes: list[ChunkOutcome]

    @property
    def rows_written(self) -> int:
        return sum(o.kept for o in self.outcomes)

    @property
    def failed(self) -> list[ChunkOutcome]:
        return [o for o in self.outcomes if o.status != "ok"]

    def to_dict(self) -> dict[str, Any]:
        rejected: dict[str, int] = {}
        for o in self.outcomes:
            for k, v in o.rejected.items():
                rejected[k] = rejected.get(k, 0) + v
        return {
            "out": str(self.out),
            "chunks_total": self.chunks_total,
            "chunks_skipped": self.chunks_skipped,
            "chunks_done": sum(1 for o in self.outcomes if o.status == "ok"),
            "chunks_failed": [{"chunk_id": o.chunk_id, "error": o.error, "attempts": o.attempts} for o in self.failed],
            "rows_written": self.rows_written,
            "rejected": rejected,
        }


def build_messages(chunk: Chunk, n_pairs: int, min_chars: int, max_chars: int) -> list[dict[str, str]]:
    user = USER_TEMPLATE.format(n=n_pairs, min_chars=min_chars, max_chars=max_chars,
                                title=chunk.title or "无标题", text=chunk.text)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


def prompt_hash(model: str, messages: list[dict[str, str]]) -> str:
    blob = json.dumps({"model": model, "messages": messages}, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:16]


def parse_pairs(content: str) -> list[dict[str, Any]]:
    """The list of ``{"question", "answer"}`` objects in a reply (fences and <think> tolerated)."""
    text = THINK_BLOCK.sub("", content).strip()
    fenced = _FENCE.search(text)
    candidates = [fenced.group(1)] if fenced else []
    candidates.append(text)
    decoder = json.JSONDecoder()
    for cand in candidates:
        for start in (m.start() for m in re.finditer(r"[\[{]", cand)):
            try:
                data, _ = decoder.raw_decode(cand, start)
            except json.JSONDecodeError:
                continue
            if isinstance(data, dict):
                for key in ("pairs", "qa", "items", "data", "questions"):
                    if isinstance(data.get(key), list):
                        data = data[key]
                        break
                else:
                    data = [data] if "question" in data else None
            if isinstance(data, list) and data and all(isinstance(x, dict) for x in data):
                return data
    raise TeacherReplyError(f"no JSON list of QA pairs in the reply: {content[:120]!r}")


def validate_pair(pair: dict[str, Any], min_chars: int, max_chars: int) -> tuple[str, str] | str:
    """``(question, answer)`` or the reason the pair is rejected."""
    q, a = pair.get("question"), pair.get("answer")
    if not isinstance(q, str) or not isinstance(a, str) or not q.strip() or not a.strip():
        return "missing_fields"
    q, a = q.strip(), a.strip()
    if not _CJK.search(a):
        return "answer_not_chinese"
    if len(a) < min_chars:
        return "answer_too_short"
    if len(a) > max_chars:
        return "answer_too_long"
    return q, a


class _Deduper:
    """Exact and near-duplicate (question n-gram Jaccard) filter over existing + new rows."""

    def __init__(self, questions: Sequence[str], threshold: float) -> None:
        self.keys: set[str] = set()
        self.index = NearIndex(threshold)
        for q in questions:
            self.keys.add(match_key(q))
            self.index.add(shingles(q))

    def admit(self, question: str) -> str | None:
        key = match_key(question)
        if key in self.keys:
            return "duplicate"
        s = shingles(question)
        if self.index.query(s):
            return "near_duplicate"
        self.keys.add(key)
        self.index.add(s)
        return None


def _chat_url(teacher: str) -> str:
    base = teacher.rstrip("/")
    if base.endswith("/chat/completions"):
        return base
    if not base.endswith("/v1"):
        base += "/v1"
    return base + "/chat/completions"


def _read_done(out: Path, sidecar: Path) -> tuple[set[str], list[str]]:
    """Chunk ids finished earlier and the questions already written (a torn last line is dropped)."""
    done: set[str] = set()
    questions: list[str] = []
    if out.exists():
        lines = out.read_text(encoding="utf-8").splitlines(keepends=True)
        good = []
        for line in lines:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # interrupted mid-write: keep what is whole
            good.append(line)
            questions.append(row.get("question", ""))
        if len(good) != len(lines):
            out.write_text("".join(good), encoding="utf-8")
    if sidecar.exists():
        for line in sidecar.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if rec.get("status") == "ok":
                done.add(rec["chunk_id"])
    return done, questions


class _Retryable(RuntimeError):
    """A failure that waiting or sampling again may fix: a timeout, a lost connection, HTTP 429/5xx,
    a malformed reply."""


async def _ask(client: Any, url: str, model: str, messages: list[dict[str, str]], *, retries: int,
               backoff: float, max_backoff: float, temperature: float, max_tokens: int,
               headers: dict[str, str]) -> tuple[list[dict[str, Any]], int]:
    """The pairs of one chunk and the attempts it took: `_ask_once`, retried (tenacity) with
    exponential backoff (backoff, 2 x backoff, ... up to max_backoff) on a `_Retryable` failure."""
    from tenacity import AsyncRetrying, RetryError, retry_if_exception_type, stop_after_attempt, wait_exponential

    payload = {"model": model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens}
    retrying = AsyncRetrying(stop=stop_after_attempt(retries + 1), retry=retry_if_exception_type(_Retryable),
                             wait=wait_exponential(multiplier=backoff, max=max_backoff))
    try:
        async for attempt in retrying:
            with attempt:
                pairs = await _ask_once(client, url, payload, headers)
                return pairs, attempt.retry_state.attempt_number
    except RetryError as e:
        raise RuntimeError(f"gave up after {retries + 1} attempts: {e.last_attempt.exception()}") from None
    raise AssertionError("unreachable")  # tenacity either returns or raises


async def _ask_once(client: Any, url: str, payload: dict[str, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    """Every error names the URL and what was expected (an exception's own text is often empty:
    httpx's ReadTimeout, KeyError('choices'), json's "Expecting value")."""
    import httpx

    try:
        response = await client.post(url, json=payload, headers=headers)
    except httpx.TimeoutException as exc:
        raise _Retryable(f"{url} sent no reply within {client.timeout.read:g} s ({type(exc).__name__}); "
                         "a slow teacher needs a larger --timeout") from None
    except httpx.TransportError as exc:
        raise _Retryable(f"{url}: {type(exc).__name__}: {exc or 'connection failed'} (is the server up?)") from None
    if response.status_code == 429 or response.status_code >= 500:
        raise _Retryable(f"{url} answered HTTP {response.status_code}: {response.text[:120]!r}")
    if response.status_code >= 400:  # a bad request will not get better by retrying
        raise RuntimeError(f"{url} answered HTTP {response.status_code} (check --teacher, --model and "
                           f"--api-key-env): {response.text[:200]!r}")
    try:
        body = response.json()
    except ValueError:
        raise _Retryable(f"{url} answered with something that is not JSON ({_EXPECTED}); "
                         f"it starts {response.text[:120]!r}") from None
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _Retryable(f"{url} answered JSON without choices[0].message.content "
                         f"({_EXPECTED}); it starts {response.text[:160]!r}") from None
    try:  # malformed pairs: sampling again often fixes it
        return parse_pairs(content or "")
    except (ValueError, KeyError, IndexError, TypeError) as exc:  # TeacherReplyError is a ValueError
        raise _Retryable(str(exc) or type(exc).__name__) from None


async def _generate(chunks: list[Chunk], out: Path, sidecar: Path, *, teacher: str, model: str,
                    concurrency: int, pairs_per_chunk: int, min_chars: int, max_chars: int,
                    deduper: _Deduper, timeout: float, retries: int, backoff: float, max_backoff: float,
                    temperature: float, max_tokens: int, api_key: str | None, source: str,
                    on_done: Callable[[ChunkOutcome], None]) -> list[ChunkOutcome]:
    import httpx

    url = _chat_url(teacher)
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    semaphore = asyncio.Semaphore(max(1, concurrency))
    lock = asyncio.Lock()
    outcomes: list[ChunkOutcome] = []

    async def one(client: httpx.AsyncClient, chunk: Chunk) -> None:
        messages = build_messages(chunk, pairs_per_chunk, min_chars, max_chars)
        phash = prompt_hash(model, messages)
        outcome = ChunkOutcome(chunk.id, "failed")
        async with semaphore:
            try:
                pairs, outcome.attempts = await _ask(
                    client, url, model, messages, retries=retries, backoff=backoff, max_backoff=max_backoff,
                    temperature=temperature, max_tokens=max_tokens, headers=headers)
            except Exception as exc:  # reported, retried by the next run
                title = f" ({chunk.title})" if chunk.title else ""
                # an API key a server echoes back (some put the request headers in their error body)
                # must not reach the terminal or a log
                outcome.error = scrub_text(f"chunk {chunk.id}{title}: {exc or type(exc).__name__}", values=[api_key])
                outcome.attempts = retries + 1
        if outcome.error is None:
            outcome.status = "ok"
            rows = []
            async with lock:  # dedupe and write in one step so concurrent chunks cannot race
                for pair in pairs:
                    checked = validate_pair(pair, min_chars, max_chars)
                    if isinstance(checked, str):
                        outcome.rejected[checked] = outcome.rejected.get(checked, 0) + 1
                        continue
                    outcome.pairs += 1
                    q, a = checked
                    reason = deduper.admit(q)
                    if reason:
                        outcome.rejected[reason] = outcome.rejected.get(reason, 0) + 1
                        continue
                    rows.append({"question": q, "answer": a, "source": source, "chunk_id": chunk.id,
                                 "chunk_title": chunk.title, "prompt_hash": phash, "teacher_model": model})
                outcome.kept = len(rows)
                with out.open("a", encoding="utf-8") as f:
                    f.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
                with sidecar.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"chunk_id": chunk.id, "prompt_hash": phash, "status": "ok",
                                        "pairs": outcome.pairs, "kept": outcome.kept}) + "\n")
        outcomes.append(outcome)
        on_done(outcome)

    limits = httpx.Limits(max_connections=max(1, concurrency))
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits) as client:
        await asyncio.gather(*(one(client, c) for c in chunks))
    return outcomes


def generate_from_book(
    book: str | Path,
    teacher: str,
    model: str,
    out: str | Path,
    *,
    concurrency: int = 4,
    max_chunks: int | None = None,
    pairs_per_chunk: int = 5,
    min_chars: int = 40,
    max_chars: int = 400,
    dedupe_against: Sequence[str | Path] = (),
    near_threshold: float = 0.8,
    timeout: float = 120.0,
    retries: int = 4,
    backoff: float = 1.0,
    max_backoff: float = 30.0,
    temperature: float = 0.7,
    max_tokens: int = 2048,
    chunk_chars: int = 4000,
    api_key: str | None = None,
    progress: bool = True,
) -> GenerateSummary:
    """Generate QA pairs for each chunk of ``book``; append them to ``out`` (JSONL). Resumable.

    Validation keeps answers of ``min_chars``..``max_chars`` characters (the prompt asks for
    80-200; the bounds are looser so a good pair is not lost for a few characters).
    """
    from tournament.data.ingest import read_qa

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    sidecar = out.with_name(out.name + ".chunks.jsonl")
    chunks = split_book(book, max_chars=chunk_chars)
    if max_chunks is not None:
        chunks = chunks[:max_chunks]
    done, written_questions = _read_done(out, sidecar)
    existing = [r.question for path in dedupe_against for r in read_qa(path)]
    deduper = _Deduper(existing + written_questions, near_threshold)
    todo = [c for c in chunks if c.id not in done]

    outcomes: list[ChunkOutcome] = []
    kwargs = dict(teacher=teacher, model=model, concurrency=concurrency, pairs_per_chunk=pairs_per_chunk,
                  min_chars=min_chars, max_chars=max_chars, deduper=deduper, timeout=timeout, retries=retries,
                  backoff=backoff, max_backoff=max_backoff, temperature=temperature, max_tokens=max_tokens,
                  api_key=api_key, source=Path(book).name)
    if progress and todo:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        with Progress(TextColumn("[bold]teacher[/]"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rows]} rows, {task.fields[failed]} failed"),
                      TimeElapsedColumn(), transient=False) as bar:
            task = bar.add_task("chunks", total=len(todo), rows=0, failed=0)
            stats = {"rows": 0, "failed": 0}

            def on_done(o: ChunkOutcome) -> None:
                stats["rows"] += o.kept
                stats["failed"] += o.status != "ok"
                bar.update(task, advance=1, **stats)

            outcomes = asyncio.run(_generate(todo, out, sidecar, on_done=on_done, **kwargs))
    elif todo:
        outcomes = asyncio.run(_generate(todo, out, sidecar, on_done=lambda o: None, **kwargs))
    out.touch(exist_ok=True)
    order = {c.id: i for i, c in enumerate(chunks)}
    outcomes.sort(key=lambda o: order[o.chunk_id])
    return GenerateSummary(out, len(chunks), len(chunks) - len(todo), outcomes)
