"""No import cycles in ``agent/`` and ``drivers/``.

Two checks:

* statically, the graph of every import written in the source -- module level
  and inside functions, but not under ``if TYPE_CHECKING:`` -- has no cycle
  (a function-level import that closes a cycle works today and breaks the day
  someone moves it to the top, so it counts);
* dynamically, every module imports on its own, first, in an interpreter where
  nothing of ours is loaded yet: a cycle that only bites for one entry point
  shows up as an ImportError here.

An edge goes to the module whose code the import runs: ``from pkg import sub``
to ``pkg.sub`` when that is a module, otherwise to ``pkg``.  The implicit
import of parent packages is not an edge.
"""

from __future__ import annotations

import ast
import dataclasses
import json
import os
import pathlib
import subprocess
import sys
from collections.abc import Iterator

REPO = pathlib.Path(__file__).resolve().parents[2]
ROOTS = ("agent", "drivers")
MAX_CYCLES_SHOWN = 60


@dataclasses.dataclass(frozen=True)
class Edge:
    source: str
    target: str
    line: int
    in_function: bool

    def describe(self) -> str:
        where = " (in a function)" if self.in_function else ""
        return f"{self.source}:{self.line}{where} -> {self.target}"


def module_files() -> dict[str, pathlib.Path]:
    found: dict[str, pathlib.Path] = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*.py")):
            parts = list(path.relative_to(REPO).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _imports(tree: ast.Module) -> Iterator[tuple[ast.AST, bool]]:
    """Every import-like node with whether it sits in a function; skips TYPE_CHECKING."""

    def visit(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, bool]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    yield from visit_one(other, in_function)
                continue
            yield from visit_one(child, in_function)

    def visit_one(node: ast.AST, in_function: bool) -> Iterator[tuple[ast.AST, bool]]:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node, in_function
        elif _is_import_module_call(node):
            yield node, True
        inner = in_function or isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda)
        yield from visit(node, inner)

    yield from visit(tree, False)


