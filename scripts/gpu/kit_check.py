#!/usr/bin/env python3
"""Check, here, that the kit's wheels are all that tournament needs on the offline GPU machine.

Run by scripts/gpu/kit.sh with Python 3.12, the kit's wheels installed into a --target folder and
PYTHONPATH=<that folder>:<repo>:<numpy + protobuf, which the machine has>. torch, transformers and
vLLM are not here and need not be: the project imports them lazily. It

1. imports the libraries a GPU run needs (mlflow, optuna, fastapi, uvicorn, jieba, rouge_score, ...);
2. imports the project's modules: tournament.cli, serve, and every module under tournament/ whose
   source imports mlflow or optuna (found by scanning the source, so the list follows the code when
   modules move); a module that needs torch & co. at import time is reported, not failed;
3. runs every third-party import statement in tournament/, also those inside functions (MLflow and
   Optuna are imported lazily), so a missing package shows up here and not in the middle of a run;
4. opens an MLflow sqlite store (experiment, run, param, metric) and an Optuna RDB sqlite storage
   (study, one ask/tell): opening the sqlite store is what needs `cryptography`.

Exit 1, naming what is missing, if anything fails.
Usage: kit_check.py [--repo DIR] [--work DIR] [--modules a,b,...]   (or $KIT_CHECK_MODULES)
"""

from __future__ import annotations

import argparse
import ast
import importlib
import importlib.util
import os
import sys
import traceback
from pathlib import Path

# Imported up front: what a GPU run's phases use.
LIBRARIES = ["mlflow", "optuna", "fastapi", "uvicorn", "jieba", "rouge_score", "cryptography.fernet",
             "sqlalchemy", "alembic", "pydantic", "typer", "rich", "httpx", "yaml", "docx", "nltk",
             "matplotlib", "plotly", "pypdf"]
# A project module importing one of these is imported by the check.
WATCHED = ("mlflow", "optuna")
# Top-level modules that the kit does not ship, and where they come from instead.
ELSEWHERE = {
    "torch": "the GPU machine", "transformers": "the GPU machine", "peft": "the GPU machine",
    "accelerate": "the GPU machine", "numpy": "the GPU machine", "google": "the GPU machine (protobuf)",
    "tokenizers": "the GPU machine", "safetensors": "the GPU machine", "huggingface_hub": "the GPU machine",
    "vllm": "the vLLM kit", "gguf": "the gemma parts' wheel",
    "torch_musa": "Moore Threads machines only", "modelscope": "the modelscope extra, not used there",
    "llmcompressor": "quantizing, not used there", "datasets": "quantizing, not used there",
    "tomli": "Python < 3.11 only", "psycopg": "PostgreSQL workers only", "psycopg2": "PostgreSQL workers only",
}


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_statements(tree: ast.AST):
    """(node, top-level module, guarded) for each absolute import; guarded = inside a try that
    catches ImportError (the code copes without it)."""
    guarded_nodes: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try):
            names = set()
            for h in node.handlers:
                t = h.type
                for e in (t.elts if isinstance(t, ast.Tuple) else [t]):
                    names.add(getattr(e, "id", None) or getattr(e, "attr", None))
            if names & {"ImportError", "ModuleNotFoundError", "Exception", None}:
                for stmt in node.body:
                    guarded_nodes.update(id(n) for n in ast.walk(stmt))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name.split(".")[0], id(node) in guarded_nodes
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node, node.module.split(".")[0], id(node) in guarded_nodes


