"""Each agent's hook format as one record: its ``--format`` name, how its hook's input
becomes a :class:`~hitl_vault.agents.hookio.Call`, how an
:class:`~hitl_vault.agents.hookio.Answer` becomes the hook's stdout and exit code, whether
it can hand edited input back, and where ``hitl-vault hook install`` puts it.

A new agent is one :class:`HookFormat` added to :data:`FORMATS`: ``gate --format`` and
``hook install --agent`` list their choices from it, and the gate asks the record, never
the name. Loaded before every tool call an agent makes, so it imports little.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from .hookio import Answer, BadInput, Call, Reply, cursor_call, read_object, tool_call

# The hook's JSON object and the agent's name (``requested_by`` before the session) in,
# the tool call out; :class:`BadInput` saying what is missing.
Reader = Callable[[Mapping[str, Any], str], Call]
# An answer (its ``updated`` only where the format can take edited input) in, the hook's
# (exit code, stdout, stderr) out.
Renderer = Callable[[Answer], Reply]


class Edits(Enum):
    """What a format can hand the agent instead of the tool input it asked with."""

    ANY = "any"  # any input: the params as the human left them
    NONE = "none"  # nothing: the input runs as asked
    NO_REMOVALS = "no removals"  # changed and added keys, never a key taken away

    def refusal(self, title: str, asked: Mapping[str, Any], updated: Mapping[str, Any]) -> str:
        """Why ``updated`` cannot be handed back in place of ``asked`` ("" if it can)."""
        if self is Edits.NONE:
            return f"{title} hooks cannot change a tool's input"
        if self is Edits.NO_REMOVALS and set(asked) - set(updated):
            return f"{title} hooks can change but not remove input keys"
        return ""


@dataclass(frozen=True)
class HookSettings:
    """Where ``hook install`` puts the gate for an agent, and the hook entries it writes."""

    path: Callable[[Path | None], Path]  # the settings file: a project's (given), or the user's
    entry: Callable[[str, float], dict[str, Any]]  # the entry for a command and the gate's wait
    restart: str  # what to do for the agent to read the new hook
    events: tuple[str, ...] = ("PreToolUse",)  # the keys under "hooks" an entry goes in
    # The tools a new entry's group matches; None: the agent keeps entries in flat lists
    # under each event, with no group and no matcher (Cursor: each event is every call).
    matcher: str | None = "*"
    top: Mapping[str, Any] = field(default_factory=dict)  # keys the file needs: Cursor's version
    fail_closed: str = ""  # the entry's key that makes a hook that cannot start block ("": none)
    # The events the outcome hook (``hitl-vault posttool``) goes in, after a tool ran, and
    # its entry for a command: it never blocks, so it has no fail-closed part.
    after: tuple[str, ...] = ("PostToolUse",)
    after_entry: Callable[[str], dict[str, Any]] = lambda command: _outcome_entry(command)
    # Other settings files whose "disableAllHooks": true also turns off the file's hooks.
    overriding: Callable[[Path], list[Path]] = lambda path: []
    # Tool names the gate must see (the guard keeps agents out of the vault through any of
    # them): a matcher that misses one is narrower than the guard needs.
    tools: tuple[str, ...] = ("Bash", "Read", "Write", "Edit", "WebFetch", "mcp__s__t", "Zz")

    def wide_enough(self, matcher: Any) -> bool:
        """Whether a group's ``matcher`` lets every tool call through to the gate."""
        if matcher in (None, "", "*"):
            return True
        if not isinstance(matcher, str):
            return False
        try:
            return all(re.fullmatch(matcher, tool) for tool in self.tools)
        except re.error:
            return False


