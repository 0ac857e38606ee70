"""The package's shape, held by walking its AST: a folder per job, what each folder may never
import, where each outside library may be imported, and no modules importing each other in a
circle. The architecture page of the docs explains the rooms; this test keeps them honest."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import hitl_vault

PACKAGE = Path(hitl_vault.__file__).parent

# The rooms (sub-packages) by job; the rest of the package is the small base beneath them.
ROOMS = {
    "policy": "rules and what they decide, pure",
    "journal": "journal backends, the chain, replay, the daemon lock",
    "notes": "reading, editing, rendering and syncing request notes",
    "execute": "carrying out an approved action",
    "notify": "who to tell, what to say, sending",
    "engine": "every operation on requests, under the Vault",
    "daemon": "the loop and its parts",
    "agents": "hook formats, the gate, hook install, MCP",
    "access": "people and credentials, kept in the store",
    "serve": "the service: HTTP API, MCP over HTTP, the Unix socket",
    "web": "the pages people decide on: templates, stylesheet, safe headers",
    "cli": "the hitl-vault command",
}
_FACADE = {"engine", "vault", "approval"}
_UP = {"access", "serve", "web"}  # the service's rooms, above everything but the CLI
# What each room may never import (a room or a base module), so arrows only point down.
NEVER = {
    "policy": {*_UP, "journal", "notes", "execute", "notify", "daemon", "agents", "cli", *_FACADE},
    "journal": {*_UP, "notes", "execute", "notify", "daemon", "agents", "cli", *_FACADE},
    "notes": {*_UP, "journal", "execute", "notify", "daemon", "agents", "cli", *_FACADE},
    "execute": {*_UP, "journal", "notes", "notify", "daemon", "agents", "cli", *_FACADE},
    "notify": {*_UP, "journal", "notes", "execute", "daemon", "agents", "cli", *_FACADE},
    "engine": {*_UP, "daemon", "agents", "cli", "vault", "approval"},
    "daemon": {*_UP, "agents", "cli", "vault", "approval"},
    "agents": {*_UP, "cli", "daemon"},
    "access": {"serve", "web", "cli", "notes", "execute", "daemon", "agents", *_FACADE},
    "serve": {"cli"},
    # The pages sit beside the service, which mounts them; they decide through it.
    "web": {"cli", "daemon", "agents", "journal", "notes", "execute", "notify"},
    "base": {*_UP, "daemon", "agents", "cli"},  # except the facade's lazy doors, listed below
}
# The base's only doors upward, each imported inside a function when it is used.
DOORS = {
    ("vault", "daemon"),  # Vault.run starts the daemon
    ("__main__", "cli"),  # python -m hitl_vault
}

# Each outside library lives in one room (a module, or the modules of one job).
HOMES = {
    "click": {"cli."},
    "watchdog": {"watcher"},
    "sqlite3": {"journal."},
    "yaml": {
        "notes.strict_yaml",
        "policy.rulesfile",
        "policy.actionsfile",
        "policy.yamlnodes",
        "notify.config",
    },
    "frontmatter": {"notes.file"},
    "apprise": {"notify.send"},
    # the optional extra hitl-vault[mcp], imported when it runs (stdio, and over HTTP at /mcp)
    "mcp": {"agents.mcp_tools", "agents.mcp_server", "agents.mcp_http"},
    # the optional extra hitl-vault[postgres]: the driver stays behind the store's seam
    "psycopg": {"journal.pg_db", "journal.pg_watch", "journal.pg_migrate", "journal.pg_lease"},
    "starlette": {"serve.", "web."},
    "jinja2": {"web.render"},
    "uvicorn": {"serve."},
}
# pyproject dependencies
DECLARED = {
    "click",
    "watchdog",
    "yaml",
    "frontmatter",
    "apprise",
    "starlette",
    "uvicorn",
    "jinja2",
}


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def _edges() -> dict[str, tuple[tuple[str, bool], ...]]:
    """Every module of the package, with what it imports (see :func:`_imports`). Parsed
    once: each check below reads the same package, and parsing it is most of their time."""
    return {
        (name := _name(path)): tuple(
            _imports(name, ast.parse(path.read_text(encoding="utf-8"), str(path)))
        )
        for path in sorted(PACKAGE.rglob("*.py"))
        if "vault_template" not in path.parts
    }


def _imports(name: str, tree: ast.Module) -> Iterator[tuple[str, bool]]:
    """(module, inside the package?) of every import anywhere in the module (also in
    functions); a package-relative import is resolved to its dotted name in the package."""
    here = name.split(".") if name and (PACKAGE / name.replace(".", "/")).is_dir() else []
    if not here:
        here = name.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, False
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - node.level + 1]
                if node.module:
                    yield ".".join([*base, node.module]), True
                else:
                    for alias in node.names:
                        yield ".".join([*base, alias.name]), True
            elif node.module:
                yield node.module, False


def _room(module: str) -> str:
    top = module.split(".")[0]
    return top if top in ROOMS else "base"


def test_each_room_is_a_folder_that_says_what_it_holds() -> None:
    """A newcomer finds a job from the folder names; each folder's docstring says what it is."""
    for room in ROOMS:
        init = PACKAGE / room / "__init__.py"
        assert init.is_file(), f"hitl_vault/{room}/ is missing"
        assert ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))), init


