"""Shared fixtures (generic: any test may use them).

- ``tiny_model_dir``: a tiny random Llama + real tokenizer, built once per session with
  `tournament.models.tiny.build_tiny_model` (about a second, no network).
- ``tiny_qa_file``: a small question/answer JSONL next to it (eval questions for sweeps/judges).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tournament.models.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "model")


TINY_QA = [
    ("什么是 warp？", "warp 是 32 个线程组成的调度单位。"),
    ("CUDA kernel 如何计算全局索引？", "i = blockIdx.x * blockDim.x + threadIdx.x"),
    ("什么是 memory coalescing？", "相邻线程访问连续地址时合并为一次 DRAM transaction。"),
    ("shared memory tiling 的作用？", "把 tile 载入 shared memory，TILE_WIDTH=16 时减少 global memory 访问。"),
    ("什么是数据并行？", "数据并行是把计算围绕数据组织，多个线程同时处理不同数据元素。"),
    ("SM 是什么？", "SM 是 streaming multiprocessor。"),
]


def spread_weights(model_dir: Path, seed: int) -> Path:
    """Redraw a tiny model's weights wider (normal, sd 0.5): at its init scale a tiny model says
    the same token whatever its seed, and a test that tells builds apart by their answers needs
    them to differ."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    model.save_pretrained(str(model_dir))
    return model_dir


def write_training_sets(folder: Path, repeats: int) -> tuple[Path, Path]:
    """(honest, refit) training files in `folder`: the honest one without the eval questions (the
    first four of TINY_QA), each question `repeats` times as variants; the refit every row."""
    honest = folder / "honest.jsonl"
    honest.write_text("".join(json.dumps({"question": f"{q} ({i})", "answer": a}, ensure_ascii=False) + "\n"
                              for i in range(repeats) for q, a in TINY_QA[4:]), encoding="utf-8")
    every = folder / "refit.jsonl"
    every.write_text("".join(json.dumps({"question": q, "answer": a}, ensure_ascii=False) + "\n"
                             for _ in range(repeats) for q, a in TINY_QA), encoding="utf-8")
    return honest, every


@pytest.fixture(scope="session")
def tiny_qa_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("tiny-qa") / "eval.jsonl"
    p.write_text("".join(json.dumps({"question": q, "answer": a, "set": "basic"}, ensure_ascii=False) + "\n"
                         for q, a in TINY_QA), encoding="utf-8")
    return p


@pytest.fixture(scope="session")
def _mlflow_db_template(tmp_path_factory) -> Path:
    """An empty MLflow sqlite store, created once (its schema migration takes ~10 s on 2 cores)."""
    from mlflow.tracking import MlflowClient

    d = tmp_path_factory.mktemp("mlflow-template")
    MlflowClient(tracking_uri=f"sqlite:///{d / 'mlflow.db'}").search_experiments()
    return d / "mlflow.db"


@pytest.fixture
def runs_dir(tmp_path, _mlflow_db_template) -> Path:
    """A fresh tournament runs folder (optuna/mlflow stores) with a pre-migrated MLflow database."""
    import shutil

    d = tmp_path / "mlruns"
    d.mkdir()
    shutil.copy(_mlflow_db_template, d / "mlflow.db")
    return d
