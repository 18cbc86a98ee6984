"""The vLLM engine behind the real serve.py, judged in batch mode. Runs only where vLLM and a CUDA
GPU exist (the GPU proof in BENCHMARKS.md ran the same path with gemma-3-270m on an H200)."""

import importlib.util

import pytest

from tournament.judge.emulator import judge
from tournament.serving.process import ServerProcess


def _vllm_and_gpu() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


pytestmark = [pytest.mark.vllm, pytest.mark.gpu,
              pytest.mark.skipif(not _vllm_and_gpu(), reason="needs vLLM and a CUDA GPU")]


def test_vllm_engine_answers_the_judge_in_batch_mode(tmp_path):
    from tournament.models.tiny import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny", hidden_size=128)  # head_dim 32: every attention backend
    config = {"model": {"path": str(model)}, "mode": "batch",
              "engine": {"engine": "vllm", "gpu_memory_utilization": 0.2, "max_model_len": 512, "enforce_eager": True},
              "decode": {"max_tokens": 8}}
    questions = ["什么是 warp？", "什么是 warp？", "解释 memory coalescing", "x" * 3000]  # the last one is cut to fit
    with ServerProcess(config, log_path=tmp_path / "server.log") as server:
        server.wait_healthy(600)
        report = judge(server.url, questions, ["warp 32"] * 4, health_timeout=30, predict_timeout=120, poll=0.2)
    assert report.mode == "batch" and not report.failed
    assert len(report.answers) == 4 and all(report.answers)
    assert report.answers[0] == report.answers[1]
