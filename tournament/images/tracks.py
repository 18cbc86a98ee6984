"""The judge's image tracks (MetaX, Paratera, Moore Threads) and what a check finds.

The facts of each track (base image, Dockerfile, limits, engine) are the hardware registry's,
`tournament.judge.rules.HARDWARE`; a `Track` is its view for the image checks, keyed by the
image track's name (metax, paratera, mthreads)."""

from __future__ import annotations

from dataclasses import dataclass

from tournament.judge.rules import HARDWARE, HardwareTrack, hardware_track

METAX_FROM = HARDWARE["metax"].base
SERVE_CMD = ["uvicorn", "serve:app", "--host", "0.0.0.0", "--port", "8000"]
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


def _track(h: HardwareTrack) -> Track:
    return Track(
        h.image_track, h.dockerfile, h.base, h.exact_base, h.build_limit_s, h.bandwidth_mbps, h.health_timeout,
        h.forced_engine, may_install_torch=h.may_install_torch, reset_entrypoint=h.reset_entrypoint,
        notes=f"{h.hardware}; Python {h.python}, {h.notes}", vllm=h.vllm_version,
    )


TRACKS: dict[str, Track] = {h.image_track: _track(h) for h in HARDWARE.values()}


def image_track_name(name: str) -> str:
    """The image track's name for a hardware track's name or alias ("moore-threads" -> "mthreads");
    a ValueError naming the accepted names for anything else."""
    return hardware_track(name).image_track


@dataclass
class Finding:
    level: str  # "error" | "warning" | "info"
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"
