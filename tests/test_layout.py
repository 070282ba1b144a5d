"""The import graph of model/, app/ and clipmed/: no module imports itself back through another
(Tarjan's strongly connected components over every import, function-level ones included), nothing
in model/ reaches the web layer, the database or the CLI, and every module imports."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("model", "app", "clipmed")
FORBIDDEN = ("app", "clipmed", "fastapi", "starlette", "sqlalchemy", "jinja2", "alembic")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {
    module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))
}


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


def import_graph() -> dict[str, set[str]]:
    """module -> the modules of model/, app/ and clipmed/ it imports (a package's __init__
    counts as imported by `from package import name`, as Python runs it)."""
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


def test_no_import_circles():
    circles = [g for g in strongly_connected(import_graph()) if len(g) > 1]
    assert circles == []


def test_the_graph_sees_function_level_imports():
    # clipmed.cli imports the service inside its commands (a fast start for `--help`)
    assert {"app.main", "app.jobs.worker"} <= import_graph()["clipmed.cli"]


def test_the_schema_is_a_leaf():
    assert import_graph()["model.schema"] == set()


def test_the_job_handlers_and_the_worker_do_not_import_each_other():
    graph = import_graph()
    assert "app.jobs.worker" not in graph["app.jobs.tasks"]
    assert "app.jobs.tasks" not in graph["app.jobs.worker"]


def test_model_never_imports_the_web_layer_the_database_or_the_cli():
    offenders = {
        name: sorted(n for n in imported(path) if n.split(".")[0] in FORBIDDEN)
        for name, path in MODULES.items()
        if name.split(".")[0] == "model"
    }
    assert {name: found for name, found in offenders.items() if found} == {}


def test_every_module_imports():
    for name in MODULES:
        if not name.endswith("__main__"):  # `python -m clipmed`: importing it runs the CLI
            importlib.import_module(name)
