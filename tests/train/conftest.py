"""The training tests' dataset: 20 rows (the first 5 tiny QA pairs x 4 variants); the step counts
the tests assert are for it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import TINY_QA


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("ds") / "train.jsonl"
    rows = [{"question": f"{q} ({i})", "answer": a} for i in range(4) for q, a in TINY_QA[:5]]
    p.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return p
