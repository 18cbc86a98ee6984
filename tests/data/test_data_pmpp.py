"""The course data shipped in data/pmpp/: checksums and the facts its README states."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from tournament.data.ingest import read_qa

DATA = Path(__file__).resolve().parents[2] / "data" / "pmpp"
README_SHA256 = {  # as written in data/pmpp/README.md
    "basic.docx": "0d8cb4c053dc4af6abedd0dbbb9e5d09439f333da048c02478f04f2392b4492d",
    "plus.docx": "759ec74b77ec598e02c83dfdc6e5b545a3b7cc6fe5d59e3b325ea6efc2bf8688",
    "data.jsonl": "b6f805de9c92f7c762c2c533138b32f9261c4a369f3f6bd2809c3c616fc5bb8b",
}


def test_sha256sums_file_matches_the_files_and_the_readme():
    listed = {}
    for line in (DATA / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split()
        listed[name] = digest
    assert listed == README_SHA256
    readme = (DATA / "README.md").read_text(encoding="utf-8")
    for name, digest in listed.items():
        assert hashlib.sha256((DATA / name).read_bytes()).hexdigest() == digest, name
        assert digest in readme


@pytest.fixture(scope="module")
def corpus():
    rows = read_qa(DATA / "data.jsonl")
    docx = read_qa(DATA / "basic.docx") + read_qa(DATA / "plus.docx")
    return rows, docx


def test_readme_row_counts(corpus):
    rows, docx = corpus
    assert len(rows) == 7370 and len(docx) == 192


def test_every_docx_question_appears_verbatim_in_data_jsonl_about_26_times(corpus):
    rows, docx = corpus
    hits = {d.question: sum(d.question in r.question for r in rows) for d in docx}
    assert all(n >= 1 for n in hits.values()), [q for q, n in hits.items() if n == 0]
    mean = sum(hits.values()) / len(hits)
    assert 24 <= mean <= 30, mean


def test_the_first_4992_rows_are_26_templated_copies_of_each_docx_question(corpus):
    # The README says "rows 0-4992" and "the other 2377 rows": measured, rows 0-4991 (192 x 26)
    # hold the templated copies and row 4992 is already a book row, so the book part has 2378.
    rows, docx = corpus
    questions = [d.question for d in docx]
    assert all(any(q in r.question for q in questions) for r in rows[:4992])
    assert 192 * 26 == 4992
    assert not any(q in rows[4992].question for q in questions)
