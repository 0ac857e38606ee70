"""The agent gate's pure part: a tool call and the gate's answer, reading the PreToolUse
input the agents share, and the guard that keeps agents out of the vault.

What differs between agents (their fields, their answers, their settings) is in
:mod:`hitl_vault.agents.formats`, one record each. Nothing here reads the rules or the
journal (that is :mod:`hitl_vault.agents.gate`); this module is imported before every
tool call an agent makes, so it imports little.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..params import clean_params

# What a hook answers: (exit code, stdout, stderr).
Reply = tuple[int, str, str]

# Keys of a tool's input that hold text, not a path; and tools that only read.
_TEXT_KEYS = frozenset(
    {"content", "new_string", "old_string", "new_source", "description", "prompt", "text",
     "body", "message", "query", "pattern", "title", "summary", "reason", "explanation"}
)  # fmt: skip
_READ_ONLY = frozenset(
    {"Read", "Glob", "Grep", "LS", "NotebookRead", "WebFetch", "WebSearch", "TodoWrite",
     "read_file", "read_many_files", "glob", "search_file_content", "list_directory"}
)  # fmt: skip
# Words that mark a shell command as reaching for hitl-vault itself (its CLI, its package,
# its journal folder), wherever the vault is.
_OWN_WORDS = ("hitl-vault", "hitl_vault", ".hitl")
# Names only a hitl-vault vault has: a command naming them reaches for one.
_VAULT_WORDS = ("Pending_Approval",)
# Keys of a tool's input that name the file it works on (also the request's summary).
_PATH_KEYS = ("file_path", "notebook_path", "path", "filePath", "target_file", "absolute_path")
# More keys whose value is a path, whatever it looks like (file servers, copy and move).
_MORE_PATH_KEYS = frozenset(
    {"paths", "source", "destination", "target", "dest", "src", "new_path", "old_path",
     "directory", "dir", "folder", "file", "filename", "output", "out"}
)  # fmt: skip


def _own_code() -> tuple[Path, ...]:
    """hitl-vault's own code: the package, and the ``hitl-vault`` command the hook runs."""
    found = [Path(os.path.realpath(os.path.dirname(__file__)))]
    if os.path.basename(sys.argv[0]).startswith("hitl-vault"):
        found.append(Path(os.path.realpath(sys.argv[0])))
    return tuple(found)


class BadInput(Exception):
    """The hook's input cannot be read as a tool call: the gate fails closed (exit 2)."""


