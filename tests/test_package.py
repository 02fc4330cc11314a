"""The package as a whole: no import cycles, small modules and functions, docstring
examples that run, type hints on the public API."""

import ast
import doctest
import importlib
import inspect
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
    assert graph["tftransfer.models.bases"] >= {"tftransfer.models.hub",
                                                "tftransfer.models.features"}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


#: The layers, lowest first: a module may import its own layer and the ones below.
#: The modules directly in `tftransfer/` (errors, defaults, metrics, ...) are
#: the ground floor that every layer stands on; `tftransfer` itself is the face.
LAYERS = ("data", "models", "training", "export", "reports", "cli")


def layer_of(name):
    """The index of a module's layer: -1 for the ground floor and the face."""
    parts = name.split(".")
    return LAYERS.index(parts[1]) if len(parts) > 2 or (
        len(parts) == 2 and parts[1] in LAYERS) else -1


def upward_imports(graph):
    """`(importer, imported)` pairs where a module imports from a higher layer."""
    return sorted((name, target) for name, targets in graph.items() for target in targets
                  if name != "tftransfer" and layer_of(target) > layer_of(name))


def test_upward_imports_are_found():
    graph = {"tftransfer.data.sources": {"tftransfer.models.builder", "tftransfer.errors"},
             "tftransfer.cli.commands": {"tftransfer.reports.evaluation"},
             "tftransfer.errors": {"tftransfer.data"}}
    assert upward_imports(graph) == [("tftransfer.data.sources", "tftransfer.models.builder"),
                                     ("tftransfer.errors", "tftransfer.data")]


def test_every_module_is_in_a_layer_or_on_the_ground_floor():
    packages = {path.parent.name for path in MODULES if path.parent != PACKAGE}
    assert packages <= set(LAYERS), packages - set(LAYERS)


def test_no_module_imports_upwards_across_the_layers():
    graph = {name: imports_of(name) for name in NAMES}
    assert upward_imports(graph) == []


def test_no_module_is_over_about_500_lines():
    sizes = {name: len(path.read_text().splitlines()) for name, path in NAMES.items()}
    assert {name: size for name, size in sizes.items() if size > 520} == {}


def function_lengths(source):
    """`{name: lines}` of every function in `source`, not counting its docstring."""
    lengths = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            first = node.body[0]
            if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                    and isinstance(first.value.value, str)):
                lines -= first.end_lineno - first.lineno + 1
            lengths[f"{node.name}:{node.lineno}"] = lines
    return lengths


def test_function_lengths_leave_the_docstring_out():
    source = 'def f(a):\n    """One.\n\n    Two.\n    """\n    return a\n\n\ndef g():\n    pass\n'
    assert function_lengths(source) == {"f:1": 2, "g:9": 2}


def test_no_function_is_over_60_lines():
    long = {f"{name}.{function}": lines
            for name, path in NAMES.items()
            for function, lines in function_lengths(path.read_text()).items() if lines > 60}
    assert long == {}


def test_fine_tune_takes_at_most_12_parameters():
    import tftransfer

    assert len(inspect.signature(tftransfer.fine_tune).parameters) <= 12
    assert "fine_tune" not in inspect.signature(tftransfer.fine_tune).parameters


def test_the_public_functions_and_classes_have_type_hints():
    import tftransfer

    missing = []
    for name in tftransfer.__all__:
        value = getattr(tftransfer, name)
        if inspect.ismodule(value):  # Its own public functions (`tftransfer.distribute`).
            callables = [member for key, member in vars(value).items()
                         if inspect.isfunction(member) and not key.startswith("_")
                         and member.__module__ == value.__name__]
        else:
            callables = [value] if inspect.isfunction(value) else [
                member for key, member in vars(value).items()
                if inspect.isfunction(member) and not key.startswith("_")]
        if inspect.isclass(value) and not hasattr(value, "__dataclass_fields__"):
            callables.append(value.__init__)
        for function in callables:
            signature = inspect.signature(function)
            params = [p for p in signature.parameters.values() if p.name not in ("self", "cls")
                      and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
            if any(p.annotation is p.empty for p in params) or (
                    signature.return_annotation is signature.empty
                    and function.__name__ != "__init__"):
                missing.append(f"{name}.{function.__name__}" if function is not value else name)
    assert missing == []


@pytest.mark.parametrize("name", sorted(NAMES))
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0


def test_the_command_line_parser_loads_neither_tensorflow_nor_keras():
    import subprocess
    import sys

    code = ("import sys; from tftransfer import cli; cli.build_parser(); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"


def test_the_public_names_load_on_first_use():
    import tftransfer

    assert set(tftransfer.__all__) <= set(dir(tftransfer))
    assert callable(tftransfer.compare) and tftransfer.distribute.__name__ == \
        "tftransfer.training.distribute"
    with pytest.raises(AttributeError):
        tftransfer.no_such_name
