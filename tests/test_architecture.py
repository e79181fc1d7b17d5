"""The house rules of docs/architecture.md, checked on the source: imports point down the layers
(imports inside functions included), no import circle, short modules and functions, a small
package root, and test files named after what they test."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "calibench"
METHODS = ROOT / "methods"
TESTS = ROOT / "tests"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("cli",),
    ("report", "bench"),
    ("training",),
    ("evaluation",),
    ("store",),
    ("config", "shift"),
    ("data", "models", "methods"),
    ("plugins",),
    ("method", "views", "device"),
    ("spec",),
    ("settings",),
    ("registry",),
    ("errors",),
)
"""Top to bottom: a module may import its own room, and rooms of lower layers only. Rooms of one
layer are independent of each other. ``calibench`` itself (the public face) is exempt: it loads
its names lazily, and plugins import it."""

MAX_MODULE_LINES = 450
MAX_FUNCTION_LINES = 60
MAX_ROOT_MODULES = 12
WHOLE_REPOSITORY_TESTS = {"architecture", "packaging", "startup"}
"""Test files named after no module, because they check the repository as a whole: these rules,
the wheel, the torch-free start. ``test_readme*.py`` also qualify: each runs what a page of docs/
shows."""


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    for path in sorted(METHODS.glob("*.py")):
        name = "calibench.methods" + ("" if path.stem == "__init__" else f".{path.stem}")
        found[name] = path
    return found


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The calibench module an imported name lives in (a module, or its package's name)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in ast.walk(node):
                if hasattr(child, "lineno"):
                    lines.add(child.lineno)
    return lines


def imports_of(module: str) -> Iterator[tuple[str, int]]:
    """(imported calibench module, line) for every import of ``module``, function-level too."""
    path = MODULES[module]
    tree = ast.parse(path.read_text())
    skip = _type_checking_lines(tree)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if getattr(node, "lineno", None) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            names = [f"{base}.{alias.name}" for alias in node.names] or [base]
        else:
            continue
        for name in names:
            if name.split(".")[0] != "calibench":
                continue
            target = _resolve(name)
            if target and target != module:
                yield target, node.lineno


def room(module: str) -> str:
    """``calibench.training.loop`` -> ``training``; ``calibench`` -> ``""``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer(module: str) -> int | None:
    for index, rooms in enumerate(LAYERS):
        if room(module) in rooms:
            return index
    return None


def test_every_room_has_a_layer():
    unplaced = sorted({room(m) for m in MODULES if room(m) and layer(m) is None})
    assert not unplaced, f"rooms missing from LAYERS: {unplaced}"


def test_imports_point_down():
    wrong = []
    for module in MODULES:
        if layer(module) is None:
            continue
        for target, line in imports_of(module):
            if target == "calibench":
                if room(module) != "methods":
                    wrong.append(f"{module}:{line} imports the package face calibench")
                continue
            same_room = room(target) == room(module)
            if not same_room and layer(target) <= layer(module):
                wrong.append(f"{module}:{line} imports {target}")
    assert not wrong, "imports that do not point down:\n" + "\n".join(wrong)


def test_no_import_circle():
    graph = {m: {t for t, _ in imports_of(m) if t != "calibench"} for m in MODULES}
    seen: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        seen[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in seen and (circle := visit(nxt)):
                return circle
        seen[node] = 2
        stack.pop()
        return None

    for module in MODULES:
        if module not in seen and (circle := visit(module)):
            pytest.fail("import circle: " + " -> ".join(circle))


def test_modules_are_short():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > 450}
    assert not long, f"modules over {MAX_MODULE_LINES} lines: {long}"


def test_functions_are_short():
    long = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = node.end_lineno - node.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(long)


def test_package_root_is_small():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, root


def commands() -> list[str]:
    """The ``calibench`` commands: cli/parser.py declares one ``add_<command>`` per command."""
    tree = ast.parse((PACKAGE / "cli" / "parser.py").read_text())
    found = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
    return [name.removeprefix("add_") for name in found if name.startswith("add_")]


def test_every_test_file_names_what_it_tests():
    """Rule 5: tests/test_<name>.py, where <name> is a module (``loop``, a room such as
    ``training``, a method such as ``crl``), a room and its module (``training_loop``), a
    command tested end to end (``cli_<command>``), or a whole-repository check."""
    names = {f"cli_{command}" for command in commands()} | WHOLE_REPOSITORY_TESTS
    for module in MODULES:
        leaf = module.rpartition(".")[2]
        names |= {leaf, f"{room(module)}_{leaf}"}
    stray = [
        path.name
        for path in sorted(TESTS.glob("test_*.py"))
        if path.stem.removeprefix("test_") not in names and not path.stem.startswith("test_readme")
    ]
    assert not stray, f"test files named after no module (docs/architecture.md, rule 5): {stray}"
