#!/usr/bin/env python3
"""Helpers for scripts/gpu/kit.sh: the lock file, the kit-wide version check, the wheel folders and
the kit's README.txt. kit.sh does the downloading and building; this file only reads and writes
lists, so that the rules live in one readable place (and the CPU test can import them).

kit.lock: one line per file, ``name==version SHA256 [KIND]``; ``#`` starts a comment.
  (no KIND)   a wheel for cp312 manylinux x86_64, shipped in DEST/whl/wNN
  sdist       no wheel on the index (jieba, rouge-score): the hash is the sdist's; kit.sh builds the
              pure-python wheel here (a built wheel's hash is not reproducible, the sdist's is)
  check-only  the GPU machine already has it (numpy and protobuf come with its torch): downloaded
              only so that the check here sees what the machine has; never shipped, since a second
              copy early on PYTHONPATH would shadow the one torch was built against
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

KINDS = ("wheel", "sdist", "check-only")
LOCK_HEADER = """\
# tournament's own wheels for the offline GPU machine (cp312, manylinux x86_64), hash-pinned.
# Checked by every `scripts/gpu/kit.sh DEST`; rewritten by `scripts/gpu/kit.sh --relock DEST`
# (resolves pyproject.toml's core + serve/sweep/data needs afresh; see scripts/gpu/kit_lock.py).
# name==version sha256 [sdist|check-only]
#   sdist: built into a wheel here; check-only: the GPU machine has it, used only by the check here
"""
HEX64 = re.compile(r"^[0-9a-f]{64}$")

# The extras of pyproject.toml that a GPU run uses (plus the core dependencies).
EXTRAS = ("serve", "sweep", "data", "liger")  # liger: Liger kernels for training on the GPU (recipe.liger: auto)
# Same `mlflow` module without the server, UI and pandas: everything tournament calls is in it.
SUBSTITUTE = {"mlflow": "mlflow-skinny"}
# vLLM's own run-time needs that the shared vLLM kit leaves out: its quantization registry imports
# compressed_tensors (pinned by vLLM 0.26.0) whenever `quantization` is set, fp8 on the fly too;
# seen on the H200 2026-11-30: every fp8 trial failed with "No module named 'compressed_tensors'".
VLLM_NEEDS = ("compressed-tensors==0.17.0", "loguru")
# Extras' packages not shipped, and why.
LEAVE_OUT = {"psycopg2-binary": "PostgreSQL workers only; the GPU machine keeps Optuna and MLflow in sqlite files"}
# What the GPU machine has already (with its torch 2.11.0+cu130): never shipped; pinned to the
# machine's series so that the check here runs against the same major versions.
MACHINE = {
    "numpy": "numpy>=2.5,<2.6",
    "protobuf": "protobuf>=7,<8",
    "torch": None, "transformers": None, "peft": None, "accelerate": None, "safetensors": None,
    "tokenizers": None, "huggingface-hub": None, "triton": None,
    # torch needs filelock and vLLM needs psutil, so the machine has both: a second copy in the
    # kit would shadow theirs
    "filelock": None, "psutil": None,
}


def canon(name: str) -> str:
    """PEP 503 name: `PyYAML` / `typing_extensions` -> `pyyaml` / `typing-extensions`."""
    return re.sub(r"[-_.]+", "-", name).lower()


def file_name_version(filename: str) -> tuple[str, str]:
    """(canonical name, version) of a wheel or sdist file name."""
    if filename.endswith(".whl"):
        name, version = filename[:-4].split("-")[:2]
    else:
        stem = re.sub(r"\.(tar\.gz|tar\.bz2|zip)$", "", filename)
        name, version = stem.rsplit("-", 1)
    return canon(name), version


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Entry:
    name: str  # canonical
    version: str
    sha256: str | None
    kind: str = "wheel"

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


def parse_lock(text: str, require_hash: bool = True) -> list[Entry]:
    """Lines of kit.lock (or, with require_hash=False, the unhashed pins a relock starts from)."""
    entries: list[Entry] = []
    seen: dict[str, int] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([A-Za-z0-9.!+_-]+)", tokens[0])
        if not m:
            raise ValueError(f"line {n}: expected name==version, got {tokens[0]!r}")
        rest = tokens[1:]
        digest = rest.pop(0) if rest and HEX64.match(rest[0]) else None
        kind = rest.pop(0) if rest else "wheel"
        if rest or kind not in KINDS:
            raise ValueError(f"line {n}: expected `name==version SHA256 [sdist|check-only]`: {raw!r}")
        if require_hash and digest is None:
            raise ValueError(f"line {n}: {tokens[0]} has no sha256")
        name = canon(m.group(1))
        if name in seen:
            raise ValueError(f"line {n}: {name} is already pinned on line {seen[name]} (one version per package)")
        seen[name] = n
        entries.append(Entry(name, m.group(2), digest, kind))
    return entries


def read_sums(path: Path) -> dict[str, tuple[str, str, str]]:
    """SHA256SUMS of the vLLM kit -> {name: (version, sha256, file)} for its wheels."""
    out = {}
    for line in path.read_text().splitlines():
        digest, _, fname = line.strip().partition("  ")
        fname = fname.lstrip("./")
        if fname.endswith(".whl"):
            name, version = file_name_version(fname)
            out[name] = (version, digest, fname)
    return out


# -- relock ---------------------------------------------------------------------------------------
def cmd_requirements(a) -> None:
    """pyproject's core + EXTRAS -> the top-level requirements and constraints of a relock."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    project = tomllib.loads(Path(a.pyproject).read_text())["project"]
    reqs = list(project["dependencies"])
    for extra in EXTRAS:
        reqs += project["optional-dependencies"][extra]
    reqs += list(VLLM_NEEDS)
    lines, seen = [], set()
    for r in reqs:
        name = canon(re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", r).group(0))
        if name in LEAVE_OUT:
            print(f"relock: leaving out {name}: {LEAVE_OUT[name]}", file=sys.stderr)
            continue
        if name in SUBSTITUTE:
            r = SUBSTITUTE[name] + r[len(name):]
            name = SUBSTITUTE[name]
        if r not in seen:
            seen.add(r)
            lines.append(r)
    Path(a.req).write_text("\n".join(lines) + "\n")
    Path(a.constraints).write_text("".join(c + "\n" for c in MACHINE.values() if c))


def cmd_pins(a) -> None:
    """pip's resolve report -> unhashed lock lines. Where the vLLM kit ships a package too, the
    kit's version wins (one version per package; `--no-deps` installs stop on two)."""
    report = json.loads(Path(a.report).read_text())
    kit = read_sums(Path(a.kit_sums))
    out = []
    for item in report["install"]:
        name, version = canon(item["metadata"]["name"]), item["metadata"]["version"]
        url = item["download_info"]["url"]
        kind = "wheel" if url.endswith(".whl") else "sdist"
        if name in MACHINE:
            kind = "check-only"
        elif name in kit and kit[name][0] != version:
            print(f"relock: {name} {version} -> {kit[name][0]}, the vLLM kit's version", file=sys.stderr)
            version = kit[name][0]
        out.append(f"{name}=={version}" + ("" if kind == "wheel" else f" {kind}"))
    print("\n".join(sorted(out)))


def cmd_pip_reqs(a) -> None:
    """Lock (or unhashed pins) -> pip requirement files: wheels (+ check-only) and sdists."""
    entries = parse_lock(Path(a.lock).read_text(), require_hash=not a.unhashed)
    for path, kinds in ((a.wheels, ("wheel", "check-only")), (a.sdists, ("sdist",))):
        lines = [e.pin + (f" --hash=sha256:{e.sha256}" if e.sha256 else "") for e in entries if e.kind in kinds]
        Path(path).write_text("".join(line + "\n" for line in lines))


def cmd_write_lock(a) -> None:
    """Unhashed pins + the files downloaded for them -> kit.lock."""
    pins = parse_lock(Path(a.pins).read_text(), require_hash=False)
    files = {file_name_version(p.name): p for p in Path(a.dir).iterdir()}
    lines = LOCK_HEADER.splitlines()
    for e in pins:
        path = files.get((e.name, e.version))
        if path is None:
            sys.exit(f"write-lock: nothing downloaded for {e.pin}")
        lines.append(f"{e.pin} {sha256(path)}" + ("" if e.kind == "wheel" else f" {e.kind}"))
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}: {len(pins)} files")


