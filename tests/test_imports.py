"""The house's import rules, read from the source (ast) rather than from what happens to be imported.

Every ``import`` and ``from ... import`` in every module of ``nas/``, ``search_spaces/``
and ``scaling/`` counts, at module level or inside a function (a lazy import is still a
dependency), with relative imports resolved.  Rules: no import cycle between modules,
and nothing outside ``nas.cli`` imports ``nas.cli`` (the CLI is the top).
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("nas", "search_spaces", "scaling")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules(root: Path = ROOT, packages=PACKAGES) -> dict[str, Path]:
    return {_module_name(p, root): p for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def _targets(module: str, is_package: bool, node: ast.AST) -> list[str]:
    """The dotted names an import statement loads: ``from P import n`` loads ``P.n`` when that is a
    module, else ``P`` (the caller resolves each name to the longest known module)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        base = module.split(".") if is_package else module.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        prefix = ".".join(base + ([node.module] if node.module else []))
    else:
        prefix = node.module or ""
    return [f"{prefix}.{a.name}" for a in node.names]


def import_graph(root: Path = ROOT, packages=PACKAGES) -> dict[str, set[str]]:
    """module -> the modules of ``packages`` it imports (each target resolved to its longest known module)."""
    mods = modules(root, packages)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            if not isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            for target in _targets(name, path.name == "__init__.py", node):
                parts = target.split(".")
                while parts and ".".join(parts) not in mods:
                    parts.pop()
                if parts:
                    deps.add(".".join(parts))
        deps.discard(name)
        graph[name] = deps
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = len(index)
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_no_import_cycle_between_modules():
    found = cycles(import_graph())
    assert not found, "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_nothing_below_the_cli_imports_it():
    graph = import_graph()
    upward = sorted(f"{m} -> {d}" for m, deps in graph.items() if not m.startswith("nas.cli")
                    for d in deps if d == "nas.cli" or d.startswith("nas.cli."))
    assert not upward, "modules below the CLI import it: " + ", ".join(upward)


def test_the_supernet_takes_the_estimate_type_from_the_bottom_module():
    graph = import_graph()
    assert "nas.estimators.types" in graph["nas.supernet._score"]
    assert not {d for m, deps in graph.items() if m.startswith("nas.supernet") for d in deps} & {
        "nas.estimators", "nas.estimators.registry"}


# The checker itself: it must see what it is meant to forbid.

def _tree(tmp_path, files: dict[str, str]) -> dict[str, set[str]]:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return import_graph(tmp_path, ("pkg",))


def test_the_checker_finds_a_cycle_through_a_relative_import_inside_a_function(tmp_path):
    graph = _tree(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "from .sub.b import thing\n",
        "pkg/sub/__init__.py": "",
        "pkg/sub/b.py": "def f():\n    from ..a import other\n    return other\n",
        "pkg/c.py": "import pkg.a\n",
    })
    assert graph["pkg.a"] == {"pkg.sub.b"} and graph["pkg.sub.b"] == {"pkg.a"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.sub.b"]]


def test_the_checker_resolves_a_package_relative_import_and_finds_no_false_cycle(tmp_path):
    graph = _tree(tmp_path, {
        "pkg/__init__.py": "from .low import x\nfrom . import mid\n",
        "pkg/low.py": "x = 1\n",
        "pkg/mid.py": "from .low import x\nfrom pkg import low\n",
    })
    assert graph == {"pkg": {"pkg.low", "pkg.mid"}, "pkg.low": set(), "pkg.mid": {"pkg.low"}}
    assert cycles(graph) == []
