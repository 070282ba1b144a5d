"""The model package's import graph: no module imports itself back through another (function-
level imports included), and nothing in model/ reaches the web layer, the database or the CLI."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

MODEL = Path(__file__).resolve().parents[1] / "model"
FORBIDDEN = ("app", "clipmed", "fastapi", "starlette", "sqlalchemy", "jinja2", "alembic")


def module_name(path: Path) -> str:
    parts = path.relative_to(MODEL.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(MODEL.rglob("*.py"))}


def imported(path: Path) -> set[str]:
    """Every module a file names in an import statement, wherever the statement stands."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
            # `from model.datasets import lidc` imports the submodule model.datasets.lidc
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def model_graph() -> dict[str, set[str]]:
    return {name: imported(path) & MODULES.keys() - {name} for name, path in MODULES.items()}


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the groups of modules that import each other, round a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_tarjan_finds_a_circle_and_leaves_a_chain_alone():
    circle = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert [g for g in strongly_connected(circle) if len(g) > 1] == [["a", "b", "c"]]
    chain = {"a": {"b"}, "b": {"c"}, "c": set()}
    assert all(len(g) == 1 for g in strongly_connected(chain))


def test_no_import_circles_in_model():
    circles = [g for g in strongly_connected(model_graph()) if len(g) > 1]
    assert circles == []


def test_the_schema_is_a_leaf():
    assert model_graph()["model.schema"] == set()


def test_model_never_imports_the_web_layer_the_database_or_the_cli():
    offenders = {
        name: sorted(n for n in imported(path) if n.split(".")[0] in FORBIDDEN)
        for name, path in MODULES.items()
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_every_model_module_imports():
    for name in MODULES:
        importlib.import_module(name)