# -- checks ---------------------------------------------------------------------------------------
def cmd_verify(a) -> None:
    """Each lock line has exactly one downloaded file, with its sha256; nothing else was downloaded."""
    entries = {e.name: e for e in parse_lock(Path(a.lock).read_text())}
    errors, found = [], set()
    for p in sorted(Path(a.dir).iterdir()):
        name, version = file_name_version(p.name)
        e = entries.get(name)
        if e is None or e.version != version:
            errors.append(f"{p.name}: not in the lock" + (f" (the lock has {e.pin})" if e else ""))
        elif (digest := sha256(p)) != e.sha256:
            errors.append(f"{p.name}: sha256 {digest} but the lock says {e.sha256}")
        elif name in found:
            errors.append(f"{p.name}: a second file for {e.pin}")
        found.add(name)
    errors += [f"{e.pin}: not downloaded" for n, e in entries.items() if n not in found]
    if errors:
        sys.exit("kit.lock check FAILED:\n  " + "\n  ".join(errors))
    print(f"kit.lock: all {len(entries)} files match their sha256")
    if a.sort_into:  # DIR/wheel, DIR/sdist, DIR/check-only
        for p in sorted(Path(a.dir).iterdir()):
            d = Path(a.sort_into) / entries[file_name_version(p.name)[0]].kind
            d.mkdir(parents=True, exist_ok=True)
            shutil.move(str(p), d / p.name)


