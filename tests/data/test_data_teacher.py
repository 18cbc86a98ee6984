"""Teacher generation end to end against a real OpenAI-compatible HTTP server on loopback.

The server (stdlib ``http.server`` in a thread) answers ``POST .../v1/chat/completions`` in one
of several behaviours chosen by the URL prefix: good JSON, malformed replies, slow replies.
"""

from __future__ import annotations

import json
import re
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import docx
import pytest
import typer
from typer.testing import CliRunner

from tournament.data import cli as data_cli
from tournament.data.book import split_book
from tournament.data.ingest import read_qa
from tournament.data.teacher import generate_from_book, parse_pairs

BOOK = """# Programming Massively Parallel Processors

## Chapter 4 Memory and data locality
CUDA devices have several memory types. Global memory is large and slow; shared memory is on-chip and
shared by the threads of a block. Tiling loads a tile of the input into shared memory so that every
element is reused TILE_WIDTH times, which raises the compute to global memory access ratio.
""" + ("The barrier __syncthreads() makes sure a tile is complete before it is used. " * 6) + """

## Chapter 5 Performance considerations
Threads of a warp execute the same instruction (SIMD). When the threads of a warp access consecutive
addresses the hardware coalesces the accesses into few DRAM transactions. Control divergence happens
when threads of one warp take different paths of a branch; the paths are executed one after another.
""" + ("Occupancy depends on registers per thread and shared memory per block. " * 6) + """

## Chapter 6 Numerical considerations
IEEE-754 floating point numbers have a sign, an exponent and a mantissa. Rounding errors accumulate
in reductions; sorting inputs or using Kahan summation reduces the error. Denormal numbers fill the
gap around zero and special bit patterns encode infinity and NaN.
""" + ("Numerical stability matters for linear solvers such as Gaussian elimination. " * 6)


