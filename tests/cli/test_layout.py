"""The package's shape, kept by tests: modules of at most 500 lines, no import circle between
tournament's modules (imports inside functions count too), and no module taking another
package's private (`_name`) definitions."""

from __future__ import annotations

import ast

from tournament.paths import REPO_ROOT

PKG = REPO_ROOT / "tournament"


def modules() -> dict[str, ast.Module]:
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        name = ".".join(f.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        out[name] = ast.parse(f.read_text(encoding="utf-8"))
    return out


def imports_of(name: str, tree: ast.Module, known: set[str]) -> list[tuple[str, list[str]]]:
    """(imported tournament module, names taken from it) for every import in the module."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names if a.name in known]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tournament"):
            for a in node.names:
                sub = f"{node.module}.{a.name}"
                out.append((sub, []) if sub in known else (node.module, [a.name]))
    return [(m, names) for m, names in out if m in known and m != name]


def test_no_module_over_500_lines():
    long = {f.relative_to(REPO_ROOT).as_posix(): n for f in PKG.rglob("*.py")
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > 500}
    assert not long, f"modules over 500 lines: {long}"


def test_no_import_circle():
    mods = modules()
    known = set(mods)
    graph = {m: {i for i, _ in imports_of(m, t, known) if not m.startswith(i + ".")} for m, t in mods.items()}
    # a package's __init__ is imported on the way to any of its modules: only real edges count
    circles = []
    state: dict[str, int] = {}

    def visit(m, path):
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                circles.append(path[path.index(n):] + [n])
            elif n not in state:
                visit(n, path + [n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not circles, f"import circles: {circles}"


def test_no_private_names_across_packages():
    mods = modules()
    known = set(mods)
    bad = []
    for m, tree in mods.items():
        pkg = m.rsplit(".", 1)[0]
        for target, names in imports_of(m, tree, known):
            target_pkg = target.rsplit(".", 1)[0] if target in known and not (PKG / "/".join(target.split(".")[1:]) / "__init__.py").exists() else target
            for n in names:
                if n.startswith("_") and target_pkg != pkg:
                    bad.append(f"{m} takes {target}.{n}")
    assert not bad, bad
