"""The gate's local guard: what an agent sharing the vault owner's OS user may never do,
whatever the rules say.

A tool that writes into the vault, or into hitl-vault's own code (the package, the
``hitl-vault`` command, the ``site-packages`` folders whose ``.pth`` files run at every
Python start), could approve the agent's own request; any tool, ``Read`` included, that
reaches ``.hitl/`` (the journal, the credentials) is denied too. This is a seat belt, not
a wall: a shell command can name a path in more ways than any text check can follow. The
wall is the service setup, where the vault belongs to another OS user ("Separate users"
in the docs). Imported before every tool call an agent makes, so it imports little.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from ..model import STATE_DIR
from ..policy.conditions import Where
from .fastgate import READ_ONLY  # one list: the fast path answers only for these
from .hookio import PATH_KEYS, Call, command_of

WHY = "an agent may not change the vault that approves its own requests"
# Keys of a tool's input that hold text, not a path; and tools that only read.
_TEXT_KEYS = frozenset(
    {"content", "new_string", "old_string", "new_source", "description", "prompt", "text",
     "body", "message", "query", "pattern", "title", "summary", "reason", "explanation"}
)  # fmt: skip
# Words that mark a shell command as reaching for hitl-vault itself (its CLI, its package,
# its journal folder), wherever the vault is.
_OWN_WORDS = ("hitl-vault", "hitl_vault", STATE_DIR)
# Names only a hitl-vault vault has: a command naming them reaches for one.
_VAULT_WORDS = ("Pending_Approval",)
# More keys whose value is a path, whatever it looks like (file servers, copy and move).
_MORE_PATH_KEYS = frozenset(
    {"paths", "source", "destination", "target", "dest", "src", "new_path", "old_path",
     "directory", "dir", "folder", "file", "filename", "output", "out"}
)  # fmt: skip
# Tools whose "pattern" is a glob over paths (Grep's is a regular expression over text).
_GLOB_TOOLS = frozenset({"Glob", "glob"})
_FILE_URI = re.compile(r"file:[^\s'\"<>`|;&)]*", re.IGNORECASE)
_STATE_PART = re.compile(rf"(?:^|/){re.escape(STATE_DIR)}(?:/|$)")
# What separates one shell word from the next, beyond spaces: operators and redirections.
_SHELL_SPLIT = re.compile(r"[\s;&|<>()`]+|\$\(")
_ASSIGNMENT = re.compile(r"^([A-Za-z_]\w*)=(.*)$")
_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")
_MOST_GLOBS = 64  # globs one command may have expanded (a long here-doc is full of `*`)


def own_code() -> tuple[Path, ...]:
    """hitl-vault's own code: the package, the ``hitl-vault`` command the hook runs, and
    the folders whose ``.pth`` files Python runs at start (``site-packages``)."""
    package = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
    found = {package}
    if os.path.basename(sys.argv[0]).startswith("hitl-vault"):
        found.add(os.path.realpath(sys.argv[0]))
    try:
        import site

        sites = [*site.getsitepackages(), site.getusersitepackages()]
    except (AttributeError, OSError):  # an old virtualenv's site module
        sites = []
    sites += [p for p in sys.path if os.path.basename(p) in ("site-packages", "dist-packages")]
    parent = os.path.dirname(package)
    if os.path.basename(parent) in ("site-packages", "dist-packages"):
        sites.append(parent)
    found |= {os.path.realpath(p) for p in sites if p}
    return tuple(Path(p) for p in sorted(found))


def file_path(value: str) -> str:
    """The path a ``file:`` URI names (percent-escapes decoded, any host dropped);
    ``value`` itself when it is not one."""
    if value[:5].lower() != "file:":
        return value
    from urllib.parse import unquote

    rest = value[5:]
    if rest.startswith("//"):
        rest = rest[2:]
        slash = rest.find("/")
        rest = rest[slash:] if slash >= 0 else "/"
    return unquote(rest.split("?", 1)[0].split("#", 1)[0])


def landing(path: str, cwd: Path) -> tuple[Path, ...]:
    """Where ``path`` (relative to ``cwd``, ``~`` expanded, a ``file:`` URI decoded) may
    land: with ``..`` taken after each link is followed, as the kernel opens it, and with
    ``..`` dropped first, as an agent that tidies paths (Node's ``path.resolve``) opens it."""
    joined = os.path.join(cwd, os.path.expanduser(file_path(path)))
    return (
        Path(os.path.realpath(joined)),
        Path(os.path.realpath(os.path.normpath(joined))),
    )


def inside(path: str, cwd: Path, places: tuple[Path, ...]) -> bool:
    """Whether ``path`` may land in any of ``places`` (each resolved); a path that cannot
    be resolved counts as inside (a NUL, a name too long: fail closed)."""
    try:
        targets = landing(path, cwd)
    except (ValueError, OSError):
        return True
    return any(t == p or t.is_relative_to(p) for t in targets for p in places)


def where_of(call: Call) -> Where:
    """The call's project (its folder) and every path it names (a glob's fixed leading
    folders), each resolved as :func:`landing` does, for the rules' ``path:`` conditions.
    A path that cannot be resolved is kept as ``""``: inside no project."""
    named = [*_paths(call.params), *_uris(call.params)]
    if call.tool in _GLOB_TOOLS and isinstance(call.params.get("pattern"), str):
        fixed = []
        for part in call.params["pattern"].split("/"):
            if any(c in part for c in "*?[{"):
                break
            fixed.append(part)
        named.append("/".join(fixed) or ("/" if call.params["pattern"].startswith("/") else "."))
    paths: list[str] = []
    for value in named:
        try:
            paths += [str(p) for p in landing(value, call.cwd)]
        except (ValueError, OSError):
            paths.append("")
    return Where(os.path.realpath(call.cwd), tuple(dict.fromkeys(paths)))


def guard(call: Call, root: Path, given: Path) -> str | None:
    """Why the call must be denied whatever the rules say (None: let the rules decide).

    ``root`` is the vault resolved; ``given`` as configured.
    """
    state = (root / STATE_DIR,)
    for value in (*_paths(call.params), *_uris(call.params)):
        if inside(value, call.cwd, state):
            return f"{call.tool} would reach {value}, hitl-vault's journal folder: {WHY}"
    if call.tool in READ_ONLY:
        for key in ("pattern", "glob") if call.tool in _GLOB_TOOLS else ("glob",):
            pattern = call.params.get(key)
            if isinstance(pattern, str) and _STATE_PART.search(pattern):
                return f"{call.tool} would reach {pattern}, hitl-vault's journal folder: {WHY}"
        return None
    guarded = (root, *own_code())
    for value in (*_paths(call.params), *_uris(call.params)):
        if inside(value, call.cwd, guarded):
            return f"{call.tool} would write {value}, inside the hitl-vault vault: {WHY}"
    command = command_of(call.params)
    return (_shell(call, command, root, given, guarded) or None) if command else None


def _shell(call: Call, command: str, root: Path, given: Path, guarded: tuple[Path, ...]) -> str:
    """Why a shell command may reach the vault or hitl-vault ("" if nothing shows)."""
    if inside(".", call.cwd, (root,)):
        return f"{call.tool} would run inside the hitl-vault vault ({call.cwd}): {WHY}"
    flat = re.sub(r"/(?:\./)+|/{2,}", "/", command)  # /code//vault, /code/./vault
    bare = re.sub(r"[\"'\\]", "", flat)  # h''itl-vault, "Pend"ing_Approval
    for text in (flat, bare):
        for word in (*_OWN_WORDS, *_VAULT_WORDS):
            if word in text:
                return f"{call.tool} names {word!r} in its command: {WHY}"
        for pattern in (*_spellings(root, given, call.cwd), _component(root.name)):
            if pattern.search(text):
                return f"{call.tool} names the hitl-vault vault in its command: {WHY}"
    for place, word in _words(bare, call.cwd):
        if inside(place, call.cwd, guarded):
            return f"{call.tool} would reach {word}, inside the hitl-vault vault: {WHY}"
    return ""


def _words(command: str, cwd: Path) -> Iterator[tuple[str, str]]:
    """(absolute path, as written) of each word of ``command`` that may name a file: the
    folders it ``cd``s into, and its words that look like paths, following those ``cd``s,
    simple ``NAME=value`` variables, ``--option=value`` and globs."""
    here = str(cwd)
    names: dict[str, str] = {}
    seen: set[tuple[str, str]] = set()
    globs = _MOST_GLOBS
    words = [w for w in _SHELL_SPLIT.split(command) if w]
    for n, word in enumerate(words):
        assigned = _ASSIGNMENT.match(word)
        if assigned:
            names[assigned[1]] = assigned[2]
            word = assigned[2]
        word = _VARIABLE.sub(lambda m: names.get(m[1] or m[2], m[0]), word)
        word = os.path.expandvars(word)
        if n and words[n - 1] in ("cd", "pushd"):
            here = os.path.join(here, os.path.expanduser(word))
            yield here, word
            continue
        for candidate in (word, word.partition("=")[2]):
            if not candidate or (here, candidate) in seen:
                continue
            seen.add((here, candidate))
            if "/" in candidate or candidate.startswith((".", "~")):
                yield os.path.join(here, os.path.expanduser(candidate)), word
            if globs and any(c in candidate for c in "*?["):
                globs -= 1
                yield from ((m, word) for m in _glob(here, os.path.expanduser(candidate)))


def _glob(here: str, pattern: str, limit: int = 200) -> list[str]:
    """What ``pattern``, and each of its leading folders that holds a wildcard, matches
    from the folder ``here`` (at most ``limit`` names each): ``../v*t/Approved/new.md``
    names the vault even before ``new.md`` exists."""
    import glob
    import itertools

    parts = pattern.split("/")
    prefixes = ["/".join(parts[: i + 1]) for i, p in enumerate(parts) if any(c in p for c in "*?[")]
    found: list[str] = []
    for prefix in dict.fromkeys([*prefixes, pattern]):
        try:
            matches = glob.iglob(prefix or "/", root_dir=here, include_hidden=True)
            found += [os.path.join(here, f) for f in itertools.islice(matches, limit)]
        except (OSError, ValueError, re.error):
            continue
    return found


def _paths(value: Any, key: str = "") -> list[str]:
    """The strings of a tool's input that could be paths it writes: every value of a key
    that names a path, whatever it holds, and any other value that looks like one (not its
    text: ``content``, ``new_string``, …)."""
    if isinstance(value, Mapping):
        return [p for k, v in value.items() for p in _paths(v, str(k))]
    if isinstance(value, list):
        return [p for v in value for p in _paths(v, key)]
    if not isinstance(value, str) or not value:
        return []
    if key in PATH_KEYS or key in _MORE_PATH_KEYS:
        return [value]
    if key in _TEXT_KEYS or key in ("command", "cmd") or "\n" in value:
        return []
    return [value] if "/" in value or value.startswith(("~", ".")) else []


def _uris(value: Any) -> list[str]:
    """Every ``file:`` URI anywhere in a tool's input, text included."""
    if isinstance(value, Mapping):
        return [u for v in value.values() for u in _uris(v)]
    if isinstance(value, list):
        return [u for v in value for u in _uris(v)]
    if isinstance(value, str) and "file:" in value.lower():
        return _FILE_URI.findall(value)
    return []


def _spellings(root: Path, given: Path, cwd: Path) -> list[re.Pattern[str]]:
    """The ways a shell command can name the vault: absolute (as given and resolved),
    from the home folder (``~/``, ``$HOME/``), and relative to the call's folder."""
    absolute = {str(root), str(given)}
    home = Path(os.path.expanduser("~"))
    forms = set(absolute)
    for path in absolute:
        if Path(path).is_relative_to(home) and Path(path) != home:
            rel = Path(path).relative_to(home).as_posix()
            forms |= {f"~/{rel}", f"$HOME/{rel}", f"${{HOME}}/{rel}"}
    for path in absolute:
        rel = os.path.relpath(path, cwd)
        forms |= {rel, f"./{rel}"}
    # Not part of a longer name on either side (``vault`` is not ``myvault`` or ``vaults``).
    return [re.compile(rf"(?<![\w.~/-]){re.escape(f)}(?![\w.-])") for f in sorted(forms)]


def _component(name: str) -> re.Pattern[str]:
    """The vault's folder name next to a slash (``cd .. && sed … vault/Pending_Approval``);
    alone, a word like ``vault`` may mean anything."""
    word = re.escape(name)
    return re.compile(rf"(?:(?<![\w.-]){word}/|/{word}(?![\w.-]))")
