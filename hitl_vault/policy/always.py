"""The "always" allows: a human approved a call and said the very same call may go through
again without asking, for a while. Pure, and light enough for the gate's fast path.

An allow covers one action with exactly the params approved (for a shell tool, every
input key but the agent's free-text ``description``, which changes from call to call),
made in the same folder (the call's ``cwd``) through the same MCP server as the call
approved, or, when the approver chose it, every command that starts with one that has no
shell metacharacters (the other keys still the same). It turns an ``ask`` into an
``allow``, never a ``block``, and only while the rules would still let it be made
(:func:`refusal`). Allows are kept in the journal store, never in the synced vault.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from .rules import Decision, Policy, Proposal, Ruling

# The tools whose ``command`` is a shell command line (Claude Code, Cursor, Gemini, Codex).
SHELL_TOOLS = frozenset({"Bash", "Shell", "shell", "run_shell_command", "local_shell"})
# Characters that make a command line more than one program with plain arguments.
SHELL_META = frozenset(";&|<>$`\\()!*?[]{}~#'\"\n\r\t=%^")
# The file in ``.hitl/`` that a change of the allows rewrites: the gate's cached copy of
# the rules and allows is used only while it holds the same bytes.
STAMP_FILE = "always-stamp"
# A folder and an MCP server: where a call is made (None, None: a call made elsewhere
# than at the gate, such as ``submit``).
Place = tuple[str | None, str | None]
NOWHERE: Place = (None, None)


@dataclass(frozen=True)
class Allow:
    """One "always" allow: ``action`` with these ``params`` (a shell tool: ``{"command":
    ...}``), made by ``by`` at ``created`` from ``request_id``, until ``until``."""

    name: str
    action: str
    params: Mapping[str, Any]
    by: str
    created: datetime
    until: datetime
    request_id: str
    prefix: bool = False  # a shell command and anything after it (plain words only)
    session: str | None = None  # only for this requester (an agent's session)
    cwd: str | None = None  # the folder the approved call was made in (None: none named)
    server: str | None = None  # the MCP server it went to (Cursor's url or command)

    def matches(self, proposal: Proposal, now: datetime, place: Place = NOWHERE) -> bool:
        """Whether this allow covers ``proposal``, made at ``place`` (its folder and MCP
        server), at ``now`` (an expired one covers nothing). The place must be the one the
        approved call was made at, as the gate's identical-retry key says: an approval
        for a command in one folder is never one for it in another."""
        if now >= self.until or proposal.action != self.action:
            return False
        if self.session is not None and proposal.requested_by != self.session:
            return False
        if place != (self.cwd, self.server):
            return False
        params = covered(proposal.action, proposal.params)
        if not self.prefix:
            return canonical(params) == canonical(self.params)
        command, start = params.pop("command", None), dict(self.params)
        begin = start.pop("command", None)
        if not isinstance(command, str) or not isinstance(begin, str) or not plain(command):
            return False
        if canonical(params) != canonical(start):
            return False
        return command == begin or command.startswith(begin + " ")

    def describe(self) -> str:
        """``Bash command "git status"``: what the allow lets through, in a few words."""
        where = f" in {self.cwd}" if self.cwd is not None else ""
        where += f" through {self.server}" if self.server is not None else ""
        if self.action in SHELL_TOOLS and set(self.params) == {"command"}:
            what = f"command {json.dumps(self.params['command'], ensure_ascii=False)}"
            tail = " and what follows it" if self.prefix else ""
            return f"{self.action} {what}{tail}{where}"
        return f"{self.action} {canonical(self.params)}{where}"


def canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def covered(action: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The params an allow for ``action`` keeps and compares: for a shell tool every key
    but the free-text ``description`` (its folder, sandbox, timeout and background flags
    count), everything otherwise."""
    if action in SHELL_TOOLS and isinstance(params.get("command"), str):
        return {k: v for k, v in params.items() if k != "description"}
    return dict(params)


# The first line of the context the gate writes for a call it records (Call.context in
# hitl_vault.agents.hookio), and the line naming a Cursor MCP call's server.
_ASKED_IN = re.compile(r"\S+ asks to run the tool (\S+) in (/.*)\.")
_SERVER_LINE = re.compile(r"- mcp_server: (.*)")


def place_of(action: str, context: str | None) -> Place:
    """Where a request the gate recorded was made: the folder and MCP server its context
    names (the gate writes them); (None, None) for a request made elsewhere."""
    lines = (context or "").split("\n")
    first = _ASKED_IN.fullmatch(lines[0])
    if first is None or first.group(1) != action:
        return NOWHERE
    server = next((m.group(1) for m in map(_SERVER_LINE.fullmatch, lines[1:]) if m), None)
    return first.group(2), server


def plain(command: str) -> bool:
    """A command line with no shell metacharacters: one program and its plain words."""
    return bool(command.strip()) and not (set(command) & SHELL_META)


def refusal(policy: Policy, ruling: Ruling) -> str | None:
    """Why no "always" may be made (or used) for a request the rules rule so; None when it
    may. A block never; a quorum, stages or ``authenticated:`` (from a rule or the
    defaults) only where every rule that says so, and one rule at least when the defaults
    do, says ``always: true``."""
    if ruling.decision is Decision.BLOCK:
        return f"rule {ruling.rule} blocks it"
    marked = {r.name for r in policy.rules if r.always}
    for m in ruling.matches:
        p = m.approval
        strict = (p.quorum or 1) > 1 or bool(p.stages) or p.authenticated is not None
        if strict and m.rule not in marked:
            return (
                f"rule {m.rule} asks for a quorum, stages or authenticated approvals; "
                "add always: true to the rule to allow it"
            )
    d = policy.defaults
    strict = (d.quorum or 1) > 1 or d.authenticated is not None
    if strict and not any(m.rule in marked for m in ruling.matches):
        return (
            "the defaults ask for a quorum or authenticated approvals; add always: true "
            "to a rule that matches it to allow it"
        )
    return None


def consult(
    policy: Policy,
    ruling: Ruling,
    allows: Sequence[Allow],
    proposal: Proposal,
    now: datetime,
    place: Place = NOWHERE,
) -> Ruling:
    """``ruling`` with an ask turned into an allow when an allow in force covers
    ``proposal`` made at ``place`` (the gate's call: its folder and MCP server) and the
    rules as they stand would still let it be made; anything else (a block above all) is
    left as it is."""
    if ruling.decision is not Decision.ASK or not allows:
        return ruling
    found = next((a for a in allows if a.matches(proposal, now, place)), None)
    if found is None or refusal(policy, ruling) is not None:
        return ruling
    # What the allow lets through is answered as any allow: no decision at the gate, unless
    # a matching rule says agent_prompt: skip (an ask rule's says so for its allows).
    skipping = {r.name for r in policy.rules if r.agent_prompt == "skip"}
    matches = tuple(replace(m, skip_prompt=m.rule in skipping) for m in ruling.matches)
    return replace(
        ruling, decision=Decision.ALLOW, rule=found.name, reason=allowed(found), matches=matches
    )


def allowed(allow: Allow) -> str:
    return f"allowed always by {allow.by} until {allow.until:%Y-%m-%d %H:%M} UTC"
