"""The judge's image tracks (MetaX, Paratera, Moore Threads) and what a check finds."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tournament.judge.rules import HEALTH_TIMEOUT

METAX_FROM = "cr.metax-tech.com/public-ai-release/maca/vllm:maca.ai3.1.0.7-torch2.6-py310-ubuntu22.04-amd64"
SERVE_CMD = ["uvicorn", "serve:app", "--host", "0.0.0.0", "--port", "8000"]
SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASSW|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.I)
HELD_PACKAGES = ("torch", "vllm")  # come from the base image; never installed by our Dockerfiles


@dataclass(frozen=True)
class Track:
    name: str
    dockerfile: str  # the file kept in the repo for this track
    base: str  # exact FROM (exact=True) or its required prefix
    exact_base: bool
    build_limit_s: float | None  # None: not known
    bandwidth_mbps: float | None
    health_s: float | None
    engine: str | None  # forced engine (ENV TOURNAMENT_ENGINE), None: winner.json's
    may_install_torch: bool = False
    reset_entrypoint: bool = False
    notes: str = ""
    # the image's vLLM when known exactly (its argument names are recorded in
    # tournament/serving/engines/vllm_versions.py): winner.json's engine settings are checked against it
    vllm: str | None = None


TRACKS: dict[str, Track] = {
    "metax": Track(
        "metax", "Dockerfile", METAX_FROM, True, 900, 100, HEALTH_TIMEOUT["metax"], None,
        notes="MetaX C500 64 GB; Python 3.10, torch 2.6, vLLM 0.10.0 in the image", vllm="0.10.0",
    ),
    "paratera": Track(
        "paratera", "docker/paratera.Dockerfile", "vllm/vllm-openai:", False, None, None, HEALTH_TIMEOUT["paratera"], None,
        reset_entrypoint=True, notes="RTX 5090 32 GB; vllm/vllm-openai v0.11-v0.13 seen",
    ),
    "mthreads": Track(
        "mthreads", "docker/mthreads.Dockerfile", "python:3.10", False, None, None, None, "transformers",
        may_install_torch=True, reset_entrypoint=False, notes="Moore Threads S4000; transformers on torch_musa, no vLLM",
    ),
}


@dataclass
class Finding:
    level: str  # "error" | "warning" | "info"
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"
