"""Do the images agree with winner.json, download_model.py and serve.py's config resolution?"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath

from tournament.images.dockerfile import (
    REQ_NAME,
    abs_path,
    image_path_of,
    in_build_context,
    norm_name,
    plan_dockerfile,
    read_dockerignore,
    requirement_lines,
)
from tournament.images.tracks import Finding, Track
from tournament.paths import REPO_ROOT

# ----------------------------------------------------------------------------------------------
# agreement with winner.json, download_model.py and serve.py


def load_download_model(repo_root: Path):
    import importlib.util

    spec = importlib.util.spec_from_file_location("_tournament_download_model", repo_root / "download_model.py")
    mod = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(mod)
    return mod


def serve_extra(repo_root: Path) -> list[str]:
    try:
        import tomllib  # type: ignore[import-not-found]
    except ModuleNotFoundError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ModuleNotFoundError:
            return []
    doc = tomllib.loads((repo_root / "pyproject.toml").read_text(encoding="utf-8"))
    reqs = doc.get("project", {}).get("optional-dependencies", {}).get("serve", [])
    return [norm_name(REQ_NAME.match(r).group(1)) for r in reqs if REQ_NAME.match(r)]


def check_agreement(
    dockerfile: Path, track: Track | None, winner: Path, repo_root: Path = REPO_ROOT, *, with_winner: bool = True
) -> list[Finding]:
    """The Dockerfile, download_model.py and serve.py all agree on winner.json and the model path."""
    where = str(dockerfile.relative_to(repo_root)) if dockerfile.is_relative_to(repo_root) else str(dockerfile)
    f: list[Finding] = []
    plan = plan_dockerfile(dockerfile.read_text(encoding="utf-8"))
    wd = plan.workdir
    ignore = read_dockerignore(repo_root)

    # every COPY source exists and is in the build context
    for line, srcs, _dest, _ in plan.copies:
        for s in srcs:
            s_clean = s.rstrip("/")
            if not (repo_root / s_clean).exists() and s_clean != "winner.json":
                f.append(Finding("error", where, f"line {line}: COPY {s}: no such file in the repo"))
            if not in_build_context(repo_root, s_clean, ignore):
                f.append(Finding("error", where, f"line {line}: COPY {s}: excluded by .dockerignore"))
    for bulky in ("mlruns", "models", "data/build", "builds", "checkpoints", "tests", ".git", "venv", ".venv"):
        if in_build_context(repo_root, f"{bulky}/x", ignore):
            f.append(Finding("error", ".dockerignore", f"{bulky}/ would be sent to the build (add it to .dockerignore)"))

    img_winner = image_path_of(plan, "winner.json")
    img_serve = image_path_of(plan, "serve.py")
    img_dl = image_path_of(plan, "download_model.py")
    img_pkg = image_path_of(plan, "tournament/serving/config.py")
    for name, got in (("winner.json", img_winner), ("serve.py", img_serve), ("download_model.py", img_dl),
                      ("tournament/", img_pkg)):
        if got is None:
            f.append(Finding("error", where, f"{name} is never copied into the image"))
    if img_serve and str(PurePosixPath(img_serve).parent) != wd:
        f.append(Finding("error", where, f"serve.py is at {img_serve} but the final WORKDIR is {wd}: `uvicorn serve:app` will not find it"))
    pkg_root = str(PurePosixPath(img_pkg).parents[2]) if img_pkg else None
    if pkg_root and pkg_root != wd:
        f.append(Finding("error", where, f"the package is under {pkg_root}, not the WORKDIR {wd}"))
    # which winner.json serve.py reads: $TOURNAMENT_WINNER, else beside the package (REPO_ROOT)
    serve_reads = plan.env.get("TOURNAMENT_WINNER") or (f"{pkg_root}/winner.json" if pkg_root else None)
    if img_winner and serve_reads and abs_path(serve_reads, wd) != img_winner:
        f.append(Finding("error", where, f"serve.py reads {serve_reads} but winner.json is copied to {img_winner}"))
    for var in ("TOURNAMENT_MODEL_PATH", "TOURNAMENT_SERVE_CONFIG", "TOURNAMENT_WINNER_OVERRIDE"):
        if var in plan.env and var != "TOURNAMENT_WINNER":
            f.append(Finding("error", where, f"ENV {var} makes serve.py look somewhere else than winner.json says"))
    if track is not None and track.engine and plan.env.get("TOURNAMENT_ENGINE") != track.engine:
        f.append(Finding("error", where, f"the {track.name} track needs ENV TOURNAMENT_ENGINE={track.engine}"))

    # the download step: after the copies it needs, before CMD, reading the same winner.json
    dl_runs = [(ln, cmd, rwd, env) for ln, cmd, rwd, env in plan.runs if "download_model.py" in cmd]
    if not dl_runs:
        f.append(Finding("error", where, "no RUN ... download_model.py step: the model would not be in the image"))
    else:
        ln, cmd, rwd, env = dl_runs[-1]
        copy_lines = {name: max((cl for cl, srcs, _, _ in plan.copies if any(s.rstrip('/') in {name, '.'} for s in srcs)), default=10**9)
                      for name in ("winner.json", "download_model.py", "tournament")}
        for name, cl in copy_lines.items():
            if cl > ln:
                f.append(Finding("error", where, f"line {ln}: download_model.py runs before {name} is copied"))
        words = shlex.split(cmd)
        i = next((k for k, w in enumerate(words) if w.endswith("download_model.py")), None)
        rest = [w for w in words[i + 1 :] if not w.startswith("-")] if i is not None else []
        dl_reads = rest[0] if rest else (env.get("TOURNAMENT_WINNER") or "winner.json")
        if img_winner and abs_path(dl_reads, rwd) != img_winner:
            f.append(Finding("error", where, f"line {ln}: download_model.py reads {dl_reads}, winner.json is at {img_winner}"))
        if rwd != wd:
            f.append(Finding("warning", where, f"download_model.py runs in {rwd}, the server in {wd}"))

    # winner.json itself, and what download_model.py and serve.py make of it
    if with_winner:
        f += check_winner(winner, repo_root)
    if winner.exists() and img_winner:
        try:
            doc = json.loads(winner.read_text(encoding="utf-8"))
            rel = (doc.get("serve") or {}).get("model", {}).get("path", "models/winner")
            in_image = abs_path(rel, str(PurePosixPath(img_winner).parent))
            if any(in_image == abs_path(d, w) or in_image.startswith(abs_path(d, w).rstrip("/") + "/")
                   for _, _, d, w in plan.copies if d not in {".", "./", wd, wd + "/"}):
                f.append(Finding("warning", where, f"the model path {in_image} is also a COPY destination"))
        except (json.JSONDecodeError, AttributeError):
            pass

    # the engine settings against the image's vLLM (MetaX: 0.10.0)
    if track is not None and winner.exists():
        f += check_vllm_settings(winner, track, where, plan.env.get("TOURNAMENT_ENGINE"))

    # requirements cover the serve extra
    req_files = [s for _, srcs, _, _ in plan.copies for s in srcs if s.endswith(".txt")]
    names = {n for rf in req_files for _, n, _ in requirement_lines(repo_root / rf)}
    missing = [n for n in serve_extra(repo_root) if n not in names]
    if not req_files:
        f.append(Finding("error", where, "no requirements file is copied: the serve extra and modelscope are never installed"))
    if req_files and missing:
        f.append(Finding("error", where, f"the image's requirements miss the serve extra's {', '.join(missing)}"))
    if req_files and "modelscope" not in names:
        f.append(Finding("error", where, "modelscope is not installed before download_model.py runs"))
    return f


def check_winner(winner: Path, repo_root: Path = REPO_ROOT) -> list[Finding]:
    """winner.json has what the build needs, and download_model.py and serve.py agree on it."""
    w = str(winner)
    if not winner.exists():
        return [Finding("error", w, "missing: run `tournament pick` and commit winner.json (the Dockerfile copies it)")]
    out: list[Finding] = []
    try:
        doc = json.loads(winner.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        return [Finding("error", w, f"not valid JSON: {e}")]
    model = (doc.get("serve") or {}).get("model") or {}
    if not model.get("modelscope_id"):
        out.append(Finding("error", w, "serve.model.modelscope_id is empty: the build has nothing to download "
                           "(`tournament models upload DIR OWNER/NAME`, then `tournament pick` again)"))
    elif not re.fullmatch(r"[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+", model["modelscope_id"]):
        out.append(Finding("error", w, f"serve.model.modelscope_id {model['modelscope_id']!r} is not OWNER/NAME"))
    if not model.get("revision"):
        out.append(Finding("warning", w, "serve.model.revision is empty: the build takes whatever `master` is then"))
    try:
        dm = load_download_model(repo_root)
        dl = dm.plan(winner, env={})
    except Exception as e:  # ConfigProblem and friends carry a message for people
        out.append(Finding("error", w, f"download_model.py rejects it: {e}"))
        return out
    from tournament.serving.config import load_serve_config

    cfg, base = load_serve_config({"TOURNAMENT_WINNER": str(winner)})
    serve_dir = cfg.resolved_model_path(base)
    if Path(dl["dest"]).resolve() != serve_dir.resolve():
        out.append(Finding("error", w, f"download_model.py writes {dl['dest']} but serve.py loads {serve_dir}"))
    if dl["model_id"] != cfg.model.modelscope_id or dl["revision"] != cfg.model.revision:
        out.append(Finding("error", w, "download_model.py and serve.py read different model ids/revisions"))
    return out


def check_vllm_settings(winner: Path, track: Track, where: str, forced_engine: str | None = None) -> list[Finding]:
    """winner.json's engine settings against the track's vLLM (when its argument names are known):
    a setting that vLLM lacks stops serve.py at start-up there (error); one it takes and then
    overrides serves, but not as measured (warning)."""
    from tournament.serving.config import WinnerFileError, load_serve_config
    from tournament.serving.engines.vllm_engine import vllm_llm_kwargs
    from tournament.serving.engines.vllm_versions import KNOWN

    facts = KNOWN.get(track.vllm or "")
    if facts is None:
        return []
    try:
        cfg, _ = load_serve_config({"TOURNAMENT_WINNER": str(winner)})
    except WinnerFileError:
        return []  # check_winner reports it
    if (forced_engine or cfg.engine.engine) != "vllm":
        return []
    try:
        kwargs = vllm_llm_kwargs(cfg.engine, "model", None, facts.engine_args, facts.compilation_config, facts.version)
    except ValueError as e:
        return [Finding("error", where, f"winner.json serve.{e} (the {track.name} image runs vLLM {facts.version}: "
                                        "serve.py would stop at start-up)")]
    return [Finding("warning", where, f"winner.json serve.engine.{name}={json.dumps(value)}: {why}")
            for (name, value), why in facts.overridden.items() if name in kwargs and kwargs[name] == value]
