"""Read question-answer pairs from every format a user of the course has.

Formats (chosen by extension, then by the keys of each row):
- ``.docx`` / ``.txt`` / ``.md``: paragraphs ``问题：...`` then ``答案：...``; an answer continues over
  the following paragraphs (code lines) until the next ``问题：`` or a section heading
  (``第2章 ...``, ``一、容易题（67道...）``), which never becomes part of an answer.
- ``.jsonl`` (and ``.json`` holding a list): chat rows ``{"messages": [...]}``, Alpaca rows
  ``{"instruction", "input", "output"}``, plain ``{"question", "answer"}`` rows.
- ``.csv``: ``question``/``answer`` columns (also ``问题``/``答案``, ``instruction``/``output``).

Text is kept exactly as written (training and scoring need the original); :mod:`normalize`
helpers give keys for matching only. A file that cannot be read raises :class:`DataFormatError`
naming the file, the line or paragraph, and what was expected.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from tournament.data.normalize import match_key, normalize_text  # noqa: F401  (re-exported)

__all__ = [
    "DataFormatError",
    "QARow",
    "read_qa",
    "read_answers",
    "read_questions",
    "normalize_text",
    "match_key",
    "SUPPORTED_SUFFIXES",
]

SUPPORTED_SUFFIXES = (".docx", ".txt", ".md", ".jsonl", ".json", ".csv")


class DataFormatError(ValueError):
    """A data file is not in a supported shape. The message names file, place and expectation."""

    def __init__(self, path: str | Path, where: str | None, message: str) -> None:
        self.path = str(path)
        self.where = where
        self.reason = message
        place = f"{self.path}, {where}" if where else self.path
        super().__init__(f"{place}: {message}")


@dataclass(frozen=True)
class QARow:
    """One question-answer pair and where it came from.

    ``line`` is the 1-based line (JSONL), record (JSON list / CSV data row) or paragraph (docx)
    number where the question starts; ``kind`` says which reader produced it.
    """

    question: str
    answer: str
    source: str = ""
    line: int | None = None
    kind: str = ""
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def to_dict(self) -> dict[str, Any]:
        return {"question": self.question, "answer": self.answer, "source": self.source}


# --------------------------------------------------------------------------------------------
# docx / txt: 问题：/答案： paragraphs

# Optional numbering ("1. ", "12、") before the marker; ASCII or full-width colon.
_Q_MARK = re.compile(r"^\s*(?:\d{1,4}\s*[.、)）]\s*)?问题\s*\d{0,4}\s*[:：]\s*")
_A_MARK = re.compile(r"^\s*答案\s*[:：]\s*")
# "问题：... 答案：..." inside one paragraph.
_A_INLINE = re.compile(r"\s*答案\s*[:：]\s*")
_CN_NUM = "0-9一二三四五六七八九十百零两〇"
_HEADING_PATTERNS = (
    re.compile(rf"^第[{_CN_NUM}]+\s*[章节篇部分讲单元]"),  # 第2章 数据并行计算
    re.compile(r"^[一二三四五六七八九十]+\s*[、.．]\s*\S"),  # 一、容易题（67道，...）
    re.compile(r"^(chapter|section|part)\s+\d+", re.IGNORECASE),
)
_SENTENCE_END = re.compile(r"[。！？!?；;]\s*$")


def _is_heading(text: str, style_name: str = "") -> bool:
    """Section headings end an answer; they are short titles, not sentences or code."""
    style = style_name.lower()
    if style.startswith(("heading", "title")) or style.startswith("标题"):
        return bool(text.strip())
    t = text.strip()
    if not t or len(t) > 60 or _SENTENCE_END.search(t):
        return False
    return any(p.match(t) for p in _HEADING_PATTERNS)


def _docx_paragraphs(path: Path) -> list[tuple[str, str]]:
    try:
        import docx  # python-docx
    except ImportError as exc:  # pragma: no cover - it is a core dependency
        raise DataFormatError(path, None, "reading .docx needs python-docx (pip install python-docx)") from exc
    try:
        document = docx.Document(str(path))
    except Exception as exc:  # a zip that is not a Word document, a truncated file, ...
        raise DataFormatError(path, None, f"not a readable .docx file ({type(exc).__name__}: {exc})") from exc
    return [(p.text, p.style.name if p.style is not None else "") for p in document.paragraphs]


def _text_paragraphs(path: Path) -> list[tuple[str, str]]:
    return [(line, "") for line in _read_text(path).splitlines()]


def parse_qa_paragraphs(paragraphs: list[tuple[str, str]], path: str | Path, unit: str = "paragraph",
                        kind: str = "docx") -> list[QARow]:
    """Turn (text, style) paragraphs into rows. Public so tests and txt/markdown share it."""
    name = Path(path).name
    rows: list[QARow] = []
    q_lines: list[str] | None = None  # question being read (may span paragraphs until 答案：)
    a_lines: list[str] | None = None  # answer being read (continues until 问题： or a heading)
    q_at = 0

    def flush(end_at: int) -> None:
        nonlocal q_lines, a_lines
        if q_lines is None:
            return
        question = "\n".join(q_lines).strip()
        if a_lines is None:
            raise DataFormatError(path, f"{unit} {q_at}",
                                  f"question {question[:40]!r} has no '答案：' paragraph before {unit} {end_at}")
        while a_lines and not a_lines[-1].strip():
            a_lines.pop()
        answer = "\n".join(a_lines).strip()
        if not question:
            raise DataFormatError(path, f"{unit} {q_at}", "empty question after '问题：'")
        if not answer:
            raise DataFormatError(path, f"{unit} {q_at}", f"empty answer for question {question[:40]!r}")
        rows.append(QARow(question, answer, name, q_at, kind))
        q_lines = a_lines = None

    for index, (raw, style) in enumerate(paragraphs, start=1):
        text = raw.rstrip()
        q_match = _Q_MARK.match(text)
        if q_match:
            flush(index)
            q_at = index
            rest = text[q_match.end():]
            inline = _A_INLINE.search(rest)
            if inline:  # question and answer in one paragraph
                q_lines, a_lines = [rest[: inline.start()]], [rest[inline.end():]]
            else:
                q_lines, a_lines = [rest], None
            continue
        a_match = _A_MARK.match(text)
        if a_match:
            if q_lines is None:
                raise DataFormatError(path, f"{unit} {index}", "'答案：' without a preceding '问题：'")
            if a_lines is not None:
                raise DataFormatError(path, f"{unit} {index}", f"second '答案：' for the question at {unit} {q_at}")
            a_lines = [text[a_match.end():]]
            continue
        if _is_heading(text, style):
            flush(index)  # headings close the current pair and are never part of it
            continue
        if a_lines is not None:
            a_lines.append(text)
        elif q_lines is not None:
            if text.strip():
                q_lines.append(text.strip())
        # text before the first question (titles, notes) is not data
    flush(len(paragraphs) + 1)
    if not rows:
        raise DataFormatError(path, None, "no '问题：' / '答案：' pairs found")
    return rows


# --------------------------------------------------------------------------------------------
# JSON / JSONL / CSV

_Q_KEYS = ("question", "prompt", "query", "问题")
_A_KEYS = ("answer", "response", "output", "答案")


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise DataFormatError(path, f"line {line}", "not UTF-8 text") from exc


def _iter_json_records(path: Path) -> Iterator[tuple[int, Any, str]]:
    """Yield (number, record, unit) for a JSONL file or a JSON file holding a list."""
    text = _read_text(path)
    stripped = text.lstrip()
    if path.suffix.lower() == ".json" or stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None  # maybe JSON lines under a .json name: fall through
        if data is not None:
            if isinstance(data, dict):
                for key in ("data", "rows", "items", "examples"):
                    if isinstance(data.get(key), list):
                        data = data[key]
                        break
            if not isinstance(data, list):
                raise DataFormatError(path, None, "expected a JSON list of objects (or JSON lines)")
            for n, record in enumerate(data, start=1):
                yield n, record, "record"
            return
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield n, json.loads(line), "line"
        except json.JSONDecodeError as exc:
            raise DataFormatError(path, f"line {n}", f"invalid JSON ({exc.msg} at column {exc.colno})") from exc


def _first_str(record: dict[str, Any], keys: tuple[str, ...]) -> str | None:
    for key in keys:
        value = record.get(key)
        if isinstance(value, str):
            return value
    return None


def _chat_pairs(messages: Any, path: Path, where: str) -> list[tuple[str, str]]:
    if not isinstance(messages, list):
        raise DataFormatError(path, where, "'messages' must be a list of {role, content} objects")
    pairs: list[tuple[str, str]] = []
    pending: str | None = None
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("content"), str):
            raise DataFormatError(path, where, "each message needs a string 'content' and a 'role'")
        role = m.get("role")
        if role in ("user", "human"):
            pending = m["content"]
        elif role in ("assistant", "gpt", "bot") and pending is not None:
            pairs.append((pending, m["content"]))
            pending = None
    if not pairs:
        raise DataFormatError(path, where, "'messages' has no user message followed by an assistant message")
    return pairs


def _record_rows(record: Any, path: Path, n: int, unit: str) -> list[QARow]:
    where = f"{unit} {n}"
    name = path.name
    if not isinstance(record, dict):
        raise DataFormatError(path, where, f"expected a JSON object, got {type(record).__name__}")
    if "messages" in record or "conversations" in record:
        msgs = record.get("messages", record.get("conversations"))
        if isinstance(msgs, list) and msgs and isinstance(msgs[0], dict) and "from" in msgs[0]:
            # ShareGPT spelling: {"from": "human", "value": ...}
            msgs = [{"role": m.get("from"), "content": m.get("value")} for m in msgs if isinstance(m, dict)]
        return [QARow(q, a, name, n, "chat") for q, a in _chat_pairs(msgs, path, where)]
    if "instruction" in record:
        instruction, extra, output = record.get("instruction"), record.get("input", ""), record.get("output")
        if not isinstance(instruction, str) or not isinstance(output, str) or not isinstance(extra, (str, type(None))):
            raise DataFormatError(path, where, "Alpaca rows need string 'instruction', 'output' (and optional 'input')")
        question = instruction if not extra else f"{instruction}\n{extra}"
        return [QARow(question, output, name, n, "alpaca")]
    question, answer = _first_str(record, _Q_KEYS), _first_str(record, _A_KEYS)
    if question is None or answer is None:
        raise DataFormatError(
            path, where,
            "expected {'question','answer'}, {'messages':[...]} or {'instruction','input','output'}; "
            f"got keys {sorted(record)[:8]}",
        )
    meta = {k: v for k, v in record.items() if k not in ("question", "answer")}
    return [QARow(question, answer, name, n, "qa", meta)]


def _read_json_rows(path: Path) -> list[QARow]:
    rows: list[QARow] = []
    for n, record, unit in _iter_json_records(path):
        rows.extend(_record_rows(record, path, n, unit))
    if not rows:
        raise DataFormatError(path, None, "no rows found")
    return rows


def _read_csv_rows(path: Path) -> list[QARow]:
    text = _read_text(path)
    reader = csv.DictReader(io.StringIO(text, newline=""))  # keeps newlines inside quoted cells
    fields = {f.strip().lower(): f for f in (reader.fieldnames or [])}
    q_col = next((fields[k] for k in ("question", "问题", "instruction", "prompt") if k in fields), None)
    a_col = next((fields[k] for k in ("answer", "答案", "output", "response") if k in fields), None)
    if q_col is None or a_col is None:
        raise DataFormatError(path, "line 1", f"expected 'question' and 'answer' columns, got {reader.fieldnames}")
    rows = []
    for n, record in enumerate(reader, start=1):
        q, a = record.get(q_col), record.get(a_col)
        if q is None or a is None:
            raise DataFormatError(path, f"row {n}", "missing question or answer cell")
        rows.append(QARow(q, a, path.name, n, "csv"))
    if not rows:
        raise DataFormatError(path, None, "no rows found")
    return rows


# --------------------------------------------------------------------------------------------
# public API


def read_qa(path: str | Path) -> list[QARow]:
    """Read every question-answer pair of ``path`` (format from the extension and row keys)."""
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(p, None, "file not found")
    suffix = p.suffix.lower()
    if suffix == ".docx":
        rows = parse_qa_paragraphs(_docx_paragraphs(p), p, "paragraph", "docx")
    elif suffix in (".txt", ".md", ".markdown"):
        rows = parse_qa_paragraphs(_text_paragraphs(p), p, "line", "text")
    elif suffix in (".jsonl", ".json", ".ndjson"):
        rows = _read_json_rows(p)
    elif suffix == ".csv":
        rows = _read_csv_rows(p)
    else:
        raise DataFormatError(p, None, f"unsupported file type {suffix!r}; expected one of {', '.join(SUPPORTED_SUFFIXES)}")
    for row in rows:
        if not row.question.strip():
            raise DataFormatError(p, f"{'paragraph' if row.kind == 'docx' else 'line'} {row.line}", "empty question")
    return rows


def load_qa_rows(
    path: str | Path,
    *,
    set_name: str | None = None,
    offset: int = 0,
    limit: int | None = None,
    repeat_to: int | None = None,
) -> list[QARow]:
    """The one loader of question/answer files for the judge emulator, the sweep and training.

    Any format :func:`read_qa` reads. ``set_name`` (basic | bonus, "plus" accepted) keeps the rows
    of one judge set: a data build's rows carry ``"set"``, other files are labelled by their name
    (``basic.docx``, ``plus.docx``). Then ``offset``/``limit`` slice, and ``repeat_to`` cycles the
    rows up to a judge-sized count. A set that leaves no row is a ValueError."""
    from tournament.data.sets import row_in_set, set_from_name

    p = Path(path)
    rows = read_qa(p)
    if set_name:
        rows = [r for r in rows if row_in_set((r.meta or {}).get("set") or set_from_name(r.source or p), set_name)]
        if not rows:
            raise ValueError(f"{p}: no rows of set {set_name!r} (a data build's eval.jsonl has basic/plus)")
    rows = rows[offset:]
    if limit:
        rows = rows[:limit]
    if repeat_to and rows:
        rows = [rows[i % len(rows)] for i in range(repeat_to)]
    return rows


def load_questions(path: str | Path, limit: int | None = None, repeat_to: int | None = None,
                   set_name: str | None = None) -> tuple[list[str], list[str]]:
    """(questions, references) of :func:`load_qa_rows`."""
    rows = load_qa_rows(path, set_name=set_name, limit=limit, repeat_to=repeat_to)
    return [r.question for r in rows], [r.answer for r in rows]


def read_questions(path: str | Path) -> list[str]:
    """The questions of a QA file, in order (for the judge emulator)."""
    p = Path(path)
    if p.suffix.lower() in (".jsonl", ".json"):
        out: list[str] = []
        for n, record, unit in _iter_json_records(p):
            if isinstance(record, str):
                out.append(record)
            elif isinstance(record, dict) and _first_str(record, _Q_KEYS) is not None and _first_str(record, _A_KEYS) is None:
                out.append(_first_str(record, _Q_KEYS) or "")
            else:
                out.extend(r.question for r in _record_rows(record, p, n, unit))
        return out
    return [r.question for r in read_qa(p)]


def read_answers(path: str | Path) -> list[str]:
    """Answers of a prediction file, in order.

    JSONL/JSON rows with ``answer`` or ``response`` (a question is optional), a JSON list of
    strings, chat rows (the assistant turn), or any file :func:`read_qa` reads (docx, CSV).
    ``null`` answers count as ``""`` (what the judge records for a missing answer).
    """
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(p, None, "file not found")
    if p.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        return [r.answer for r in read_qa(p)]
    answers: list[str] = []
    for n, record, unit in _iter_json_records(p):
        if isinstance(record, str):
            answers.append(record)
            continue
        if not isinstance(record, dict):
            raise DataFormatError(p, f"{unit} {n}", f"expected an object with 'answer' or 'response', got {type(record).__name__}")
        for key in ("answer", "response", "output", "prediction"):
            if key in record:
                value = record[key]
                if value is None:
                    value = ""
                if not isinstance(value, str):
                    raise DataFormatError(p, f"{unit} {n}", f"'{key}' must be a string, got {type(value).__name__}")
                answers.append(value)
                break
        else:
            if "messages" in record:
                answers.extend(a for _, a in _chat_pairs(record["messages"], p, f"{unit} {n}"))
            else:
                raise DataFormatError(p, f"{unit} {n}", f"expected an 'answer' or 'response' key, got keys {sorted(record)[:8]}")
    return answers
