"""The agent gate's pure part: a tool call and the gate's answer, reading the PreToolUse
input the agents share (the guard that keeps agents out of the vault is
:mod:`hitl_vault.agents.guard`).

What differs between agents (their fields, their answers, their settings) is in
:mod:`hitl_vault.agents.formats`, one record each. Nothing here reads the rules or the
journal (that is :mod:`hitl_vault.agents.gate`); this module is imported before every
tool call an agent makes, so it imports little.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..params import clean_params

# What a hook answers: (exit code, stdout, stderr).
Reply = tuple[int, str, str]

# Keys of a tool's input that name the file it works on (also the request's summary).
PATH_KEYS = ("file_path", "notebook_path", "path", "filePath", "target_file", "absolute_path")


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
        import hashlib  # only when a request is made: an allowed call never needs it

        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @property
    def place(self) -> tuple[str, str | None]:
        """Where the call is made, as an "always" allow compares it: its folder and, for a
        Cursor MCP call, the server (as :attr:`context` names them)."""
        return str(self.cwd), self.extra.get("mcp_server")

    @property
    def summary(self) -> str:
        """A title for the note: the command a shell tool runs, the file a file tool writes."""
        command = command_of(self.params)
        target = next(
            (self.params[k] for k in PATH_KEYS if isinstance(self.params.get(k), str)), ""
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
    (the params as the human left them, if edited).

    ``decided`` False is no decision at all (a call the rules let through): the agent's
    own permission settings then apply, as if the gate were not there."""

    __slots__ = ("allow", "decided", "reason", "updated")

    def __init__(
        self,
        allow: bool,
        reason: str = "",
        updated: dict[str, Any] | None = None,
        decided: bool = True,
    ):
        self.allow = allow
        self.reason = reason
        self.updated = updated
        self.decided = decided or not allow  # a deny is always a decision

    def __repr__(self) -> str:
        said = "" if self.decided else ", decided=False"
        return f"Answer(allow={self.allow}, reason={self.reason!r}, updated={self.updated!r}{said})"


# The rules let the call through: no decision, the agent's own checks apply.
NO_DECISION = Answer(True, decided=False)


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


# Cursor's events that carry no tool_name/tool_input: the tool each one stands for.
CURSOR_SHELL, CURSOR_READ = "Shell", "Read"


def cursor_call(data: Mapping[str, Any], agent: str) -> Call:
    """The tool call in a Cursor hook's input, by its ``hook_event_name``:
    ``beforeShellExecution`` (``command``, ``cwd``) is the tool ``Shell``;
    ``beforeReadFile`` (``file_path``, and the file's ``content``, which is never kept) is
    ``Read``; ``beforeMCPExecution`` (``tool_name``, ``tool_input`` as JSON text, the
    server's ``url`` or ``command``, which name no server) is ``mcp__<tool_name>``, so the
    rules' ``re:mcp__.*`` covers it; anything else (``preToolUse``) is read as the agents
    share it. The session is ``conversation_id``, the folder ``cwd`` or the first of
    ``workspace_roots``."""
    event = data.get("hook_event_name")
    if event == "beforeShellExecution":
        command = data.get("command")
        if not isinstance(command, str) or not command:
            raise BadInput('the beforeShellExecution input has no "command" (text)')
        return _cursor(data, agent, CURSOR_SHELL, {"command": command}, {})
    if event == "beforeReadFile":
        path = data.get("file_path")
        if not isinstance(path, str) or not path:
            raise BadInput('the beforeReadFile input has no "file_path" (text)')
        return _cursor(data, agent, CURSOR_READ, {"file_path": path}, {})
    if event == "beforeMCPExecution":
        tool = data.get("tool_name")
        if not isinstance(tool, str) or not tool:
            raise BadInput('the beforeMCPExecution input has no "tool_name" (text)')
        raw = data.get("tool_input")
        if isinstance(raw, str):
            try:
                raw = json.loads(raw, parse_constant=_no_constant) if raw.strip() else {}
            except (ValueError, RecursionError) as e:
                raise BadInput(f'the "tool_input" of {tool} is not JSON ({str(e)[:120]})') from None
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise BadInput(f'the "tool_input" of {tool} is {type(raw).__name__}, not an object')
        server = _field(data, "url", "command")
        extra = {"mcp_server": server} if isinstance(server, str) else {}
        return _cursor(data, agent, f"mcp__{tool}", raw, extra)
    return tool_call(data, agent)


def _cursor(
    data: Mapping[str, Any], agent: str, tool: str, params: dict[str, Any], extra: dict[str, str]
) -> Call:
    """A Call of a Cursor event's input, the tool and its params already read."""
    event = data.get("hook_event_name")
    try:
        params = clean_params(params, f"{event} input")
    except UsageError as e:
        raise BadInput(str(e)) from None
    session = _field(data, "conversation_id", "session_id")
    if not isinstance(session, str):
        raise BadInput(f'the {event} input has no "conversation_id" (text)')
    roots = data.get("workspace_roots")
    cwd = _field(data, "cwd") or (roots[0] if isinstance(roots, list) and roots else None)
    if not isinstance(cwd, str) or not os.path.isabs(cwd):
        raise BadInput(f'the {event} input has no "cwd" nor "workspace_roots" (absolute paths)')
    extra |= {k: data[k] for k in ("generation_id",) if isinstance(data.get(k), str) and data[k]}
    return Call(agent, session, tool, params, Path(cwd), extra)


def _no_constant(word: str) -> None:
    raise ValueError(f"{word} is not JSON")


def command_of(params: Mapping[str, Any]) -> str:
    """The shell command a tool's input holds ("" if none): text, or an argv list."""
    command = params.get("command", params.get("cmd"))
    if isinstance(command, list):
        return " ".join(str(word) for word in command)
    return command if isinstance(command, str) else ""


# --- failing closed --------------------------------------------------------------------


def bad_input(problem: str) -> Reply:
    """Every format: exit 2 blocks the call and shows stderr (fail closed)."""
    return 2, "", f"hitl-vault gate: {problem}; the tool call is blocked\n"
