"""A new request from what was asked: the rules' ruling turned into its first state. Pure."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from ..durable import MAX_NOTE_BYTES
from ..errors import UsageError
from ..model import Request, Status, Transition
from ..text import one_line
from .always import Allow, consult
from .pitch import Pitch
from .quorum import Plan
from .rules import Decision, Policy, Proposal, RuleMatch, pinned

_OUTCOME = {
    Decision.ALLOW: Status.APPROVED,
    Decision.ASK: Status.PENDING,
    Decision.BLOCK: Status.REJECTED,
}


def default_user() -> str:
    """Who is at the keyboard, for ``by`` when nobody said."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def default_summary(action: str, params: Mapping[str, Any]) -> str:
    """``payment: amount=1500, recipient=v@x.y``: a title for a request submitted without one."""
    shown = ", ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in params.items()
    )
    return one_line(f"{action}: {shown}" if shown else action, 120)


# The most text a request's context may hold: a few pages, enough to say why, small
# enough for a note, a notification and a terminal (20,000 characters are at most 80 KB).
MAX_CONTEXT = 20_000


def storable(text: str) -> str:
    """Text as UTF-8 can hold it: what cannot be encoded (a lone surrogate) becomes "?"."""
    return text.encode("utf-8", "replace").decode("utf-8")


def check_context(context: object) -> str | None:
    """The requester's context as it is stored: None for none (or only blanks), else the
    text as given, lone surrogates made storable; too long or not text is a UsageError."""
    if context is None:
        return None
    if not isinstance(context, str):
        raise UsageError(
            "context", f"is {type(context).__name__}, not text", "pass the context as a string"
        )
    if len(context) > MAX_CONTEXT:
        raise UsageError(
            "context",
            f"has {len(context):,} characters, over the {MAX_CONTEXT:,} a request may carry",
            "say why in fewer words: put long material in a file and name its path",
        )
    return storable(context) if context.strip() else None


def check_size(text: str) -> None:
    """A note must be small enough to be read back (and opened on a phone)."""
    size = len(text.encode("utf-8"))
    if size > MAX_NOTE_BYTES:
        raise UsageError(
            "params",
            f"make a note of {size:,} bytes, over the {MAX_NOTE_BYTES:,} a note may hold",
            "send less: put large data in a file and pass its path",
        )


@dataclass(frozen=True)
class Asked:
    """What a proposal becomes: the request (its id still to draw), why, and what is
    pinned with it: what Python rules required (see :func:`hitl_vault.policy.rules.pinned`)
    and the channels ``authenticated:`` counted at submit."""

    request: Request
    matches: tuple[RuleMatch, ...]
    pinned: Mapping[str, Any]
    plan: Plan = field(default_factory=Plan)

    def with_id(self, make_id: Callable[[str, datetime], str]) -> Request:
        from dataclasses import replace

        return replace(self.request, id=make_id(self.request.action, self.request.created))


def _without_diff(pitch: Pitch | None) -> Pitch | None:
    """The pitch of a request the rules decided at once: no diff, which would copy the
    file a blocked call names into the note, the journal and messages; a diff is kept
    only for an ask, where a human must see what changes."""
    from dataclasses import replace

    if pitch is None or pitch.diff is None:
        return pitch
    kept = replace(pitch, diff=None, diff_by=None)
    return kept if kept.proposed else None


def ask(
    policy: Policy,
    proposal: Proposal,
    code: Sequence[RuleMatch],
    *,
    asked_timeout: timedelta | None,
    now: datetime,
    carried_by_requester: bool = False,
    context: str | None = None,
    pitch: Pitch | None = None,
    allows: Sequence[Allow] = (),
) -> Asked:
    """The request the rules make of ``proposal`` (``code``: what Python rules said of it):
    pending until the shortest timeout asked or ruled, approved or rejected at once.
    What monitor mode or ``min_risk`` allowed is approved with the reason "would ask"
    or "would block" (see :meth:`Policy.applied`); an ask an "always" allow covers, with
    who allowed it (see :func:`hitl_vault.policy.always.consult`). Only a pending
    request keeps the ``pitch``'s diff."""
    ruling = policy.evaluate(proposal, code=code)
    ruling = consult(policy, ruling, allows, proposal, now) if allows else ruling
    decision, would = policy.applied(ruling)  # monitor mode, min_risk: "would ask", allowed
    status = _OUTCOME[decision]
    expires = escalate_at = None
    if status is Status.PENDING:
        limits = [d for d in (asked_timeout, ruling.timeout) if d is not None]
        expires = now + (min(limits) if limits else policy.defaults.timeout)
        if ruling.plan.escalate_after is not None and now + ruling.plan.escalate_after < expires:
            escalate_at = now + ruling.plan.escalate_after
    reason = ruling.reason if status is Status.REJECTED else would
    if ruling.decision is Decision.ALLOW and any(a.name == ruling.rule for a in allows):
        reason = ruling.reason  # allowed always by NAME until ...
    params = proposal.params
    first = Transition(now, None, status, proposal.requested_by, reason, (f"rule {ruling.rule}",))
    request = Request(
        id="",
        status=status,
        action=proposal.action,
        summary=one_line(proposal.summary, 500)
        or default_summary(proposal.action, proposal.params),
        risk=ruling.risk,
        rule=ruling.rule,
        requested_by=proposal.requested_by,
        created=now,
        expires=expires,
        params=params,
        reason=reason or None,
        decided_at=now if status is not Status.PENDING else None,
        carried_by_requester=carried_by_requester,
        context=context,
        escalate_at=escalate_at,
        pitch=pitch if status is Status.PENDING else _without_diff(pitch),
        history=(first,),
    )
    kept = pinned(code)
    if status is Status.PENDING and ruling.plan.authenticated is not None:
        # The channels that count, kept with the request: an edit of the synced rules
        # file may later narrow them, never lift them (see :func:`plan_for`).
        kept["authenticated"] = sorted(ruling.plan.authenticated)
    return Asked(request, ruling.matches, kept, ruling.plan)