class Teacher:
    """State shared with the handler: counts per behaviour, and what was asked."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.first_seen: dict[str, int] = {}
        self.prompts: list[str] = []
        self.lock = threading.Lock()


def _reply(title: str, n: int) -> str:
    term = re.sub(r"[^A-Za-z ]", "", title).strip() or "GPU"
    asks = ["里的tiling如何减少global memory访问？", "中warp是怎样执行指令的？", "为什么要关注occupancy和寄存器用量？"]
    pairs = [
        {"question": f"{term}{asks[k - 1]}",
         "answer": f"{term}的第{k}个要点：教材说明 shared memory 与 warp 的关系，线程块内数据复用可以减少 global memory 访问，"
                   f"从而提高 compute to memory ratio，这一点在第{k}个例子中被反复强调。"}
        for k in range(1, n + 1)
    ]
    pairs.append({"question": "过短的答案？", "answer": "太短"})  # must be rejected by validation
    return json.dumps({"pairs": pairs}, ensure_ascii=False)


def make_handler(state: Teacher):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def do_POST(self):
            mode = self.path.strip("/").split("/")[0]
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            user = body["messages"][-1]["content"]
            title = re.search(r"教材片段（(.*?)）", user).group(1)
            with state.lock:
                state.calls[mode] = state.calls.get(mode, 0) + 1
                state.prompts.append(user)
                key = f"{mode}:{title}"
                seen = state.first_seen.get(key, 0)
                state.first_seen[key] = seen + 1
            if mode == "slow" or (mode == "slowfirst" and seen == 0):
                time.sleep(3.0)  # the client gives up after 1 s
            if mode == "garbage" or (mode == "garbagefirst" and seen == 0):
                raw = b"this is not JSON {"  # a body that is not JSON at all
            elif mode == "badcontent":
                raw = json.dumps({"choices": [{"message": {"content": "好的，以下是问答：[{question: 缺引号"}}]}).encode()
            elif mode == "nochoices":
                raw = json.dumps({"error": {"message": "model m is not loaded"}}).encode()
            elif mode == "echokey":  # a server that puts the request headers in its error body
                self.send_response(401)
                self.end_headers()
                self.wfile.write(f"bad key: Authorization={self.headers['Authorization']}".encode())
                return
            elif mode == "error500" and seen == 0:
                self.send_response(500)
                self.end_headers()
                self.wfile.write(b"overloaded")
                return
            else:
                content = "<think>先想一想</think>```json\n" + _reply(title, 3) + "\n```"
                raw = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]},
                                 ensure_ascii=False).encode()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)
            except (BrokenPipeError, ConnectionResetError):  # the client timed out and left
                pass

    return Handler


@contextmanager
def teacher_server():
    state = Teacher()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", state
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def book(tmp_path) -> Path:
    path = tmp_path / "pmpp.md"
    path.write_text(BOOK, encoding="utf-8")
    return path


# 1 s: loopback replies take milliseconds, but a loaded 2-core CI machine once took over 0.4 s to connect
FAST = dict(timeout=1.0, backoff=0.01, max_backoff=0.05, progress=False)


def test_book_is_split_into_chapter_chunks(book):
    chunks = split_book(book, max_chars=4000, min_chars=100)
    assert [c.title for c in chunks] == ["Chapter 4 Memory and data locality", "Chapter 5 Performance considerations",
                                         "Chapter 6 Numerical considerations"]
    assert "Programming Massively" in chunks[0].text  # the short title section is merged, not lost
    assert split_book(book, max_chars=4000, min_chars=100) == chunks  # stable ids
    small = split_book(book, max_chars=300, min_chars=50)
    assert len(small) > 3 and all(len(c.text) <= 300 + 50 + 100 for c in small)


def test_docx_and_pdf_books(tmp_path):
    document = docx.Document()
    for title, body in (("第4章 内存", "共享内存在片上。" * 40), ("第5章 性能", "warp 内线程执行同一指令。" * 40)):
        document.add_heading(title, level=1)
        document.add_paragraph(body)
    document.save(str(tmp_path / "book.docx"))
    assert [c.title for c in split_book(tmp_path / "book.docx", min_chars=50)] == ["第4章 内存", "第5章 性能"]
    pdf = tmp_path / "book.pdf"
    pdf.write_bytes(_tiny_pdf(["Chapter 4 Memory", "Shared memory is on chip. " * 3]))
    chunks = split_book(pdf, min_chars=10)
    assert chunks and "Shared memory is on chip" in chunks[-1].text


def _tiny_pdf(lines: list[str]) -> bytes:
    """A one-page PDF with text lines (Helvetica), built by hand so the test needs no PDF writer."""
    ops = "BT /F1 10 Tf 40 780 Td 12 TL " + " ".join(f"({line}) Tj T*" for line in lines) + " ET"
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
        f"<< /Length {len(ops)} >>\nstream\n{ops}\nendstream",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = b"%PDF-1.4\n"
    offsets = []
    for i, obj in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{i} 0 obj\n{obj}\nendobj\n".encode("latin-1")
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_end_to_end_with_provenance_dedupe_and_resume(book, tmp_path):
    existing = tmp_path / "existing.jsonl"
    existing.write_text(json.dumps({"question": "Chapter  Memory and data locality里的tiling如何减少global memory访问？", "answer": "x"},
                                   ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "gen" / "teacher.jsonl"
    with teacher_server() as (url, state):
        summary = generate_from_book(book, f"{url}/good/v1", "big-teacher", out, concurrency=2,
                                     dedupe_against=[existing], min_chars=40, max_chars=400, **FAST)
        assert state.calls == {"good": 3}
        rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
        assert summary.rows_written == len(rows) == 3 * 3 - 1  # one duplicate of existing.jsonl dropped
        d = summary.to_dict()
        assert d["rejected"] == {"answer_too_short": 3, "duplicate": 1} and d["chunks_failed"] == []
        chunk_ids = {c.id for c in split_book(book)}
        for row in rows:
            assert row["chunk_id"] in chunk_ids and re.fullmatch(r"[0-9a-f]{16}", row["prompt_hash"])
            assert row["teacher_model"] == "big-teacher" and row["source"] == "pmpp.md"
            assert 40 <= len(row["answer"]) <= 400
        assert "shared memory" in state.prompts[0] or "Shared" in "".join(state.prompts)
        assert len(read_qa(out)) == len(rows)  # the output is a normal QA file

        again = generate_from_book(book, f"{url}/good", "big-teacher", out, **FAST)
        assert again.chunks_skipped == 3 and again.outcomes == [] and state.calls == {"good": 3}
    assert out.read_text(encoding="utf-8").count("\n") == len(rows)


def test_malformed_replies_are_retried_then_reported(book, tmp_path):
    out = tmp_path / "t.jsonl"
    with teacher_server() as (url, state):
        ok = generate_from_book(book, f"{url}/garbagefirst", "m", out, retries=2, **FAST)
        assert ok.failed == [] and ok.rows_written == 9
        assert state.calls["garbagefirst"] == 6 and all(o.attempts == 2 for o in ok.outcomes)

        bad_out = tmp_path / "bad.jsonl"
        bad = generate_from_book(book, f"{url}/badcontent", "m", bad_out, retries=1, max_chunks=2, **FAST)
        assert len(bad.failed) == 2 and bad.rows_written == 0
        assert "no JSON list of QA pairs" in bad.failed[0].error and state.calls["badcontent"] == 4
        assert bad_out.read_text() == ""
        # the failed chunks are not marked done: a later run with a working teacher does them
        fixed = generate_from_book(book, f"{url}/good", "m", bad_out, max_chunks=2, **FAST)
        assert fixed.chunks_skipped == 0 and fixed.rows_written == 6

        served = generate_from_book(book, f"{url}/error500", "m", tmp_path / "e.jsonl", **FAST)
        assert served.failed == [] and state.calls["error500"] == 6


def test_timeouts_are_retried_then_reported(book, tmp_path):
    with teacher_server() as (url, state):
        ok = generate_from_book(book, f"{url}/slowfirst", "m", tmp_path / "a.jsonl", retries=1, max_chunks=1, **FAST)
        assert ok.failed == [] and ok.rows_written == 3 and ok.outcomes[0].attempts == 2
        start = time.monotonic()
        bad = generate_from_book(book, f"{url}/slow", "m", tmp_path / "b.jsonl", retries=1, max_chunks=2,
                                 concurrency=2, **FAST)
        assert len(bad.failed) == 2 and "Timeout" in bad.failed[0].error
        assert time.monotonic() - start < 3.5  # two chunks in parallel, each 2 x 1 s (one after the other: over 4 s)


def test_cli_generate(book, tmp_path):
    app = typer.Typer()
    app.add_typer(data_cli.app, name="data")

    @app.callback()
    def main() -> None:
        pass

    out = tmp_path / "cli.jsonl"
    with teacher_server() as (url, state):
        result = CliRunner().invoke(app, ["data", "generate", "--book", str(book), "--teacher", url, "--model", "m",
                                          "--out", str(out), "--max-chunks", "2", "--concurrency", "2", "--json"])
        assert result.exit_code == 0, result.output
        assert json.loads(result.output)["rows_written"] == 6
        failed = CliRunner().invoke(app, ["data", "generate", "--book", str(book), "--teacher", f"{url}/badcontent",
                                          "--model", "m", "--out", str(tmp_path / "f.jsonl"), "--max-chunks", "1",
                                          "--retries", "0", "--json"])
        assert failed.exit_code == 3 and json.loads(failed.output)["chunks_failed"]


def test_parse_pairs_variants():
    assert parse_pairs('[{"question": "q", "answer": "a"}]') == [{"question": "q", "answer": "a"}]
    assert parse_pairs('好的：\n```json\n{"qa": [{"question": "q", "answer": "a"}]}\n```') == [{"question": "q", "answer": "a"}]
    assert parse_pairs('<think>{"x": 1}</think>{"question": "q", "answer": "a"}') == [{"question": "q", "answer": "a"}]
    with pytest.raises(ValueError):
        parse_pairs("没有 JSON")


def test_errors_name_the_url_the_chunk_and_what_was_expected(book, tmp_path):
    chunk = split_book(book)[0]
    with teacher_server() as (url, state):
        for mode, expect in (("slow", "sent no reply within 1 s (ReadTimeout)"),
                             ("garbage", "not JSON (expected an OpenAI chat completion"),
                             ("nochoices", "without choices[0].message.content")):
            s = generate_from_book(book, f"{url}/{mode}", "m", tmp_path / f"{mode}.jsonl", retries=0, max_chunks=1,
                                   **FAST)
            err = s.failed[0].error
            assert expect in err, err
            assert f"{url}/{mode}/v1/chat/completions" in err and f"chunk {chunk.id} ({chunk.title})" in err
        assert "model m is not loaded" in err  # the body says why


def test_an_echoed_api_key_is_masked(book, tmp_path):
    key = "sk-test-" + "x" * 24
    with teacher_server() as (url, state):
        s = generate_from_book(book, f"{url}/echokey", "m", tmp_path / "k.jsonl", retries=3, max_chunks=1,
                               api_key=key, **FAST)
    err = s.failed[0].error
    assert "HTTP 401" in err and "--api-key-env" in err and "Bearer ***" in err
    assert key not in err and "x" * 24 not in err
    assert state.calls["echokey"] == 1  # a 4xx is not retried
