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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from .hookio import Answer, BadInput, Call, Reply, read_object, tool_call

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
    """Where ``hook install`` puts the gate for an agent, and the hook entry it writes."""

    path: Callable[[Path | None], Path]  # the settings file: a project's (given), or the user's
    entry: Callable[[str, float], dict[str, Any]]  # the entry for a command and the gate's wait
    restart: str  # what to do for the agent to read the new hook
    event: str = "PreToolUse"  # the key under "hooks" the entry goes in
    matcher: str = "*"  # the tools a new entry's group matches (an existing one is kept)


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


def _claude_settings(project: Path | None) -> Path:
    base = project.expanduser().absolute() if project is not None else Path.home()
    return base / ".claude" / "settings.json"


def _claude_entry(command: str, wait: float) -> dict[str, Any]:
    """A command hook whose timeout is a minute above the gate's wait: Claude Code runs
    the tool when a hook is killed at its timeout, so the gate must answer first."""
    timeout = max(MIN_TIMEOUT, math.ceil(wait) + MARGIN)
    return {"type": "command", "command": command, "timeout": timeout}


CLAUDE = HookFormat(
    "claude",
    "claude-code",
    "Claude Code",
    _claude,
    event="PreToolUse",
    settings=HookSettings(
        _claude_settings,
        _claude_entry,
        "Claude Code reads hooks at start: restart it, or review the change under /hooks.",
    ),
)
CURSOR = HookFormat("cursor", "cursor", "Cursor", _cursor, edits=Edits.NONE)
GEMINI = HookFormat("gemini", "gemini-cli", "Gemini CLI", _gemini, edits=Edits.NO_REMOVALS)
CODEX = HookFormat("codex", "codex", "Codex", _codex, event="PreToolUse", edits=Edits.NONE)

# Every format by its --format name, the default first.
FORMATS: Mapping[str, HookFormat] = {f.name: f for f in (CLAUDE, CURSOR, GEMINI, CODEX)}
# Where `hook install` puts the gate, by --agent: each format that has settings.
INSTALLABLE: Mapping[str, HookSettings] = {
    name: f.settings for name, f in FORMATS.items() if f.settings is not None
}
