"""Reading what an image is built from: a small Dockerfile parser, the plan it makes (workdir,
copies, env), Docker's `.dockerignore` matching, and pip requirement files."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

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


def env_pairs(ins: Instruction) -> dict[str, str]:
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
            p.env.update(env_pairs(ins))
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


def abs_path(path: str, workdir: str) -> str:
    return str(PurePosixPath(path if path.startswith("/") else str(PurePosixPath(workdir) / path)))


def image_path_of(plan: ImagePlan, repo_file: str) -> str | None:
    """Where a repo file ends up in the image (last COPY wins), or None if never copied."""
    found = None
    for _, srcs, dest, wd in plan.copies:
        for s in srcs:
            s_clean = s.rstrip("/")
            if s_clean in {".", ""}:
                found = abs_path(str(PurePosixPath(dest) / repo_file), wd)
            elif repo_file == s_clean:
                d = abs_path(dest, wd)
                found = str(PurePosixPath(d) / PurePosixPath(repo_file).name) if dest.endswith("/") or len(srcs) > 1 else d
            elif repo_file.startswith(s_clean + "/"):
                found = abs_path(str(PurePosixPath(dest) / repo_file[len(s_clean) + 1 :]), wd)
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


REQ_NAME = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(.*)$")


def norm_name(name: str) -> str:
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
        m = REQ_NAME.match(line)
        if m:
            out.append((path.name, norm_name(m.group(1)), m.group(3).split(";")[0].strip()))
    return out


def is_pinned(spec: str) -> bool:
    return "==" in spec or "<" in spec
