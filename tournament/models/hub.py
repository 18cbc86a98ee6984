"""Model hub access: fetch a model directory (ModelScope, or a local folder) and verify it.

Used at image build time by ``download_model.py`` and by people preparing a submission.
Only the standard library is imported at module level; ``modelscope`` is imported inside the
functions that need it, so this module loads in the judge image's build stage and in the
``serve`` extra without torch, transformers or modelscope.

No token is used to download: the judge's build stage has none, so a winner's model repo must be
public. A token is read (from the environment, never printed) only by :func:`upload`.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

SOURCES = ("modelscope", "local")
TOKEN_ENV = "MODELSCOPE_API_TOKEN"
MARKER = ".tournament-download.json"

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "qwen.tiktoken")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
LFS_POINTER_PREFIX = b"version https://git-lfs"
# Files in a local source folder that are not part of the model.
_SKIP_LOCAL = {".git", ".cache", "__pycache__", MARKER, "._____temp"}


class HubError(RuntimeError):
    """A download or verification failure with a message meant for a person."""

    exit_code = 3


class RepoNotFound(HubError):
    exit_code = 3


class ModelDirInvalid(HubError):
    exit_code = 4


@dataclass
class ModelDirReport:
    path: Path
    files: dict[str, int] = field(default_factory=dict)  # relative path -> bytes
    weights: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(self.files.values())


# ----------------------------------------------------------------------------------------------
# verification


def _list_files(root: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if any(part in _SKIP_LOCAL or part.startswith(".") for part in rel.parts):
            continue
        if p.is_file():
            out[rel.as_posix()] = p.stat().st_size
    return out


def _check_safetensors(path: Path) -> str | None:
    """Cheap integrity check of a .safetensors file: header parses and the data fits exactly."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if head.startswith(LFS_POINTER_PREFIX[:8]):
            return "is a Git LFS pointer, not the weights (the repo was uploaded without LFS content)"
        if len(head) < 8:
            return "is too short to be a safetensors file"
        (n,) = struct.unpack("<Q", head)
        if n <= 0 or 8 + n > size:
            return f"has a header length of {n} bytes but the file has {size}: truncated or not safetensors"
        try:
            header = json.loads(f.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "has an unreadable header: truncated or not safetensors"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and "data_offsets" in v]
    expected = 8 + n + (max(ends) if ends else 0)
    if expected != size:
        return f"should be {expected} bytes by its header but is {size}: truncated or corrupted download"
    return None


