"""The build-stage budget: model download time at the track's bandwidth against its limit."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------------------------
# build-time budget


@dataclass
class Budget:
    bytes: int | None
    source: str  # "--size-gb" | "local:<dir>" | "modelscope" | "unknown"
    bandwidth_mbps: float
    build_limit_s: float
    overhead_s: float
    download_s: float | None
    total_s: float | None
    verdict: str  # "ok" | "tight" | "over" | "unknown"
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def local_model_bytes(winner: Path) -> tuple[int, str] | None:
    from tournament.serving.config import load_serve_config

    try:
        cfg, base = load_serve_config({"TOURNAMENT_WINNER": str(winner)})
    except Exception:
        return None
    d = cfg.resolved_model_path(base)
    if not d.is_dir():
        return None
    total = sum(p.stat().st_size for p in d.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(d).parts))
    return (total, f"local:{d}") if total else None


def estimate_budget(
    winner: Path,
    *,
    bandwidth_mbps: float = 100.0,
    build_limit_s: float = 900.0,
    size_gb: float | None = None,
    overhead_s: float = 150.0,
    online: bool = True,
    tight_fraction: float = 0.8,
) -> Budget:
    """Download time of the winner's model at the judge's bandwidth, against the build limit.

    overhead_s covers the rest of the build (pip install of the serve extra, copying, layer
    export; the base image pull is assumed cached by the judge)."""
    nbytes: int | None = None
    source = "unknown"
    if size_gb is not None:
        nbytes, source = int(size_gb * 1e9), "--size-gb"
    else:
        loc = local_model_bytes(winner) if winner.exists() else None
        if loc:
            nbytes, source = loc
        elif online and winner.exists():
            try:
                model = (json.loads(winner.read_text(encoding="utf-8")).get("serve") or {}).get("model") or {}
                if model.get("modelscope_id"):
                    from tournament.models.hub import remote_file_sizes

                    sizes = remote_file_sizes(model["modelscope_id"], model.get("revision"))
                    nbytes, source = sum(sizes.values()), "modelscope"
            except Exception:
                pass
    if nbytes is None:
        return Budget(None, "unknown", bandwidth_mbps, build_limit_s, overhead_s, None, None, "unknown",
                      "model size unknown: no local copy at serve.model.path and ModelScope not reachable; "
                      "pass --size-gb")
    dl = nbytes * 8 / (bandwidth_mbps * 1e6)
    total = dl + overhead_s
    if total > build_limit_s:
        verdict = "over"
    elif total > tight_fraction * build_limit_s:
        verdict = "tight"
    else:
        verdict = "ok"
    msg = (f"{nbytes / 1e9:.2f} GB at {bandwidth_mbps:g} Mbit/s: ~{dl:.0f} s download + ~{overhead_s:.0f} s rest "
           f"= ~{total:.0f} s of the {build_limit_s:.0f} s build limit ({verdict})")
    if verdict != "ok":
        msg += ("; a smaller or quantized model, or dropping duplicate weight formats from the repo, "
                "is safer" if verdict == "tight" else "; the build would time out: shrink the model")
    return Budget(nbytes, source, bandwidth_mbps, build_limit_s, overhead_s, dl, total, verdict, msg)
