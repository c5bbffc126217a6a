"""The recipe modules import one another one way only: no cycle, lazy imports inside functions included.

Read statically (``ast``), so that an import inside a function or under ``TYPE_CHECKING``, which runs late
or never and so never fails at import time, still counts. The registry's ``importlib.import_module`` of a
recipe by name is not an import statement: it is how the registry stays free of the recipes' models.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import nbhelpers.train.recipes as recipes_package

PACKAGE = "nbhelpers.train.recipes"
FOLDER = Path(recipes_package.__file__).parent


def module_name(path: Path) -> str:
    return PACKAGE if path.name == "__init__.py" else f"{PACKAGE}.{path.stem}"


def imported(path: Path, modules: set[str]) -> set[str]:
    """The modules of ``modules`` that ``path`` imports anywhere in its body (``import a.b``,
    ``from a import b`` where ``a.b`` is a module, ``from . import b``, ``from .b import c``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = PACKAGE.split(".")[: len(PACKAGE.split(".")) - node.level + 1]
                base = ".".join(parts + ([base] if base else []))
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found.update(name for name in names if name in modules)
    found.discard(module_name(path))
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(FOLDER.glob("*.py"))
    modules = {module_name(p) for p in paths}
    return {module_name(p): imported(p, modules) for p in paths}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_finds_a_lazy_cycle(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_reads_imports_inside_functions_and_relative_ones(tmp_path):
    path = tmp_path / "x.py"
    path.write_text(
        "from nbhelpers.train.recipes import base\n"
        "def f():\n    from nbhelpers.train.recipes.registry import get_recipe\n"
        "    from .config import RecipeConfig\n"
    )
    modules = {f"{PACKAGE}.{m}" for m in ("base", "registry", "config", "data")}
    assert imported(path, modules) == {f"{PACKAGE}.{m}" for m in ("base", "registry", "config")}


def test_no_import_cycle_among_the_recipe_modules():
    graph = import_graph()
    assert {f"{PACKAGE}.base", f"{PACKAGE}.registry", f"{PACKAGE}.fusion"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("module", ["names", "registry"])
def test_the_registry_and_the_names_import_no_recipe_module(module):
    # base reads the names, every recipe reads the registry: they must stay below every recipe module.
    allowed = {f"{PACKAGE}.names"}
    assert import_graph()[f"{PACKAGE}.{module}"] <= allowed
