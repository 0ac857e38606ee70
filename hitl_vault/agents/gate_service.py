"""The gate as the service answers it (``POST /api/v1/gate``): an agent on another machine,
or running as another OS user, sends its hook's input with its agent token, and gets the
answer ``hitl-vault gate`` would give: the same rules, the same identical-retry matching,
the same once-only hand-out of an approval.

The requester is the credential's name, never anything the agent says; a token limited
with ``--actions`` is denied any other tool the rules would ask about, block on record or
record (what they allow without a record asks nothing of anyone, and passes). The local
guard (:mod:`.guard`) does not run here: it keeps an agent that shares the vault owner's
OS user off the vault's files, and an agent of the service cannot reach them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..identity import Principal, Role
from ..model import Origin
from ..policy.always import consult
from ..policy.rules import Decision, GateRecord, Proposal
from .formats import HookFormat
from .gate import (
    TOO_MANY,
    asked,
    blocked_by,
    handed_out,
    skips_prompt,
    submit_call,
    waiting,
)
from .hookio import Call

if TYPE_CHECKING:
    from ..engine import Engine
    from ..model import Request

# What the service answers, as ``decision``: "none" (the rules let it through: the agent's
# own permissions apply, as with the local gate; a request recorded, if any, comes with
# it), "allow" (a human's approval handed out, or a rule with ``agent_prompt: skip``),
# "deny", and "pending" (a human has yet to decide; the identical call asks again).
DECISIONS = ("none", "allow", "deny", "pending")


@dataclass(frozen=True)
class GateAnswer:
    """The service's answer to one hook call, and the request it concerns, if any."""

    decision: str  # one of DECISIONS
    reason: str = ""
    updated: dict[str, Any] | None = None  # the params as the human left them, if edited
    request: Request | None = None

    def json(self, shown: Callable[[Request], dict[str, Any]]) -> dict[str, Any]:
        """The response body; ``shown``: a request as ``show --json`` prints it."""
        data: dict[str, Any] = {"decision": self.decision, "reason": self.reason}
        if self.updated is not None:
            data["updated_input"] = self.updated
        if self.request is not None:
            data["request"] = shown(self.request)
        return data


def gate_key(principal: Principal, call: Call) -> str:
    """The identical-retry key of ``call`` made with ``principal``'s credential: two agents
    never share an approval, whatever their hook input says."""
    return hashlib.sha256(f"{principal.name}\0{call.key}".encode()).hexdigest()


def decide_remote(
    engine: Engine, call: Call, principal: Principal, hook: HookFormat, agent_diff: object = None
) -> GateAnswer:
    """What the vault says about ``call`` now, for ``principal`` (an agent), without waiting:
    a request still waiting for a human is "pending"; the caller waits on it (the
    service's long-poll) and asks again, which the identical-retry matching answers.
    ``agent_diff``: the diff the agent's side made of a file tool's call; the service
    cannot read the agent's files, so it keeps that one, labelled as the agent's."""
    from ..model import Status

    if principal.role is not Role.AGENT:
        return GateAnswer("deny", f"{principal.name} is not an agent: only agent tokens gate")
    policy = engine.policy
    proposal = Proposal(call.tool, call.params, call.summary, principal.name)
    ruling = policy.evaluate(proposal, engine.functions)
    allows = engine.allows.in_force()
    ruling = consult(policy, ruling, allows, proposal, engine.now(), call.place)
    decision, _ = policy.applied(ruling)
    skip = skips_prompt(ruling)
    if ruling.decision is Decision.ALLOW and policy.gate_record is not GateRecord.ALL:
        if skip:
            return GateAnswer("allow", f"allowed by hitl-vault rule {ruling.rule}")
        return GateAnswer("none")  # nothing asked of anyone: the agent's own permissions apply
    if not principal.may_ask(call.tool):
        allowed = ", ".join(principal.actions or ())
        why = f"the agent {principal.name} may not ask for {call.tool} (its token allows {allowed})"
        return GateAnswer("deny", why)
    if decision is Decision.BLOCK and policy.gate_record is GateRecord.ASKS:
        return GateAnswer("deny", blocked_by(ruling.rule, ruling.reason))
    if decision is Decision.ASK:
        key = gate_key(principal, call)
        request = asked(
            engine,
            call,
            key,
            principal.name,
            agent_diff,
            here=False,
            origin=_origin(principal, call),
        )
        if request is None:
            return GateAnswer("deny", TOO_MANY)
        if request.status is Status.PENDING:
            return GateAnswer("pending", waiting(request), request=request)
    else:
        request = submit_call(
            engine, call, None, principal.name, agent_diff, here=False,
            origin=_origin(principal, call),
        )  # fmt: skip
    answer = handed_out(engine, request, call, hook, skip=skip)
    final = engine.get(request.id)
    said = "deny" if not answer.allow else "allow" if answer.decided else "none"
    return GateAnswer(said, answer.reason, answer.updated, final)


def _origin(principal: Principal, call: Call) -> Origin | None:
    """The agent token that asks, and the session and agent its hook input names."""
    if principal.credential is None:
        return None
    return Origin(principal.credential, call.session, call.agent)