def verify_model_dir(path: str | Path, *, gguf_file: str | None = None) -> ModelDirReport:
    """Check that `path` holds a loadable model: config, tokenizer, complete weights.

    Raises :class:`ModelDirInvalid` with every problem found (not only the first)."""
    root = Path(path)
    if not root.is_dir():
        raise ModelDirInvalid(f"model directory {root} does not exist")
    files = _list_files(root)
    report = ModelDirReport(path=root, files=files)
    problems: list[str] = []

    def nonempty(name: str) -> bool:
        return files.get(name, 0) > 0

    empty = [n for n, s in files.items() if s == 0 and not n.endswith((".txt", ".md"))]
    problems += [f"{n} is empty" for n in empty if n.endswith((".json", *WEIGHT_SUFFIXES, ".model"))]

    if gguf_file:
        # transformers reads config and tokenizer out of the GGUF file itself.
        if not nonempty(gguf_file):
            problems.append(f"the GGUF file {gguf_file} named in winner.json is missing or empty")
        else:
            with (root / gguf_file).open("rb") as f:
                if f.read(4) != b"GGUF":
                    problems.append(f"{gguf_file} does not start with the GGUF magic bytes")
        report.weights = [gguf_file]
    else:
        if not nonempty("config.json"):
            problems.append("config.json is missing or empty")
        else:
            try:
                json.loads((root / "config.json").read_text(encoding="utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                problems.append(f"config.json is not valid JSON ({e})")
        tok = [n for n in TOKENIZER_FILES if nonempty(n)]
        if not tok:
            problems.append(f"no tokenizer file (one of {', '.join(TOKENIZER_FILES)})")
        if "vocab.json" in tok and "tokenizer.json" not in tok and not nonempty("merges.txt"):
            problems.append("vocab.json without merges.txt (BPE tokenizer incomplete)")

        weights = [n for n in files if "/" not in n and n.endswith(WEIGHT_SUFFIXES) and not n.endswith(".gguf")]
        weights = [n for n in weights if n != "training_args.bin" and not n.startswith("optimizer")]
        report.weights = weights
        if not weights:
            problems.append("no weight files (*.safetensors or pytorch_model*.bin) at the top level")
        for index_name in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
            if index_name not in files:
                continue
            try:
                weight_map = json.loads((root / index_name).read_text(encoding="utf-8"))["weight_map"]
                shards = sorted(set(weight_map.values()))
            except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
                problems.append(f"{index_name} is unreadable ({e})")
                continue
            missing = [s for s in shards if not nonempty(s)]
            if missing:
                problems.append(f"{index_name} names shards that are missing or empty: {', '.join(missing)}")
            suffix = ".safetensors" if index_name.startswith("model.") else ".bin"
            extra = [w for w in weights if w.endswith(suffix) and w not in shards]
            if extra:
                report.warnings.append(f"weight files not in {index_name} (ignored by loaders): {', '.join(extra)}")
        for w in weights:
            if not nonempty(w):
                continue
            if w.endswith(".safetensors"):
                err = _check_safetensors(root / w)
            else:
                with (root / w).open("rb") as f:
                    err = "is a Git LFS pointer, not the weights" if f.read(23) == LFS_POINTER_PREFIX else None
            if err:
                problems.append(f"{w} {err}")
    if problems:
        raise ModelDirInvalid(f"{root} is not a complete model directory:\n  - " + "\n  - ".join(problems))
    return report


# ----------------------------------------------------------------------------------------------
# download


def _import_snapshot_download():
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise HubError(
            "the `modelscope` package is not installed; install it with "
            "`pip install modelscope==1.29.2` (or `pip install -e .[modelscope]`), "
            "or use --source local --from DIR"
        ) from e
    return snapshot_download


def _looks_missing(exc: BaseException) -> bool:
    name = type(exc).__name__
    text = str(exc).lower()
    return name in {"NotExistError", "RepositoryNotFoundError", "NoValidRevisionError"} or any(
        s in text for s in ("404", "not exist", "not found", "notexist", "no valid revision")
    )


def _replace_dir(tmp: Path, dest: Path) -> None:
    if dest.exists():
        old = dest.with_name(f".{dest.name}.old")
        if old.exists():
            shutil.rmtree(old)
        dest.rename(old)
        tmp.rename(dest)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(dest)


def _copy_local(src: Path, dst: Path) -> None:
    if not src.is_dir():
        raise RepoNotFound(f"local source {src} is not a directory")
    for p in sorted(src.rglob("*")):
        rel = p.relative_to(src)
        if any(part in _SKIP_LOCAL for part in rel.parts):
            continue
        target = dst / rel
        if p.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, target)


def download(
    model_id: str,
    revision: str | None,
    dest: str | Path,
    *,
    source: str = "modelscope",
    local_dir: str | Path | None = None,
    gguf_file: str | None = None,
    ignore_patterns: list[str] | None = None,
    verify: bool = True,
) -> Path:
    """Fetch `model_id` at `revision` into `dest` (replacing it), verify it, return `dest`.

    source="modelscope": ``modelscope.snapshot_download`` (public repos only: no token is used).
    source="local": copy from `local_dir` (or from the folder `model_id` when `local_dir` is None);
    what tests and offline users use. Files land in a temporary sibling folder first, so a failed
    or partial download never leaves a half-filled `dest` behind."""
    if source not in SOURCES:
        raise HubError(f"unknown source {source!r}; use one of {', '.join(SOURCES)}")
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    t0 = time.time()
    try:
        if source == "local":
            _copy_local(Path(local_dir if local_dir is not None else model_id), tmp)
        else:
            if not model_id or "/" not in model_id:
                raise HubError(f"ModelScope model id {model_id!r} should look like 'owner/name'")
            snapshot_download = _import_snapshot_download()
            kwargs = {"revision": revision or "master", "local_dir": str(tmp)}
            if ignore_patterns:
                kwargs["ignore_patterns"] = ignore_patterns
            try:
                snapshot_download(model_id, **kwargs)
            except Exception as e:  # modelscope raises many types; turn them into one clear message
                if _looks_missing(e):
                    raise RepoNotFound(
                        f"ModelScope has no public model {model_id!r} at revision {revision or 'master'!r} "
                        f"({type(e).__name__}: {e}). The judge builds without a token: make the repo "
                        "public, check the id and revision in winner.json, and that the upload finished."
                    ) from e
                raise HubError(f"downloading {model_id!r} from ModelScope failed: {type(e).__name__}: {e}") from e
        # modelscope's bookkeeping inside local_dir
        shutil.rmtree(tmp / "._____temp", ignore_errors=True)
        if verify:
            verify_model_dir(tmp, gguf_file=gguf_file)
        _replace_dir(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    files = _list_files(dest)
    marker = {
        "model_id": model_id if source != "local" else str(local_dir or model_id),
        "revision": revision,
        "source": source,
        "files": len(files),
        "bytes": sum(files.values()),
        "seconds": round(time.time() - t0, 2),
    }
    (dest / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
    return dest


def read_marker(dest: str | Path) -> dict | None:
    p = Path(dest) / MARKER
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None


def remote_file_sizes(model_id: str, revision: str | None = None, *, timeout: float = 10.0) -> dict[str, int]:
    """File sizes of a public ModelScope repo (needs modelscope and the network)."""
    try:
        from modelscope.hub.api import HubApi
    except ImportError as e:
        raise HubError("the `modelscope` package is not installed") from e
    import socket

    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(timeout)
    try:
        files = HubApi().get_model_files(model_id, revision=revision or "master", recursive=True)
    except Exception as e:
        if _looks_missing(e):
            raise RepoNotFound(f"ModelScope has no public model {model_id!r} ({type(e).__name__}: {e})") from e
        raise HubError(f"could not list {model_id!r} on ModelScope: {type(e).__name__}: {e}") from e
    finally:
        socket.setdefaulttimeout(old)
    return {f["Path"]: int(f.get("Size") or 0) for f in files if f.get("Type") != "tree"}


# ----------------------------------------------------------------------------------------------
# upload (the only place a token is used; it is read from the environment and never printed)


def upload(
    folder: str | Path,
    repo_id: str,
    *,
    token_env: str = TOKEN_ENV,
    commit_message: str = "tournament: upload model",
    public: bool = True,
) -> str:
    """Upload a verified model folder to ModelScope as a (public by default) model repo."""
    folder = Path(folder)
    verify_model_dir(folder)
    token = os.environ.get(token_env)
    if not token:
        raise HubError(f"set {token_env} to a ModelScope access token to upload (it is never written to a file)")
    try:
        from modelscope.hub.api import HubApi
    except ImportError as e:
        raise HubError("the `modelscope` package is not installed") from e
    api = HubApi()
    api.login(token)
    try:
        from modelscope.hub.constants import Visibility

        visibility = Visibility.PUBLIC if public else Visibility.PRIVATE
    except ImportError:  # pragma: no cover - older modelscope
        visibility = 5 if public else 1
    try:
        api.create_repo(repo_id, token=token, visibility=visibility, exist_ok=True)
    except TypeError:  # pragma: no cover - older signature
        api.create_repo(repo_id, visibility=visibility)
    api.upload_folder(repo_id=repo_id, folder_path=str(folder), commit_message=commit_message,
                      token=token, ignore_patterns=[MARKER, ".git/*", "._____temp/*"])
    return f"https://modelscope.cn/models/{repo_id}"
