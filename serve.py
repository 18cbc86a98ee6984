"""What the judge runs: `uvicorn serve:app --host 0.0.0.0 --port 8000`.

Thin on purpose: everything lives in tournament/serving/. What it serves comes from winner.json
(see tournament/serving/config.py for every setting and the environment overrides)."""

import logging

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

from tournament.serving.app import app  # noqa: E402

__all__ = ["app"]
