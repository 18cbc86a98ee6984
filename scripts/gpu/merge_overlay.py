"""Merge the GPU proof's overlays over a sweep file (what sweep.sh runs instead of it).

    SWEEP_OVERLAY=FILE_OR_JSON [SWEEP_OVERLAY_EXTRA=JSON] python3 scripts/gpu/merge_overlay.py BASE OUT

Dicts are merged, lists and values replaced (`tournament.serving.config.deep_merge`): first
SWEEP_OVERLAY (a JSON object, or a JSON file such as scripts/gpu/overlays/speed-proof.json), then
SWEEP_OVERLAY_EXTRA (a JSON object, e.g. '{"judge": {"set": "bonus"}}').
"""

from __future__ import annotations

import json
import os
import sys

import yaml

from tournament.serving.config import deep_merge


def _json(text: str) -> dict:
    return json.loads(text if text.lstrip().startswith("{") else open(text, encoding="utf-8").read())


def main(base: str, out: str) -> None:
    doc = yaml.safe_load(open(base, encoding="utf-8"))
    for name in ("SWEEP_OVERLAY", "SWEEP_OVERLAY_EXTRA"):
        if os.environ.get(name):
            doc = deep_merge(doc, _json(os.environ[name]))
    with open(out, "w", encoding="utf-8") as f:
        f.write(yaml.safe_dump(doc, allow_unicode=True, sort_keys=False))


if __name__ == "__main__":
    main(*sys.argv[1:3])