def test_every_room_is_installed() -> None:
    """pip installs each sub-package: pyproject.toml lists them all (a room left out of the list
    works from a checkout and fails on every non-editable install)."""
    import tomllib

    pyproject = tomllib.loads((PACKAGE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    rooms = {f"hitl_vault.{p.parent.name}" for p in PACKAGE.glob("*/__init__.py")}
    rooms.discard("hitl_vault.vault_template")  # an installed copy of vault_template/
    assert rooms - listed == set()


def test_no_room_imports_what_it_may_never_import() -> None:
    """policy is pure; notes never reach the daemon; the base never imports the rooms above it."""
    strays = []
    for name, edges in _edges().items():
        room = _room(name)
        for target, inside in edges:
            if not inside or not target:
                continue
            top = target.split(".")[0]
            if room == "base" and (name, top) in DOORS:
                continue
            if top in NEVER.get(room, set()) and top != room:
                strays.append(f"{name} imports {target} ({room}/ may never import {top})")
    assert strays == []


def test_each_outside_library_is_imported_only_in_its_home() -> None:
    """click in the CLI, watchdog in the watcher, sqlite3 in the journal, and so on."""
    strays = [
        f"{name} imports {lib} (its home: {', '.join(sorted(HOMES[lib]))})"
        for name, edges in _edges().items()
        for target, inside in edges
        if not inside and (lib := target.split(".")[0]) in HOMES
        if not any(name == h or (h.endswith(".") and name.startswith(h)) for h in HOMES[lib])
    ]
    assert strays == []


def test_every_declared_library_is_used() -> None:
    """A dependency in pyproject.toml that nothing imports is dead weight for every user."""
    used = {
        target.split(".")[0]
        for name, edges in _edges().items()
        for target, inside in edges
        if not inside
    }
    assert DECLARED - used == set()


def test_no_modules_import_each_other_in_a_circle() -> None:
    """The daemon is built on the vault, never the other way round: the graph has no cycle."""
    modules = _edges()
    graph: dict[str, set[str]] = {}
    for name, edges in modules.items():
        graph[name] = set()
        for target, inside in edges:
            # "from .policy import rules" names a module; "from .model import Risk" a name in one
            while inside and target and target not in modules:
                target = target.rpartition(".")[0]
            if inside and target and target != name and target in modules:
                graph[name].add(target)
    for name in list(graph):  # a package's __init__ is not an arrow to each of its modules
        graph[name] = {t for t in graph[name] if not name.startswith(t + ".")}
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
    tree = ast.parse("def f():\n    import yaml\n    from ..engine import Engine\n")
    assert list(_imports("daemon.loop", tree)) == [("yaml", False), ("engine", True)]


def test_no_module_outgrows_its_job() -> None:
    """A module past ~420 lines has more than one job: cut it by job (450 leaves room to edit)."""
    big = {
        name: n
        for path in PACKAGE.rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > 450
        for name in [_name(path)]
    }
    assert big == {}
