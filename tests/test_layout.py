"""The package's shape, held by walking its AST: where each outside library may be
imported, and that no modules import each other in a circle."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import hitl_vault

PACKAGE = Path(hitl_vault.__file__).parent

# Each outside library lives in one room (a module, or the modules of one job).
HOMES = {
    "click": {"cli", "clibase", "cliagents"},
    "watchdog": {"watcher"},
    "sqlite3": {"journal", "journal_read", "journal_book", "journal_outbox"},
    "yaml": {"noteyaml", "rulesfile", "notifyconf", "yamlnodes"},
    "frontmatter": {"notefile"},
    "apprise": {"sending"},
    "mcp": {"mcpserver"},  # the optional extra hitl-vault[mcp]; cli.py imports it lazily
}
DECLARED = {"click", "watchdog", "yaml", "frontmatter", "apprise"}  # pyproject dependencies


def _modules() -> dict[str, ast.Module]:
    return {
        path.stem: ast.parse(path.read_text(encoding="utf-8"), str(path))
        for path in sorted(PACKAGE.glob("*.py"))
    }


def _imports(tree: ast.Module) -> Iterator[tuple[str, int]]:
    """(top-level name, level) of every import anywhere in the module (also in functions)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name.split(".")[0], 0
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from .x import y / from . import x
                if node.module:
                    yield node.module.split(".")[0], node.level
                else:
                    for alias in node.names:
                        yield alias.name, node.level
            elif node.module:
                yield node.module.split(".")[0], 0


def test_each_outside_library_is_imported_only_in_its_home() -> None:
    """click in the CLI, watchdog in the watcher, sqlite3 in the journal, and so on."""
    strays = [
        f"{name}.py imports {lib} (its home: {', '.join(sorted(HOMES[lib]))})"
        for name, tree in _modules().items()
        for lib, level in _imports(tree)
        if level == 0 and lib in HOMES and name not in HOMES[lib]
    ]
    assert strays == []


def test_every_declared_library_is_used() -> None:
    """A dependency in pyproject.toml that nothing imports is dead weight for every user."""
    used = {lib for tree in _modules().values() for lib, level in _imports(tree) if level == 0}
    assert DECLARED - used == set()


def test_no_modules_import_each_other_in_a_circle() -> None:
    """The daemon is built on the vault, never the other way round: the graph has no cycle."""
    modules = _modules()
    graph = {
        name: {lib for lib, level in _imports(tree) if level and lib in modules and lib != name}
        for name, tree in modules.items()
    }
    done: set[str] = set()
    path: list[str] = []

    def visit(name: str) -> list[str] | None:
        if name in path:
            return [*path[path.index(name) :], name]
        if name in done:
            return None
        path.append(name)
        for other in sorted(graph[name]):
            circle = visit(other)
            if circle:
                return circle
        path.pop()
        done.add(name)
        return None

    circles = [c for name in sorted(graph) if (c := visit(name))]
    assert circles == [], " -> ".join(circles[0])


def test_the_layout_test_sees_imports_inside_functions_too() -> None:
    """The checks above would pass vacuously if the walk missed lazy imports: it does not."""
    tree = ast.parse("def f():\n    import yaml\n    from .engine import Engine\n")
    assert list(_imports(tree)) == [("yaml", 0), ("engine", 1)]
