#!/usr/bin/env python3
"""Build stage of the judge image: fetch the winner's model into the path serve.py loads it from.

    python download_model.py [WINNER_JSON] [--source modelscope|local] [--from DIR] [--force]

WINNER_JSON defaults to $TOURNAMENT_WINNER, then ./winner.json. The model id and revision are
``serve.model.modelscope_id`` / ``serve.model.revision``; the destination is ``serve.model.path``
resolved exactly as serve.py resolves it (relative to the folder of winner.json), by the same
code (``tournament.serving.config.load_serve_config``). The files are verified (config,
tokenizer, complete weights) before the build goes on. Any problem fails the build with a
message that says what to fix.

Needs only the standard library, pydantic (the ``serve`` extra) and ``modelscope``; it never
imports torch. ModelScope is used without a token: the repo must be public.

Exit codes: 0 ok, 2 bad winner.json / arguments, 3 download failed (missing repo...),
4 the downloaded files are incomplete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # the package is copied beside this file in the image
    sys.path.insert(0, str(HERE))


class ConfigProblem(Exception):
    exit_code = 2


def _say(msg: str) -> None:
    print(f"download_model.py: {msg}", flush=True)


def resolve_winner_path(arg: str | None, env: dict[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if arg:
        return Path(arg)
    if env.get("TOURNAMENT_WINNER") and env["TOURNAMENT_WINNER"] != "none":
        return Path(env["TOURNAMENT_WINNER"])
    return Path("winner.json")


def plan(winner: Path, env: dict[str, str] | None = None) -> dict:
    """What would be downloaded where: {model_id, revision, dest, gguf_file, winner}."""
    if not winner.is_file():
        raise ConfigProblem(
            f"{winner} not found. Run `tournament pick` to write it and commit it; the image is built "
            "from the committed winner.json."
        )
    try:
        doc = json.loads(winner.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ConfigProblem(f"{winner} is not valid JSON ({e}); run `tournament pick` again") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("serve"), dict):
        raise ConfigProblem(f"{winner} has no `serve` object; run `tournament pick` again")
    from tournament.serving.config import load_serve_config

    env = dict(os.environ if env is None else env)
    env["TOURNAMENT_WINNER"] = str(winner)
    try:
        cfg, base = load_serve_config(env)
    except Exception as e:  # pydantic ValidationError etc.
        raise ConfigProblem(f"{winner}: the serve config is invalid: {e}") from e
    rel = Path(cfg.model.path)
    if rel.is_absolute() or ".." in rel.parts:
        raise ConfigProblem(
            f"serve.model.path must be a path inside the repo, relative to winner.json (e.g. models/winner), "
            f"not {cfg.model.path!r}"
        )
    return {
        "winner": str(winner),
        "model_id": cfg.model.modelscope_id,
        "revision": cfg.model.revision,
        "gguf_file": cfg.model.gguf_file,
        "path": cfg.model.path,
        "dest": cfg.resolved_model_path(base),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="download_model.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("winner", nargs="?", help="winner.json (default: $TOURNAMENT_WINNER or ./winner.json)")
    ap.add_argument("--source", choices=["modelscope", "local"], default="modelscope")
    ap.add_argument("--from", dest="from_dir", help="with --source local: the model folder to copy")
    ap.add_argument("--force", action="store_true", help="download even if the destination is already complete")
    ap.add_argument("--dry-run", action="store_true", help="print the plan as JSON and stop")
    args = ap.parse_args(argv)

    from tournament.models import hub

    try:
        p = plan(resolve_winner_path(args.winner))
        if args.dry_run:
            print(json.dumps({**p, "dest": str(p["dest"])}, indent=2))
            return 0
        if args.source == "modelscope" and not p["model_id"]:
            raise ConfigProblem(
                f"{p['winner']} has no serve.model.modelscope_id: upload the model "
                "(`tournament models upload DIR OWNER/NAME`, a public repo) and run `tournament pick` "
                "again, or set it by hand"
            )
        if args.source == "local" and not args.from_dir:
            raise ConfigProblem("--source local needs --from DIR")
        what = args.from_dir if args.source == "local" else f"{p['model_id']}@{p['revision'] or 'master'}"
        dest: Path = p["dest"]
        marker = hub.read_marker(dest)
        if (
            not args.force
            and marker
            and marker.get("source") == args.source
            and marker.get("model_id") == (args.from_dir if args.source == "local" else p["model_id"])
            and marker.get("revision") == p["revision"]
        ):
            try:
                report = hub.verify_model_dir(dest, gguf_file=p["gguf_file"])
                _say(f"{dest} already holds {what} ({report.total_bytes / 1e9:.2f} GB, verified); nothing to do")
                return 0
            except hub.ModelDirInvalid:
                pass
        _say(f"fetching {what} from {args.source} into {dest} (serve.model.path={p['path']!r})")
        t0 = time.time()
        hub.download(
            p["model_id"] or "",
            p["revision"],
            dest,
            source=args.source,
            local_dir=args.from_dir,
            gguf_file=p["gguf_file"],
        )
        report = hub.verify_model_dir(dest, gguf_file=p["gguf_file"])
        dt = time.time() - t0
        gb = report.total_bytes / 1e9
        _say(
            f"ok: {len(report.files)} files, {gb:.2f} GB in {dt:.1f} s "
            f"({report.total_bytes * 8 / 1e6 / max(dt, 1e-6):.0f} Mbit/s); weights: {', '.join(report.weights)}"
        )
        for w in report.warnings:
            _say(f"warning: {w}")
        return 0
    except ConfigProblem as e:
        _say(f"error: {e}")
        return e.exit_code
    except hub.HubError as e:
        _say(f"error: {e}")
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