@dataclass(frozen=True)
class HookFormat:
    """One agent's hook format; a new agent is one more of these in :data:`FORMATS`."""

    name: str  # its --format
    agent: str  # its name in ``requested_by``: claude-code, cursor, ...
    title: str  # its name in a sentence: Claude Code, Cursor, ...
    answer: Renderer
    event: str | None = None  # the hook_event_name its input must have, if it says one
    edits: Edits = Edits.ANY
    read: Reader = tool_call
    settings: HookSettings | None = None  # None: its hook is set by hand

    def read_call(self, raw: bytes) -> Call:
        """The tool call the hook's stdin describes; :class:`BadInput` saying what is wrong."""
        return self.call_of(read_object(raw))

    def call_of(self, data: Mapping[str, Any]) -> Call:
        """The tool call a hook's input object describes; :class:`BadInput` if it is not one."""
        event = data.get("hook_event_name")
        if self.event is not None and event not in (None, self.event):
            raise BadInput(f"this is a {event!r} hook; hitl-vault gate answers {self.event} hooks")
        return self.read(data, self.agent)

    def cannot_update(self, asked: Mapping[str, Any], updated: Mapping[str, Any] | None) -> str:
        """Why this format cannot hand the agent ``updated`` instead of ``asked`` ("" if it can)."""
        return "" if updated is None else self.edits.refusal(self.title, asked, updated)

    def render(self, answer: Answer, asked: Mapping[str, Any]) -> Reply:
        """(exit code, stdout, stderr) telling the agent ``answer``.

        ``asked``: the tool input as the agent sent it. Edited params that this format
        cannot hand back whole become a deny that names them, never a silent run of the
        old ones.
        """
        cannot = self.cannot_update(asked, answer.updated)
        if not cannot:
            return self.answer(answer)
        shown = json.dumps(answer.updated, ensure_ascii=False, sort_keys=True)
        reason = (
            f"approved with edited input, and {cannot}; not run as asked. "
            f"Call the tool again with exactly this input: {shown}"
        )
        return self.answer(Answer(False, reason))


def _json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False) + "\n"


def _claude(answer: Answer) -> Reply:
    if not answer.decided:  # no JSON decision: Claude Code's own permission settings apply
        return 0, "", ""
    out: dict[str, Any] = {
        "hookEventName": "PreToolUse",
        "permissionDecision": "allow" if answer.allow else "deny",
    }
    if answer.reason:
        out["permissionDecisionReason"] = answer.reason
    if answer.updated is not None:
        out["updatedInput"] = answer.updated
    return 0, _json({"hookSpecificOutput": out}), ""


def _cursor(answer: Answer) -> Reply:
    # Cursor wants a permission in every answer and has no "not mine to say": no decision
    # is its allow, and its own settings (allowlists, auto-run) still apply to the call.
    out: dict[str, Any] = {"permission": "allow" if answer.allow else "deny"}
    if answer.reason:
        out |= {"user_message": answer.reason, "agent_message": answer.reason}
    return 0, _json(out), ""


def _gemini(answer: Answer) -> Reply:
    if not answer.decided:  # no output: Gemini CLI goes on as if no hook had answered
        return 0, "", ""
    out: dict[str, Any] = {"decision": "allow" if answer.allow else "deny"}
    if answer.reason:
        out["reason"] = answer.reason
    if answer.updated is not None:
        out["hookSpecificOutput"] = {"tool_input": answer.updated}
    return 0, _json(out), ""


def _codex(answer: Answer) -> Reply:
    if answer.allow:  # exactly {}: any other field fails the hook, and the tool runs; {} is
        # no decision, so Codex's own approval policy applies to what the gate allows too
        return 0, "{}\n", ""
    return 2, "", f"{answer.reason or 'denied by hitl-vault'}\n"


MIN_TIMEOUT = 600  # seconds: Claude Code's own default for a command hook
MARGIN = 60  # seconds between the gate's --wait and the hook's timeout


def _settings(folder: str, name: str) -> Callable[[Path | None], Path]:
    """The settings file ``folder/name`` in a project (given), or in the user's home."""

    def path(project: Path | None) -> Path:
        base = project.expanduser().absolute() if project is not None else Path.home()
        return base / folder / name

    return path


def _timeout(wait: float) -> int:
    """Seconds: a minute above the gate's wait, and never below 600. An agent runs the
    tool when a hook is killed at its timeout, so the gate must answer first."""
    return max(MIN_TIMEOUT, math.ceil(wait) + MARGIN)