def cmd_one_version(a) -> None:
    """One wheel per package across the whole kit: the project's wheels, the vLLM kit, the gemma
    wheel. A package in two of them must be the very same file (same sha256)."""
    seen: dict[str, tuple[str, str, str]] = {}  # name -> (version, sha256, where)
    errors = []

    def add(name: str, version: str, digest: str, where: str) -> None:
        if name in seen:
            v0, d0, w0 = seen[name]
            if (v0, d0) != (version, digest):
                errors.append(f"{name}: {v0} in {w0} but {version} in {where}"
                              + (" (same version, different file)" if v0 == version else ""))
            elif w0 == where:
                errors.append(f"{name}: twice in {where}")
        else:
            seen[name] = (version, digest, where)

    for d in a.dirs:
        for p in sorted(Path(d).glob("*.whl")):
            add(*file_name_version(p.name), sha256(p), d)
    for name, (version, digest, _) in read_sums(Path(a.kit_sums)).items():
        add(name, version, digest, "the vLLM kit")
    if errors:
        sys.exit("one version per package FAILED:\n  " + "\n  ".join(errors))
    print(f"one version per package: {len(seen)} packages across the kit")


# -- folders and README ---------------------------------------------------------------------------
def cmd_pack(a) -> None:
    """Spread the wheels over DEST/w00, w01, ... of at most MB MiB each (largest first, first fit)."""
    limit = a.mb * 1024 * 1024
    wheels = sorted(Path(a.src).glob("*.whl"), key=lambda p: (-p.stat().st_size, p.name))
    sized = [(w, w.stat().st_size) for w in wheels]
    for w, s in sized:
        if s > limit:
            sys.exit(f"pack: {w.name} alone is {s / 2**20:.1f} MiB > {a.mb} MiB")
    size = dict(sized)
    for i, files in enumerate(first_fit(sized, limit)):
        d = Path(a.dest) / f"w{i:02d}"
        d.mkdir(parents=True)
        for w in files:
            shutil.move(str(w), d / w.name)
        print(f"{d}: {len(files)} wheels, {sum(size[w] for w in files) / 2**20:.1f} MiB")


def first_fit(items, limit: int) -> list[list]:
    """(item, size) pairs, in order -> bins of at most `limit` bytes: each item goes into the first
    bin with room for it (an item larger than `limit` gets a bin of its own)."""
    bins: list[list] = []
    used: list[int] = []
    for item, size in items:
        for i, u in enumerate(used):
            if u + size <= limit:
                bins[i].append(item)
                used[i] += size
                break
        else:
            bins.append([item])
            used.append(size)
    return bins


def folder_bytes(d: Path) -> int:
    return sum(p.stat().st_size for p in d.rglob("*") if p.is_file())


def upload_calls(folders: list[tuple[str, int]], limit: int) -> list[list[str]]:
    """Folders (in upload order) -> calls of at most `limit` bytes each: a folder goes into the
    first call with room for it, so small ones ride along with an earlier call."""
    return first_fit(folders, limit)