def _is_import_module_call(node: ast.AST) -> bool:
    """``importlib.import_module("literal")``: a dynamic import we can still follow."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "import_module"
        and len(node.args) == 1
        and isinstance(node.args[0], ast.Constant)
        and isinstance(node.args[0].value, str)
    )


def _owner(name: str, modules: set[str]) -> str | None:
    """The longest prefix of dotted ``name`` that is one of our modules."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def _targets(node: ast.AST, module: str, is_package: bool, modules: set[str]) -> list[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            package = module if is_package else module.rpartition(".")[0]
            base_parts = package.split(".")
            base_parts = base_parts[: len(base_parts) - (node.level - 1)]
            base = ".".join(base_parts + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names = [
            f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
            for alias in node.names
        ]
    else:
        assert isinstance(node, ast.Call) and isinstance(node.args[0], ast.Constant)
        names = [str(node.args[0].value)]
    return [owner for name in names if (owner := _owner(name, modules)) is not None]


def import_graph() -> dict[str, list[Edge]]:
    files = module_files()
    modules = set(files)
    graph: dict[str, list[Edge]] = {name: [] for name in files}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        is_package = path.name == "__init__.py"
        for node, in_function in _imports(tree):
            seen = {edge.target for edge in graph[module]}
            for target in _targets(node, module, is_package, modules):
                if target != module and target not in seen:
                    seen.add(target)
                    line = getattr(node, "lineno", 0)
                    graph[module].append(Edge(module, target, line, in_function))
    return graph


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; components of more than one module, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work: list[tuple[str, int]] = [(start, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            edges = graph[node]
            if position < len(edges):
                work.append((node, position + 1))
                target = edges[position].target
                if target not in index:
                    work.append((target, 0))
                elif target in on_stack:
                    low[node] = min(low[node], index[target])
                continue
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    return sorted(components)


def elementary_cycles(graph: dict[str, list[Edge]], component: list[str]) -> list[list[Edge]]:
    """Each simple cycle of one component once, from its smallest module, up to a cap."""
    cycles: list[list[Edge]] = []
    for start in component:
        allowed = {m for m in component if m >= start}
        _walk(graph, start, start, allowed, [], {start}, cycles)
    return cycles


def _walk(
    graph: dict[str, list[Edge]],
    node: str,
    start: str,
    allowed: set[str],
    path: list[Edge],
    visiting: set[str],
    cycles: list[list[Edge]],
) -> None:
    for edge in graph[node]:
        if len(cycles) >= MAX_CYCLES_SHOWN:
            return
        if edge.target == start:
            cycles.append([*path, edge])
        elif edge.target in allowed and edge.target not in visiting:
            visiting.add(edge.target)
            path.append(edge)
            _walk(graph, edge.target, start, allowed, path, visiting, cycles)
            path.pop()
            visiting.discard(edge.target)


def test_no_import_cycles_in_the_source() -> None:
    graph = import_graph()
    components = strongly_connected(graph)
    report: list[str] = []
    for component in components:
        report.append(f"cycle among {', '.join(component)}:")
        for cycle in elementary_cycles(graph, component):
            report.append("    " + "  =>  ".join(edge.describe() for edge in cycle))
    assert not components, "import cycles (TYPE_CHECKING imports excluded):\n" + "\n".join(
        report
    )


def test_the_cycle_finder_finds_cycles() -> None:
    def edge(source: str, target: str) -> Edge:
        return Edge(source, target, 1, False)

    graph = {
        "a": [edge("a", "b")],
        "b": [edge("b", "c"), edge("b", "a")],
        "c": [edge("c", "a")],
        "d": [edge("d", "a")],
    }
    assert strongly_connected(graph) == [["a", "b", "c"]]
    cycles = elementary_cycles(graph, ["a", "b", "c"])
    assert sorted([e.target for e in cycle] for cycle in cycles) == [["b", "a"], ["b", "c", "a"]]


def test_type_checking_imports_are_not_edges() -> None:
    tree = ast.parse(
        "from typing import TYPE_CHECKING\n"
        "import agent.x\n"
        "if TYPE_CHECKING:\n    import agent.y\nelse:\n    import agent.z\n"
        "def f():\n    from . import w\n    importlib.import_module('agent.v')\n"
    )
    modules = {"agent", "agent.x", "agent.y", "agent.z", "agent.w", "agent.v", "agent.m"}
    found = [
        (target, in_function)
        for node, in_function in _imports(tree)
        for target in _targets(node, "agent.m", False, modules)
    ]
    assert found == [
        ("agent.x", False),
        ("agent.z", False),
        ("agent.w", True),
        ("agent.v", True),
    ]


# Run in fresh interpreters: for each module, forget every module of ours, then
# import it first.  Third-party modules stay loaded (they cannot take part in
# our cycles), which keeps this to a few seconds.
_IMPORT_EACH = """
import importlib, json, sys, traceback
ours = tuple(sys.argv[1].split(","))
failures = {}
for name in sys.argv[2:]:
    for loaded in [m for m in sys.modules if m.split(".")[0] in ours]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except BaseException as exc:
        last = traceback.extract_tb(exc.__traceback__)[-1]
        failures[name] = f"{type(exc).__name__}: {exc} ({last.filename}:{last.lineno})"
print(json.dumps(failures))
"""


def test_every_module_imports_first_in_a_fresh_interpreter() -> None:
    names = [name for name in module_files() if not name.endswith("__main__")]
    workers = max(1, min(4, os.cpu_count() or 1))
    chunks = [names[i::workers] for i in range(workers)]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", _IMPORT_EACH, ",".join(ROOTS), *chunk],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for chunk in chunks
    ]
    failures: dict[str, str] = {}
    for process in processes:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err[-3000:]
        failures.update(json.loads(out.strip().splitlines()[-1]))
    assert not failures, "modules that fail to import first:\n" + "\n".join(
        f"  {name}: {problem}" for name, problem in sorted(failures.items())
    )
