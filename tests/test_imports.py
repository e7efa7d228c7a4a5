"""Structure of src/maxk read from the source: no import cycles, one distribution kernel.

Cycles: every module is parsed with ``ast`` and ALL its imports of maxk modules are collected:
module level, inside functions, under ``if TYPE_CHECKING:``, and ``importlib.import_module``
with a literal name. Relative imports are resolved against the importing module's package;
``from P import x`` is an edge to module ``P.x`` when that is a submodule, else to ``P``;
importing a package is an edge to its ``__init__`` (module ``P``). A package's ``__init__``
importing its own submodules is an edge like any other. A submodule's implicit dependency on its
parent packages being initialised is not an edge (``from .proofs.registry import X`` is an edge
to ``maxk.proofs.registry`` only), and neither is a module naming itself. The graph must have no
strongly connected component with more than one module (Tarjan); a failure prints one cycle in
it with the file and line of each import.

One kernel: outside src/maxk/distributions/, no code compares a value with a distribution name
as a string literal (``dist == "uniform"``, ``"distinct" != d.name``, ``name in ("uniform", ...)``,
``case "distinct":``). This reads the syntax tree rather than matching text, so it sees either
operand order and comparisons split over lines, and does not flag ``for d in ("uniform", ...)``.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PKG = SRC / "maxk"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES: dict[str, Path] = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


@dataclass(frozen=True)
class Edge:
    target: str
    line: int
    local: bool  # inside a function (or class body), not at module level


def _is_maxk(name: str) -> bool:
    return name == "maxk" or name.startswith("maxk.")


def _resolve_from(module: str, node: ast.ImportFrom) -> str:
    """The absolute module named by ``from <level dots><node.module> import ...`` in ``module``."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]
    parts = package.split(".")
    if node.level - 1 >= len(parts):
        raise AssertionError(f"{module}: relative import beyond the top-level package (line {node.lineno})")
    base = ".".join(parts[: len(parts) - (node.level - 1)])
    return f"{base}.{node.module}" if node.module else base


def _import_module_name(node: ast.Call) -> str | None:
    """The literal name of ``importlib.import_module("...")`` / ``import_module("...")``, if any."""
    fn = node.func
    called = fn.attr if isinstance(fn, ast.Attribute) else fn.id if isinstance(fn, ast.Name) else None
    if (
        called in ("import_module", "__import__")
        and node.args
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
        and not node.args[0].value.startswith(".")
    ):
        return node.args[0].value
    return None


def _function_local_nodes(tree: ast.Module) -> set[int]:
    """ids of every node inside a function or class body."""
    inner: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            inner.update(id(n) for n in ast.walk(node) if n is not node)
    return inner


def _imports(module: str) -> tuple[list[Edge], list[str]]:
    """(edges to maxk modules, imports of maxk names that are no module under src/maxk)."""
    path = MODULES[module]
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    local = _function_local_nodes(tree)
    edges: list[Edge] = []
    unknown: list[str] = []

    def add(target: str, node: ast.AST) -> None:
        if target not in MODULES:
            unknown.append(f"{path.relative_to(SRC.parent)}:{node.lineno}: {target}")
        elif target != module:
            edges.append(Edge(target, node.lineno, id(node) in local))

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _is_maxk(alias.name):
                    add(alias.name, node)
        elif isinstance(node, ast.ImportFrom):
            base = _resolve_from(module, node)
            if _is_maxk(base):
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    add(sub if sub in MODULES else base, node)
        elif isinstance(node, ast.Call):
            name = _import_module_name(node)
            if name is not None and _is_maxk(name):
                add(name, node)
    return edges, unknown


def import_graph() -> dict[str, list[Edge]]:
    """module -> its edges to other maxk modules (each target once, at its first import)."""
    graph: dict[str, list[Edge]] = {}
    for module in MODULES:
        first: dict[str, Edge] = {}
        for e in sorted(_imports(module)[0], key=lambda e: e.line):
            first.setdefault(e.target, e)
        graph[module] = list(first.values())
    return graph


