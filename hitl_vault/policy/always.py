"""The "always" allows: a human approved a call and said the very same call may go through
again without asking, for a while. Pure, and light enough for the gate's fast path.

An allow covers one action with exactly the params approved (for a shell tool, the
``command`` only: the agent's free-text ``description`` changes from call to call), or,
when the approver chose it, every command that starts with one that has no shell
metacharacters. It turns an ``ask`` into an ``allow``, never a ``block``, and only while
the rules would still let it be made (:func:`refusal`). Allows are kept in the journal
store, never in the synced vault.
"""

from __future__ import annotations

import json
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

    def matches(self, proposal: Proposal, now: datetime) -> bool:
        """Whether this allow covers ``proposal`` at ``now`` (an expired one covers nothing)."""
        if now >= self.until or proposal.action != self.action:
            return False
        if self.session is not None and proposal.requested_by != self.session:
            return False
        if not self.prefix:
            return canonical(covered(proposal.action, proposal.params)) == canonical(self.params)
        command, start = proposal.params.get("command"), self.params.get("command")
        if not isinstance(command, str) or not isinstance(start, str) or not plain(command):
            return False
        return command == start or command.startswith(start + " ")

    def describe(self) -> str:
        """``Bash command "git status"``: what the allow lets through, in a few words."""
        if self.action in SHELL_TOOLS and set(self.params) == {"command"}:
            what = f"command {json.dumps(self.params['command'], ensure_ascii=False)}"
            return f"{self.action} {what}" + (" and what follows it" if self.prefix else "")
        return f"{self.action} {canonical(self.params)}"


def canonical(params: Mapping[str, Any]) -> str:
    return json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def covered(action: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """The params an allow for ``action`` keeps and compares: a shell tool's ``command``
    only, everything otherwise."""
    if action in SHELL_TOOLS and isinstance(params.get("command"), str):
        return {"command": params["command"]}
    return dict(params)


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
) -> Ruling:
    """``ruling`` with an ask turned into an allow when an allow in force covers
    ``proposal`` and the rules as they stand would still let it be made; anything else
    (a block above all) is left as it is."""
    if ruling.decision is not Decision.ASK or not allows:
        return ruling
    found = next((a for a in allows if a.matches(proposal, now)), None)
    if found is None or refusal(policy, ruling) is not None:
        return ruling
    return replace(ruling, decision=Decision.ALLOW, rule=found.name, reason=allowed(found))


def allowed(allow: Allow) -> str:
    return f"allowed always by {allow.by} until {allow.until:%Y-%m-%d %H:%M} UTC"