def discover_modules(repo: Path, watched=WATCHED, package: str = "tournament") -> list[str]:
    """Every module under repo/package whose source imports one of `watched` (at any depth)."""
    found = []
    for path in sorted((repo / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        if any(top in watched for _, top, _ in import_statements(tree)):
            found.append(module_name(path, repo))
    return found


class Check:
    def __init__(self) -> None:
        self.failed: list[str] = []
        self.notes: list[str] = []
        self.ok = 0

    def good(self, what: str) -> None:
        self.ok += 1
        print(f"ok    {what}")

    def fail(self, what: str) -> None:
        self.failed.append(what)
        print(f"FAIL  {what}")

    def note(self, what: str) -> None:
        self.notes.append(what)
        print(f"note  {what}")


def missing_of(e: BaseException) -> str | None:
    return getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None


def where(mod) -> str:
    """The sys.path entry a module came from (the kit's folder, the repo, the machine's stand-in)."""
    f = getattr(mod, "__file__", None) or ""
    for p in sys.path:
        if p and f.startswith(p.rstrip("/") + "/"):
            return p
    return f or "built in"


def version_of(top: str) -> str:
    from importlib.metadata import PackageNotFoundError, packages_distributions, version

    for dist in packages_distributions().get(top, []):
        try:
            return version(dist)
        except PackageNotFoundError:
            pass
    return "?"


def check_libraries(c: Check, names: list[str]) -> None:
    for name in names:
        try:
            m = importlib.import_module(name)
            c.good(f"import {name} {version_of(name.split('.')[0])} ({where(m)})")
        except Exception as e:  # noqa: BLE001 - report every kind of failure by name
            c.fail(f"import {name}: {type(e).__name__}: {e}" + (f" -> the kit lacks {missing_of(e)!r}" if missing_of(e) else ""))


def check_modules(c: Check, modules: list[str]) -> None:
    for name in modules:
        try:
            importlib.import_module(name)
            c.good(f"import {name}")
        except Exception as e:  # noqa: BLE001
            miss = missing_of(e)
            top = (miss or "").split(".")[0]
            if top in ELSEWHERE:
                c.note(f"import {name}: needs {miss} at import time, which comes from {ELSEWHERE[top]} "
                       "(not here; not checked further)")
            else:
                c.fail(f"import {name}: {type(e).__name__}: {e}" + (f" -> the kit lacks {miss!r}" if miss else ""))


def run_statement(node: ast.AST) -> None:
    if isinstance(node, ast.Import):
        for alias in node.names:
            importlib.import_module(alias.name)
    else:
        mod = importlib.import_module(node.module)
        for alias in node.names:
            if alias.name != "*" and not hasattr(mod, alias.name):
                importlib.import_module(f"{node.module}.{alias.name}")


def check_statements(c: Check, repo: Path, package: str = "tournament") -> None:
    """Every third-party import statement in the package, lazy ones included."""
    done: dict[str, str | None] = {}  # statement text -> error (None: fine)
    counted = 0
    for path in sorted((repo / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        for node, top, guarded in import_statements(tree):
            if top in sys.stdlib_module_names or top == package or top in ELSEWHERE:
                continue
            text = ast.unparse(node)
            if text not in done:
                try:
                    run_statement(node)
                    done[text] = None
                except Exception as e:  # noqa: BLE001
                    done[text] = f"{type(e).__name__}: {e}"
                    miss = missing_of(e)
                    at = f"{path.relative_to(repo)}:{node.lineno} `{text}`"
                    if guarded and miss == top:
                        c.note(f"{at}: optional, not in the kit ({miss})")
                    else:
                        c.fail(f"{at}: {done[text]}" + (f" -> the kit lacks {miss!r}" if miss else ""))
            counted += 1
    bad = sum(1 for v in done.values() if v)
    c.good(f"{len(done) - bad} of {len(done)} distinct third-party import statements in {package}/ "
           f"({counted} in all, lazy ones included) ran")


def check_mlflow(c: Check, work: Path) -> None:
    try:
        import mlflow
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(f"sqlite:///{work / 'mlflow.db'}")
        exp = mlflow.create_experiment("kit-check", artifact_location=(work / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=exp, run_name="kit-check") as run:
            mlflow.log_param("kit", "check")
            mlflow.log_metric("accuracy", 0.5, step=1)
        got = MlflowClient().get_run(run.info.run_id)
        assert got.data.metrics["accuracy"] == 0.5 and got.info.status == "FINISHED", got
        crypto = "cryptography" in sys.modules
        c.good(f"MLflow sqlite store: experiment, run, param, metric (cryptography loaded: {crypto})")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        miss = missing_of(e)
        c.fail(f"MLflow sqlite store: {type(e).__name__}: {e}" + (f" -> the kit lacks {miss!r}" if miss else ""))


def check_optuna(c: Check, work: Path) -> None:
    try:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        storage = optuna.storages.RDBStorage(f"sqlite:///{work / 'optuna.db'}")
        study = optuna.create_study(study_name="kit-check", storage=storage, direction="maximize")
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        study.tell(trial, x)
        assert len(optuna.load_study(study_name="kit-check", storage=storage).trials) == 1
        c.good("Optuna RDB sqlite storage: study, ask, tell")
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        miss = missing_of(e)
        c.fail(f"Optuna RDB sqlite storage: {type(e).__name__}: {e}" + (f" -> the kit lacks {miss!r}" if miss else ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repo", default=str(Path(__file__).resolve().parents[2]))
    ap.add_argument("--work", default=None, help="where the sqlite files go (default: a temporary folder)")
    ap.add_argument("--modules", default=os.environ.get("KIT_CHECK_MODULES"),
                    help="comma-separated project modules to import (default: tournament.cli, serve and "
                         "every module under tournament/ that imports mlflow or optuna)")
    a = ap.parse_args(argv)
    repo = Path(a.repo).resolve()
    if a.work:
        work = Path(a.work).resolve()
        work.mkdir(parents=True, exist_ok=True)
    else:
        import tempfile
        work = Path(tempfile.mkdtemp(prefix="kit-check-"))
    os.chdir(work)  # anything written relative to the current directory lands here
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no network on the machine either
    if a.modules:
        modules = [m.strip() for m in a.modules.split(",") if m.strip()]
    else:
        modules = ["tournament.cli", "serve"] + [m for m in discover_modules(repo) if m != "tournament.cli"]
    print(f"Python {sys.version.split()[0]}; modules to import: {', '.join(modules)}")
    c = Check()
    check_libraries(c, LIBRARIES)
    check_modules(c, modules)
    check_statements(c, repo)
    check_mlflow(c, work)
    check_optuna(c, work)
    print(f"\nkit check: {c.ok} ok, {len(c.notes)} notes, {len(c.failed)} FAILED")
    for f in c.failed:
        print(f"  FAILED: {f}")
    return 1 if c.failed else 0


if __name__ == "__main__":
    sys.exit(main())