def strongly_connected_components(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the SCCs of ``graph``, each a sorted list of modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            for e in it:
                w = e.target
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(graph[w])))
                    break
                if w in on_stack:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    u = work[-1][0]
                    low[u] = min(low[u], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on_stack.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    out.append(sorted(comp))
    return out


def a_cycle(graph: dict[str, list[Edge]], component: list[str]) -> list[tuple[str, Edge]]:
    """One shortest cycle through the first module of ``component`` (a nontrivial SCC), as the
    (importing module, edge) pairs along it."""
    members, start = set(component), component[0]
    prev: dict[str, tuple[str, Edge]] = {}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for e in graph[v]:
                if e.target not in members or e.target in prev:
                    continue
                prev[e.target] = (v, e)
                if e.target == start:
                    path, w = [], start
                    while True:
                        v_, e_ = prev[w]
                        path.append((v_, e_))
                        w = v_
                        if w == start:
                            return path[::-1]
                nxt.append(e.target)
        frontier = nxt
    raise AssertionError(f"no cycle through {start} in {component}")


def _describe(graph: dict[str, list[Edge]], component: list[str]) -> str:
    steps = [
        f"  {v} -> {e.target}   ({MODULES[v].relative_to(SRC.parent)}:{e.line}"
        f"{', inside a function' if e.local else ''})"
        for v, e in a_cycle(graph, component)
    ]
    return f"cycle among {', '.join(component)}:\n" + "\n".join(steps)


def test_every_module_is_found():
    assert "maxk" in MODULES and "maxk.cli" in MODULES and "maxk.distributions" in MODULES


def test_every_maxk_import_names_a_module():
    unknown = [u for module in MODULES for u in _imports(module)[1]]
    assert not unknown, "imports of maxk names that are no module under src/maxk:\n" + "\n".join(unknown)


def test_no_import_cycles():
    graph = import_graph()
    cycles = [c for c in strongly_connected_components(graph) if len(c) > 1]
    assert not cycles, "import cycles in src/maxk:\n" + "\n".join(_describe(graph, c) for c in cycles)


# ------------------------------------------------------------------------- the checker itself


def _fake_graph(edges: dict[str, list[str]]) -> dict[str, list[Edge]]:
    graph: dict[str, list[Edge]] = defaultdict(list)
    for v, ws in edges.items():
        graph[v] = [Edge(w, 1, False) for w in ws]
        for w in ws:
            graph.setdefault(w, [])
    return dict(graph)


def test_tarjan_finds_cycles_and_only_cycles():
    g = _fake_graph({"a": ["b"], "b": ["c", "d"], "c": ["a"], "d": ["e"], "e": [], "f": ["f2"], "f2": ["f"]})
    comps = sorted(c for c in strongly_connected_components(g) if len(c) > 1)
    assert comps == [["a", "b", "c"], ["f", "f2"]]
    assert [v for v, _ in a_cycle(g, ["a", "b", "c"])] == ["a", "b", "c"]
    assert all(len(c) == 1 for c in strongly_connected_components(_fake_graph({"a": ["b", "c"], "b": ["c"]})))


def test_resolution_of_relative_and_package_imports():
    """The CLI package: its __init__ imports the subcommand modules (``from . import core``), each of
    which imports ``_app`` (``from ._app import``) and maxk modules (``from .. import checkpoint``)."""
    graph = import_graph()
    targets = {m: {e.target for e in es} for m, es in graph.items()}
    assert {
        "maxk.cli.core",
        "maxk.cli.prove",
        "maxk.cli.estimate",
        "maxk.cli.estimate_bench",
        "maxk.cli._app",
    } <= targets["maxk.cli"]
    assert {"maxk.cli._app", "maxk.checkpoint", "maxk.distributions"} <= targets["maxk.cli.core"]
    assert "maxk.proofs.registry" in targets["maxk.cli.prove"] and "maxk.proofs" not in targets["maxk.cli.prove"]
    assert "maxk.cli" in targets["maxk.__main__"]
    for sub in ("core", "prove", "estimate", "estimate_bench"):  # within the CLI, only from _app
        inside = {t for t in targets[f"maxk.cli.{sub}"] if t == "maxk.cli" or t.startswith("maxk.cli.")}
        assert inside == {"maxk.cli._app"}, f"maxk.cli.{sub} imports {sorted(inside)}"


# ------------------------------------------------------------------------- one distribution kernel


def _distribution_names() -> set[str]:
    from maxk.distributions import distribution_names

    return set(distribution_names()) | {"uniform", "distinct"}


def _names_literal(node: ast.AST, names: set[str]) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in names
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_names_literal(x, names) for x in node.elts)
    return False


def literal_distribution_comparisons(source: str, names: set[str]) -> list[int]:
    """Lines of ``source`` that compare something with a distribution name written as a literal."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare) and any(_names_literal(x, names) for x in (node.left, *node.comparators)):
            lines.append(node.lineno)
        elif isinstance(node, ast.MatchValue) and _names_literal(node.value, names):
            lines.append(node.value.lineno)
    return sorted(lines)


@pytest.mark.parametrize(
    "code, hits",
    [
        ('if dist == "uniform": pass', 1),
        ('ok = "distinct" != d.name', 1),
        ('ok = d.name in (\n    "uniform",\n    "distinct",\n)', 1),
        ('ok = name not in {"distinct"}', 1),
        ('match d:\n    case "uniform":\n        pass', 1),
        ('for d in ("uniform", "distinct"):\n    evaluate(m, d)', 0),
        ('x = f(dist="uniform"); y = mode == "fast"', 0),
    ],
)
def test_literal_comparison_checker(code, hits):
    assert len(literal_distribution_comparisons(code, {"uniform", "distinct"})) == hits


def test_distribution_names_only_compared_inside_the_kernel():
    names = _distribution_names()
    kernel = PKG / "distributions"
    found = [
        f"{path.relative_to(SRC.parent)}:{line}: {path.read_text(encoding='utf-8').splitlines()[line - 1].strip()}"
        for path in MODULES.values()
        if kernel not in path.parents
        for line in literal_distribution_comparisons(path.read_text(encoding="utf-8"), names)
    ]
    assert not found, (
        "distribution names compared as string literals outside maxk.distributions "
        "(ask the Distribution object instead):\n" + "\n".join(found)
    )
