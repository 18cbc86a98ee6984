"""ModelScope both ways, for candidates and the `tournament models download|upload` commands.

The network work itself lives in `tournament.models.hub` (shared with `download_model.py`); this
module adds what training needs around it: a cached download keyed by id + revision, and an upload
that refuses early and clearly without a token. The token is read from `MODELSCOPE_API_TOKEN`
only, never taken as an argument, never printed, logged or written anywhere.
"""

from __future__ import annotations

import os
from pathlib import Path

from tournament.models.hub import TOKEN_ENV


class PublishError(RuntimeError):
    pass


def default_dest(model_id: str, revision: str | None = None, models_dir: Path = Path("models")) -> Path:
    return Path(models_dir) / f"{model_id.replace('/', '__')}@{revision or 'master'}"


def download_model(model_id: str, revision: str | None = None, dest: str | Path | None = None) -> Path:
    """Fetch a public ModelScope model into `dest` (reused when already there at that revision)."""
    from tournament.models import hub

    if not model_id or "/" not in model_id:
        raise PublishError(f"ModelScope model id {model_id!r} should look like 'owner/name'")
    dest = Path(dest) if dest else default_dest(model_id, revision)
    marker = hub.read_marker(dest)
    if marker and marker.get("model_id") == model_id and marker.get("revision") == revision:
        try:
            hub.verify_model_dir(dest)
            return dest
        except hub.HubError:
            pass
    return hub.download(model_id, revision, dest)


def upload_model(folder: str | Path, repo_id: str, *, public: bool = True,
                 commit_message: str = "tournament: upload model") -> str:
    """Upload an HF model directory (config, tokenizer, safetensors) to a ModelScope repo."""
    folder = Path(folder)
    if not repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise PublishError(f"repo {repo_id!r} should look like 'owner/name'")
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a directory")
    if not os.environ.get(TOKEN_ENV):
        raise PublishError(f"refusing to upload: set {TOKEN_ENV} in the environment to a ModelScope access "
                           "token (it is read from there only and never written anywhere)")
    from tournament.models import hub

    hub.verify_model_dir(folder)  # before any network: a half-written folder never goes up
    return hub.upload(folder, repo_id, token_env=TOKEN_ENV, commit_message=commit_message, public=public)