class Call:
    """One tool call an agent is about to make, as its hook described it.

    A plain class, not a dataclass: this module loads before every tool call.
    """

    __slots__ = ("agent", "cwd", "extra", "params", "session", "tool")

    def __init__(
        self,
        agent: str,  # claude-code, cursor, ...
        session: str,
        tool: str,  # the action: Bash, Write, mcp__github__create_pull_request, ...
        params: dict[str, Any],  # the tool's input
        cwd: Path,
        extra: Mapping[str, str] | None = None,  # tool_use_id, permission_mode, ...
    ) -> None:
        self.agent = agent
        self.session = session
        self.tool = tool
        self.params = params
        self.cwd = cwd
        self.extra: Mapping[str, str] = extra or {}

    @property
    def requested_by(self) -> str:
        return f"{self.agent}:{self.session}"

    @property
    def key(self) -> str:
        """The same session, folder, tool and input give the same key (an identical retry):
        an approval given for a command in one folder is never handed to it in another."""
        canonical = json.dumps(
            [self.agent, self.session, str(self.cwd), self.tool, self.params],
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def summary(self) -> str:
        """A title for the note: the command a shell tool runs, the file a file tool writes."""
        command = _command(self.params)
        target = next(
            (self.params[k] for k in _PATH_KEYS if isinstance(self.params.get(k), str)), ""
        )
        shown = f"{self.tool}: {command}" if command else f"{self.tool} {target}" if target else ""
        shown = " ".join(shown.split())
        return shown if len(shown) <= 120 else shown[:119] + "…"

    @property
    def context(self) -> str:
        """What the approver reads under ``## Context``: who asks, from where."""
        lines = [f"{self.agent} asks to run the tool {self.tool} in {self.cwd}.", ""]
        lines.append(f"- session: {self.session}")
        lines += [f"- {k}: {v}" for k, v in self.extra.items()]
        description = self.params.get("description")
        if isinstance(description, str) and description.strip():
            lines += ["", f"The agent describes it as: {description.strip()}"]
        lines += ["", "Approve it, and the agent's hook lets the call run (with the params as "
                  "you leave them); reject it, and the agent is told your reason."]  # fmt: skip
        return "\n".join(lines)


class Answer:
    """What the gate says about a call: allow or deny, why, and the input to run instead
    (the params as the human left them, if edited)."""

    __slots__ = ("allow", "reason", "updated")

    def __init__(self, allow: bool, reason: str = "", updated: dict[str, Any] | None = None):
        self.allow = allow
        self.reason = reason
        self.updated = updated

    def __repr__(self) -> str:
        return f"Answer(allow={self.allow}, reason={self.reason!r}, updated={self.updated!r})"


def _field(data: Mapping[str, Any], *names: str) -> Any:
    return next((data[n] for n in names if data.get(n) not in (None, "")), None)


def read_object(raw: bytes) -> dict[str, Any]:
    """The JSON object on a hook's stdin; :class:`BadInput` if it is not one."""
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BadInput(f"the hook input on stdin is not JSON ({str(e)[:120]})") from None
    if not isinstance(data, dict):
        raise BadInput(f"the hook input is JSON {type(data).__name__}, not an object")
    return data


def tool_call(data: Mapping[str, Any], agent: str) -> Call:
    """The tool call in a PreToolUse hook's input, as the agents share it: ``tool_name``,
    ``tool_input``, ``session_id`` (Cursor: ``conversation_id``) and ``cwd`` (Cursor:
    the first of ``workspace_roots``); :class:`BadInput` saying what is missing."""
    tool = data.get("tool_name")
    if not isinstance(tool, str) or not tool:
        raise BadInput('the hook input has no "tool_name" (is this a PreToolUse hook?)')
    tool_input = data.get("tool_input")
    if not isinstance(tool_input, dict):
        raise BadInput(
            f'the hook input\'s "tool_input" is {type(tool_input).__name__}, not an object'
        )
    try:
        params = clean_params(tool_input, "tool_input")
    except UsageError as e:
        raise BadInput(str(e)) from None
    session = _field(data, "session_id", "conversation_id")
    if not isinstance(session, str):
        raise BadInput('the hook input has no "session_id" (text)')
    roots = data.get("workspace_roots")
    cwd = _field(data, "cwd") or (roots[0] if isinstance(roots, list) and roots else None)
    if not isinstance(cwd, str) or not os.path.isabs(cwd):
        raise BadInput('the hook input has no "cwd" (an absolute path)')
    extra = {
        k: data[k]
        for k in ("tool_use_id", "permission_mode", "transcript_path")
        if isinstance(data.get(k), str) and data[k]
    }
    return Call(agent, session, tool, params, Path(cwd), extra)


def _no_constant(word: str) -> None:
    raise ValueError(f"{word} is not JSON")


# --- the guard ------------------------------------------------------------------------


def _command(params: Mapping[str, Any]) -> str:
    """The shell command a tool's input holds ("" if none): text, or an argv list."""
    command = params.get("command", params.get("cmd"))
    if isinstance(command, list):
        return " ".join(str(word) for word in command)
    return command if isinstance(command, str) else ""


def _inside(path: str, cwd: Path, root: Path) -> bool:
    """Whether ``path`` (relative to ``cwd``, ``~`` expanded) lands in ``root`` once every
    link on the way is followed; a path that cannot be resolved counts as inside."""
    try:
        target = Path(os.path.realpath(os.path.normpath(cwd / Path(path).expanduser())))
    except (ValueError, OSError):  # a NUL, a name too long: fail closed
        return True
    return target == root or target.is_relative_to(root)


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


def guard(call: Call, root: Path, given: Path) -> str | None:
    """Why the call must be denied whatever the rules say (None: let the rules decide).

    A tool that writes a file into the vault (``.hitl/`` included), or a shell command
    that names the vault, its journal folder or hitl-vault itself, could approve the
    agent's own request. ``root`` is the vault resolved; ``given`` as configured.
    """
    why = "an agent may not change the vault that approves its own requests"
    if call.tool not in _READ_ONLY:  # any path it is given: file_path, source, destination…
        for value in _paths(call.params):
            if any(_inside(value, call.cwd, place) for place in (root, *_own_code())):
                return f"{call.tool} would write {value}, inside the hitl-vault vault: {why}"
    command = _command(call.params)
    if not command:
        return None
    if _inside(".", call.cwd, root):
        return f"{call.tool} would run inside the hitl-vault vault ({call.cwd}): {why}"
    flat = re.sub(r"/(?:\./)+|/{2,}", "/", command)  # /code//vault, /code/./vault
    for word in (*_OWN_WORDS, *_VAULT_WORDS):
        if word in flat:
            return f"{call.tool} names {word!r} in its command: {why}"
    for pattern in (*_spellings(root, given, call.cwd), _component(root.name)):
        if pattern.search(flat):
            return f"{call.tool} names the hitl-vault vault in its command: {why}"
    return None


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
    if key in _PATH_KEYS or key in _MORE_PATH_KEYS:
        return [value]
    if key in _TEXT_KEYS or key in ("command", "cmd") or "\n" in value:
        return []
    return [value] if "/" in value or value.startswith(("~", ".")) else []


def _component(name: str) -> re.Pattern[str]:
    """The vault's folder name next to a slash (``cd .. && sed … vault/Pending_Approval``);
    alone, a word like ``vault`` may mean anything."""
    word = re.escape(name)
    return re.compile(rf"(?:(?<![\w.-]){word}/|/{word}(?![\w.-]))")


# --- failing closed --------------------------------------------------------------------


def bad_input(problem: str) -> Reply:
    """Every format: exit 2 blocks the call and shows stderr (fail closed)."""
    return 2, "", f"hitl-vault gate: {problem}; the tool call is blocked\n"
