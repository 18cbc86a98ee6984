"""What `tournament pick` says about the winner.json it wrote (study.winner builds the document)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def picked_line(doc: dict[str, Any], out: Path, study: str, trial: int, rule: str) -> str:
    """The written winner in one line: its trial and build, predicted and seen/unseen accuracy,
    speed and the rule that picked it."""
    m = doc["provenance"]["metrics"]
    return (f"wrote {out}: study {study} trial {trial} ({doc['candidate'].get('id')}, "
            f"{doc['candidate'].get('build')} build), predicted judge accuracy {m['predicted_accuracy']:.3f}"
            f"±{m['predicted_accuracy_sd'] or 0:.3f} (seen {m['seen_accuracy']:.3f}, unseen "
            f"{m['unseen_accuracy']:.3f}), {m['chars_per_s']:.0f} chars/s — {rule}")
