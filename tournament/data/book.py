"""Split a book (txt, markdown, docx, pdf) into chapter/section chunks for teacher generation.

Headings found: markdown ``#``..``######``, ``第N章/节``, ``Chapter N``, numbered sections
(``4.2 Memory Types``), and Word heading styles. Sections longer than ``max_chars`` are cut at
paragraph boundaries; sections shorter than ``min_chars`` are merged into the next one. Chunk ids
hold the position and a hash of the text, so a re-run on the same book yields the same ids
(which makes generation resumable).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from tournament.data.ingest import DataFormatError

_HEADING = re.compile(
    r"^(?:#{1,6}\s+\S"  # markdown
    r"|第[0-9一二三四五六七八九十百零两]+\s*[章节篇]"  # 第4章 / 第二节
    r"|(?:chapter|CHAPTER|Chapter)\s+\d+"  # Chapter 4
    r"|\d{1,2}(?:\.\d{1,2}){1,2}\s+[A-Z\u4e00-\u9fff]"  # 4.2 Memory types / 4.2.1 变量
    r")"
)
_MARK = "\x00H\x00"  # marks a heading paragraph coming from a Word heading style


@dataclass(frozen=True)
class Chunk:
    id: str
    title: str
    text: str


def read_book_text(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise DataFormatError(p, None, "book file not found")
    suffix = p.suffix.lower()
    if suffix in (".txt", ".md", ".markdown", ".rst"):
        return p.read_text(encoding="utf-8-sig", errors="replace")
    if suffix == ".docx":
        import docx

        try:
            document = docx.Document(str(p))
        except Exception as exc:
            raise DataFormatError(p, None, f"not a readable .docx file ({exc})") from exc
        lines = []
        for para in document.paragraphs:
            style = (para.style.name if para.style is not None else "").lower()
            heading = style.startswith(("heading", "title")) or style.startswith("标题")
            lines.append((_MARK if heading and para.text.strip() else "") + para.text)
        return "\n".join(lines)
    if suffix == ".pdf":
        try:
            from pypdf import PdfReader
        except ImportError as exc:
            raise DataFormatError(p, None, "reading PDF books needs pypdf (pip install 'tournament[data]')") from exc
        try:
            reader = PdfReader(str(p))
            pages = [page.extract_text() or "" for page in reader.pages]
        except Exception as exc:
            raise DataFormatError(p, None, f"not a readable PDF ({type(exc).__name__}: {exc})") from exc
        return "\n".join(pages)
    raise DataFormatError(p, None, f"unsupported book type {suffix!r}; expected .txt, .md, .docx or .pdf")


def _sections(text: str) -> list[tuple[str, list[str]]]:
    sections: list[tuple[str, list[str]]] = [("", [])]
    for raw in text.splitlines():
        line = raw.rstrip()
        if line.startswith(_MARK):
            sections.append((line[len(_MARK):].strip(), []))
        elif len(line) <= 120 and _HEADING.match(line.strip()):
            sections.append((line.strip().lstrip("#").strip(), []))
        else:
            sections[-1][1].append(line)
    return [(t, body) for t, body in sections if t or any(x.strip() for x in body)]


def _cut(lines: list[str], max_chars: int) -> list[str]:
    """Cut a long section at blank lines (paragraphs), then at lines, into pieces <= max_chars."""
    pieces: list[str] = []
    current: list[str] = []
    size = 0
    for line in lines:
        if size + len(line) + 1 > max_chars and current:
            pieces.append("\n".join(current).strip())
            current, size = [], 0
        while len(line) > max_chars:  # a single huge line (PDF text without breaks)
            pieces.append(line[:max_chars])
            line = line[max_chars:]
        current.append(line)
        size += len(line) + 1
    if current and "\n".join(current).strip():
        pieces.append("\n".join(current).strip())
    return [p for p in pieces if p]


def split_book(path: str | Path, max_chars: int = 4000, min_chars: int = 300) -> list[Chunk]:
    text = read_book_text(path)
    if not text.strip():
        raise DataFormatError(path, None, "the book has no text (a scanned PDF needs OCR first)")
    raw: list[tuple[str, str]] = []
    for title, body in _sections(text):
        pieces = _cut(body, max_chars) or [title]  # a heading alone (book title) is merged onward
        for k, piece in enumerate(pieces):
            raw.append((title if k == 0 else f"{title} ({k + 1})", piece))
    merged: list[tuple[str, str]] = []
    pending_title, pending = "", ""
    for title, piece in raw:
        if pending:
            piece = f"{pending}\n\n{title}\n{piece}" if title else f"{pending}\n\n{piece}"
            title = title or pending_title  # the section that carries the content names the chunk
            pending_title, pending = "", ""
        if len(piece) < min_chars:
            pending_title, pending = title, piece
            continue
        merged.append((title, piece))
    if pending:
        if merged and len(merged[-1][1]) + len(pending) <= max_chars + min_chars:
            t, body = merged[-1]
            merged[-1] = (t, f"{body}\n\n{pending}")
        else:
            merged.append((pending_title, pending))
    return [
        Chunk(f"c{i:04d}-{hashlib.sha256(body.encode('utf-8')).hexdigest()[:8]}", title, body)
        for i, (title, body) in enumerate(merged)
    ]