def cmd_readme(a) -> None:
    """DEST/README.txt (every folder, file and version) and the upload table, printed."""
    dest = Path(a.dest)
    rel = lambda p: f"{a.prefix.rstrip('/')}/{p.relative_to(dest)}"  # noqa: E731
    wfolders = sorted(dest.glob("whl/w[0-9][0-9]"))
    gwhl = dest / "gemma" / "whl"
    gparts = sorted(dest.glob("gemma/p[0-9][0-9]"))
    vparts = sorted(dest.glob("vllm/c[0-9][0-9]"))
    kit = read_sums(Path(a.kit_sums))
    lock = {e.name: e for e in parse_lock(Path(a.lock).read_text())}
    mib = lambda n: f"{n / 2**20:.1f} MiB"  # noqa: E731

    lines = ["tournament's offline GPU kit, written by scripts/gpu/kit.sh (see scripts/gpu/README.md).", ""]
    for d in wfolders + [gwhl]:
        lines.append(f"{rel(d)}  ({mib(folder_bytes(d))})")
        for p in sorted(d.glob("*.whl")):
            name, version = file_name_version(p.name)
            how = " (built here from its sdist)" if lock.get(name) and lock[name].kind == "sdist" else ""
            lines.append(f"  {name:28s} {version:16s} {mib(p.stat().st_size):>10s}  {p.name}{how}")
    lines.append("")
    for d in gparts:
        lines.append(f"{rel(d)}  ({mib(folder_bytes(d))})  " + " ".join(p.name for p in sorted(d.iterdir())))
    lines.append("  re-joined in order: gemma-3-270m Q4_K_M GGUF (sha256 checked by scripts/gpu/run.sh prepare)")
    lines.append("")
    for d in vparts:
        lines.append(f"{rel(d)}  ({mib(folder_bytes(d))})  " + " ".join(p.name for p in sorted(d.iterdir())))
    lines.append(f"  one tar stream (vllm-kit.tar.part*), {len(vparts)} parts, holding:")
    for name, (version, _, fname) in sorted(kit.items()):
        also = "  (also in the project wheels: the same file)" if name in lock and lock[name].kind != "check-only" else ""
        lines.append(f"  {name:28s} {version:16s} {fname}{also}")
    machine = [e.pin for e in lock.values() if e.kind == "check-only"]
    lines += ["", "Not shipped (the GPU machine has them; the check here used these): " + ", ".join(machine)]

    # Upload order: what `run.sh prepare` needs first (wheels, then the model parts, after the last
    # of which the chain starts), then the vLLM parts, which the chain waits for.
    order = [(rel(d), folder_bytes(d)) for d in wfolders + [gwhl] + gparts + vparts]
    calls = upload_calls(order, a.mb * 1024 * 1024)
    needs = {rel(d) for d in wfolders + [gwhl] + gparts}
    start = max(i for i, c in enumerate(calls) if needs & set(c))
    table = ["| call | carry | command |", "|---|---|---|"]
    for i, c in enumerate(calls):
        size = sum(s for n, s in order if n in c)
        cmd = f"bash scripts/gpu/stage.sh {' '.join(c)}"
        if i == start:
            cmd += " && bash scripts/gpu/run.sh chain --background"
        table.append(f"| {i + 1} | {', '.join(f'`{n}`' for n in c)} ({mib(size)}) | `{cmd}` |")
    table.append(f"| {len(calls) + 1}… | – | `bash scripts/gpu/run.sh follow` (timeout 600 s; again until \"chain ended\"): "
                 "out.tgz and db.tgz come back in the call's $OUT |")
    lines += ["", f"Upload calls (<= {a.mb} MiB each; a folder's files land in /tmp/stage):", *table]
    (dest / "README.txt").write_text("\n".join(lines) + "\n")
    print("folders: " + ", ".join(f"{n} {mib(s)}" for n, s in order))
    print("\n".join(table))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("requirements"); s.add_argument("--pyproject", required=True)
    s.add_argument("--req", required=True); s.add_argument("--constraints", required=True)
    s.set_defaults(fn=cmd_requirements)
    s = sub.add_parser("pins"); s.add_argument("--report", required=True); s.add_argument("--kit-sums", required=True)
    s.set_defaults(fn=cmd_pins)
    s = sub.add_parser("pip-reqs"); s.add_argument("--lock", required=True); s.add_argument("--unhashed", action="store_true")
    s.add_argument("--wheels", required=True); s.add_argument("--sdists", required=True)
    s.set_defaults(fn=cmd_pip_reqs)
    s = sub.add_parser("write-lock"); s.add_argument("--pins", required=True); s.add_argument("--dir", required=True)
    s.add_argument("--out", required=True)
    s.set_defaults(fn=cmd_write_lock)
    s = sub.add_parser("verify"); s.add_argument("--lock", required=True); s.add_argument("--dir", required=True)
    s.add_argument("--sort-into", help="then move the files into DIR/wheel, DIR/sdist, DIR/check-only")
    s.set_defaults(fn=cmd_verify)
    s = sub.add_parser("one-version"); s.add_argument("--kit-sums", required=True); s.add_argument("dirs", nargs="+")
    s.set_defaults(fn=cmd_one_version)
    s = sub.add_parser("pack"); s.add_argument("--src", required=True); s.add_argument("--dest", required=True)
    s.add_argument("--mb", type=int, required=True)
    s.set_defaults(fn=cmd_pack)
    s = sub.add_parser("readme"); s.add_argument("--dest", required=True); s.add_argument("--prefix", required=True)
    s.add_argument("--lock", required=True); s.add_argument("--kit-sums", required=True)
    s.add_argument("--mb", type=int, required=True)
    s.set_defaults(fn=cmd_readme)
    a = ap.parse_args(argv)
    a.fn(a)


if __name__ == "__main__":
    main()
