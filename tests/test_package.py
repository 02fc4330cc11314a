"""The package as a whole: no import cycles, small modules, docstring examples that run."""

import ast
import doctest
import importlib
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "tftransfer"
MODULES = sorted(PACKAGE.rglob("*.py"))


def module_name(path):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


NAMES = {module_name(path): path for path in MODULES}


def imports_of(name):
    """The tftransfer modules that module `name` imports, at any depth of its code."""
    tree = ast.parse(NAMES[name].read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                submodule = f"{node.module}.{alias.name}"
                found.add(submodule if submodule in NAMES else node.module)
    return {module for module in found if module in NAMES and module != name}


def find_cycle(graph):
    """Returns one cycle of `graph` as a list of nodes, or `None`."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_the_package_has_no_import_cycle():
    graph = {name: imports_of(name) for name in NAMES}
    assert graph["tftransfer.bases"] >= {"tftransfer.hub", "tftransfer.features"}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_module_is_over_about_500_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in NAMES.items()}
    assert {name: size for name, size in sizes.items() if size > 520} == {}


@pytest.mark.parametrize("name", sorted(NAMES))
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