# Claude Code, Gemini CLI and Codex run a hook's command through a shell and let the tool
# run when it exits with anything but 0 or 2, and have no setting against it: a command
# that cannot start (a moved install: 126, 127) becomes exit 2, which blocks the call.
FAIL_CLOSED = " || exit 2"


OUTCOME_TIMEOUT = 60  # seconds: the outcome hook records one line and exits


def _outcome_entry(command: str) -> dict[str, Any]:
    return {"type": "command", "command": command, "timeout": OUTCOME_TIMEOUT}


def _claude_entry(command: str, wait: float) -> dict[str, Any]:
    return {"type": "command", "command": command + FAIL_CLOSED, "timeout": _timeout(wait)}


def _gemini_entry(command: str, wait: float) -> dict[str, Any]:
    """Gemini CLI counts a hook's timeout in milliseconds (its default, 60000, is below
    the gate's wait)."""
    return {"name": "hitl-vault", "type": "command", "command": command + FAIL_CLOSED,
            "timeout": _timeout(wait) * 1000}  # fmt: skip


def _cursor_entry(command: str, wait: float) -> dict[str, Any]:
    """Cursor runs the call when a hook fails, unless ``failClosed``."""
    return {"command": command, "timeout": _timeout(wait), "failClosed": True}


CLAUDE = HookFormat(
    "claude",
    "claude-code",
    "Claude Code",
    _claude,
    event="PreToolUse",
    settings=HookSettings(
        _settings(".claude", "settings.json"),
        _claude_entry,
        "Claude Code reads hooks at start: restart it, or review the change under /hooks.",
        after=("PostToolUse", "PostToolUseFailure"),
        overriding=lambda path: [
            path.with_name("settings.local.json"),
            Path.home() / ".claude" / "settings.json",
        ],
    ),
)
CURSOR = HookFormat(
    "cursor",
    "cursor",
    "Cursor",
    _cursor,
    edits=Edits.NONE,
    read=cursor_call,
    settings=HookSettings(
        _settings(".cursor", "hooks.json"),
        _cursor_entry,
        "Cursor reads hooks.json at start: restart it (Settings > Hooks shows them).",
        events=("preToolUse", "beforeShellExecution", "beforeMCPExecution", "beforeReadFile"),
        matcher=None,
        top={"version": 1},
        fail_closed="failClosed",
        after=("postToolUse", "postToolUseFailure"),
        after_entry=lambda command: {"command": command, "timeout": OUTCOME_TIMEOUT},
    ),
)
GEMINI = HookFormat(
    "gemini",
    "gemini-cli",
    "Gemini CLI",
    _gemini,
    edits=Edits.NO_REMOVALS,
    settings=HookSettings(
        _settings(".gemini", "settings.json"),
        _gemini_entry,
        "Gemini CLI reads its settings at start: restart it (/hooks lists them).",
        events=("BeforeTool",),
        after=("AfterTool",),
        after_entry=lambda command: {
            "name": "hitl-vault-outcome",
            "type": "command",
            "command": command,
            "timeout": OUTCOME_TIMEOUT * 1000,
        },
        matcher=".*",
        tools=("run_shell_command", "read_file", "write_file", "replace", "web_fetch", "mcp_s_t"),
    ),
)
CODEX = HookFormat(
    "codex",
    "codex",
    "Codex",
    _codex,
    event="PreToolUse",
    edits=Edits.NONE,
    settings=HookSettings(
        _settings(".codex", "hooks.json"),
        _claude_entry,
        "Codex reads hooks at start: restart it, and trust the new hook when it asks.",
        matcher=".*",
        tools=("Bash", "shell", "apply_patch", "Read", "mcp__s__t", "Zz"),
    ),
)

# Every format by its --format name, the default first.
FORMATS: Mapping[str, HookFormat] = {f.name: f for f in (CLAUDE, CURSOR, GEMINI, CODEX)}
# Where `hook install` puts the gate, by --agent: each format that has settings.
INSTALLABLE: Mapping[str, HookSettings] = {
    name: f.settings for name, f in FORMATS.items() if f.settings is not None
}
