"""The judge's sets, hardware tracks and limits, defined once.

- Question sets: **basic** (292 questions) and **bonus** (358; "plus" in the course's files and a
  data build's rows). Their registry, `QUESTION_SETS`, and the set-name helpers live in
  `tournament.data.sets` (data builds label rows with them) and are re-exported here.
- Hardware tracks (`HARDWARE`): where a submission runs (MetaX, Paratera, Moore Threads), with
  its health limit and what its judge image is built from (`tournament.images.tracks` reads them).
- Limits: the judge polls ``GET /`` for up to the hardware track's health limit, then all
  ``POST /predict`` calls together get the predict limit (360 s). The course pass mark is 0.35
  judge accuracy.
"""

from __future__ import annotations

from dataclasses import dataclass

from tournament.data.sets import (
    DATA_SET_LABEL,
    JUDGE_SETS,
    QUESTION_SETS,
    JudgeSet,
    QuestionSet,
    judge_set,
    row_in_set,
    set_from_name,
)

__all__ = [
    "DATA_SET_LABEL", "HARDWARE", "HEALTH_TIMEOUT", "JUDGE_SETS", "PASS_MARK", "PREDICT_TIMEOUT", "QUESTIONS",
    "QUESTION_SETS", "HardwareTrack", "JudgeLimits", "JudgeSet", "QuestionSet", "hardware_track", "judge_set",
    "limits", "row_in_set", "set_from_name",
]

QUESTIONS = {s.name: s.questions for s in QUESTION_SETS.values()}
PREDICT_TIMEOUT = 360.0
PASS_MARK = 0.35


@dataclass(frozen=True)
class HardwareTrack:
    name: str  # the sweep file's judge.hardware
    aliases: tuple[str, ...]  # other names accepted for it
    hardware: str
    health_timeout: float  # seconds GET / may take
    health_published: bool  # False: not published; health_timeout is a cautious default
    vllm: bool  # vLLM is available there (else the image serves with transformers)
    python: str
    # -- its judge image (tournament/images/ checks the Dockerfile against these) --
    image_track: str  # `tournament images check --track` name
    dockerfile: str  # the file kept in the repo for this track
    base: str  # exact FROM (exact_base) or its required prefix
    exact_base: bool
    build_limit_s: float | None = None  # None: not known
    bandwidth_mbps: float | None = None
    may_install_torch: bool = False  # the base image has no torch: the image installs it
    reset_entrypoint: bool = False  # the base image's ENTRYPOINT must be reset
    notes: str = ""
    # the image's vLLM when known exactly (its engine arguments: serving/engines/vllm_versions.py)
    vllm_version: str | None = None

    @property
    def forced_engine(self) -> str | None:
        """The engine its image must force (ENV TOURNAMENT_ENGINE); None: winner.json's."""
        return None if self.vllm else "transformers"


HARDWARE: dict[str, HardwareTrack] = {
    "metax": HardwareTrack(
        "metax", (), "MetaX C500 64 GB", 180.0, True, True, "3.10",
        "metax", "Dockerfile",
        "cr.metax-tech.com/public-ai-release/maca/vllm:maca.ai3.1.0.7-torch2.6-py310-ubuntu22.04-amd64", True,
        build_limit_s=900, bandwidth_mbps=100, vllm_version="0.10.0",
        notes="torch 2.6, vLLM 0.10.0 in the image",
    ),
    "paratera": HardwareTrack(
        "paratera", (), "RTX 5090 32 GB", 420.0, True, True, "3.12",
        "paratera", "docker/paratera.Dockerfile", "vllm/vllm-openai:", False,
        reset_entrypoint=True, notes="vllm/vllm-openai v0.11-v0.13 seen",
    ),
}
# The course publishes no health limit for Moore Threads: the strictest published one (MetaX's
# 180 s) stands in for it, so a sweep for that track never accepts a start the judge could refuse.
HARDWARE["moore-threads"] = HardwareTrack(
    "moore-threads", ("mthreads",), "Moore Threads S4000",
    min(h.health_timeout for h in HARDWARE.values() if h.health_published), False, False, "3.10",
    "mthreads", "docker/mthreads.Dockerfile", "python:3.10", False,
    may_install_torch=True, notes="transformers on torch_musa, no vLLM",
)
HEALTH_TIMEOUT = {h.name: h.health_timeout for h in HARDWARE.values()}
_BY_NAME = {n: h for h in HARDWARE.values() for n in (h.name, h.image_track, *h.aliases)}


def hardware_track(name: str) -> HardwareTrack:
    """The hardware track called `name` (its name, an alias, or its image track's name); anything
    else is a ValueError naming the accepted names."""
    key = str(name).strip().lower()
    if key not in _BY_NAME:
        known = ", ".join(h.name + (f" ({', '.join(h.aliases)})" if h.aliases else "") for h in HARDWARE.values())
        raise ValueError(f"unknown hardware track {name!r}: use one of {known}")
    return _BY_NAME[key]


@dataclass(frozen=True)
class JudgeLimits:
    questions: int
    health_timeout: float
    predict_timeout: float
    pass_mark: float


def limits(judged: str = "basic", hardware: str = "metax") -> JudgeLimits:
    """The limits a submission meets on one judge set and hardware track."""
    judged_set = judge_set(judged, "basic")
    return JudgeLimits(QUESTIONS[judged_set], hardware_track(hardware).health_timeout, PREDICT_TIMEOUT, PASS_MARK)
