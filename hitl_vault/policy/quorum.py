"""Who must approve, how many, in which order: approval plans, and counting votes against them.

Pure functions and frozen dataclasses, no I/O and no clock. A :class:`Plan` is
what the matching rules ask for (``approvers``, ``quorum``, ``stages``,
``prevent_self_approval``, ``require_reason``, ``escalate_to``); :func:`count`
replays the votes a request has recorded against it, and :func:`refusal` says
why one more vote would not count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum

from ..identity import NAME_FIX as PERSON_FIX
from ..identity import name_problem, same_name

# The name a decision gets when nobody said who made it and no user name could be found.
NO_NAME = "unknown"


def unnamed(name: str) -> bool:
    """A decision made by nobody in particular: no name, or :data:`NO_NAME`."""
    return same_name(name) in ("", NO_NAME)


def among(name: str, names: Iterable[str]) -> bool:
    """Whether ``name`` is one of ``names``, compared as :func:`same_name` compares them."""
    wanted = same_name(name)
    return bool(wanted) and any(same_name(n) == wanted for n in names)


def common(names: frozenset[str], others: frozenset[str]) -> frozenset[str]:
    """The names of ``names`` that ``others`` holds too, compared as :func:`same_name`
    compares them (``Alice`` in one rule and ``alice`` in another are one person)."""
    wanted = {same_name(n) for n in others}
    return frozenset(n for n in names if same_name(n) in wanted)


def proof_needed(channels: frozenset[str], inbox: str | None = None) -> str:
    """What an approval lacks under ``authenticated:`` (a sentence with the fix); ``inbox``:
    the service's public URL, where the web inbox is, when the caller knows it."""
    if not channels:
        return (
            "needs an approval proven through a channel, but its rules' authenticated: lists "
            "have none in common; fix hitl-vault.yaml"
        )
    return (
        f"needs an approval proven through {proven_channels(channels)} (its rules say "
        "authenticated:); a note "
        "edit, a votes: line, --by or a name given to a script proves nobody: decide with "
        f"{proven_ways(channels, inbox)}"
    )


# How a person decides through each channel ``authenticated:`` may list.
INBOX_WAY = "the service's web inbox"  # ``session``: signed in, on a phone too
_WAYS = {
    "api": "`hitl-vault --server URL approve`",
    "session": INBOX_WAY,
    "socket": "the CLI through the service's socket",
    "link": "the decision link sent to you",
}


def _in_order(channels: Iterable[str]) -> list[str]:
    return sorted(channels, key=lambda c: list(_WAYS).index(c) if c in _WAYS else len(_WAYS))


def proven_ways(channels: frozenset[str], inbox: str | None = None) -> str:
    """How to decide so that it counts under ``authenticated:`` with ``channels``:
    ``hitl-vault --server URL approve``, the service's web inbox (a phone's way; at
    ``inbox``, the service's public URL, when the caller knows it) or the CLI through the
    service's socket..."""
    ways = dict(_WAYS)
    if inbox:
        ways["session"] = f"the web inbox at {inbox.rstrip('/')}/"
    shown = [ways.get(c, c) for c in _in_order(channels)]
    return ", ".join(shown[:-1]) + " or " + shown[-1] if len(shown) > 1 else "".join(shown)


def former_ways(channels: frozenset[str]) -> str:
    """:func:`proven_ways` as versions before the web inbox wrote it, in notes that keep
    it: the signed-in pages named only when nothing else was listed."""
    names = _in_order(channels)
    ways = {**_WAYS, "session": "the service's signed-in pages"}
    return " or ".join(ways.get(c, c) for c in [c for c in names if c != "session"] or names)


def proven_channels(channels: frozenset[str]) -> str:
    """``api or socket``: the channels ``authenticated:`` lists, in the order people meet them."""
    names = _in_order(channels)
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


class RequireReason(StrEnum):
    """When a decision must say why; ordered none < reject < always."""

    NONE = "none"
    REJECT = "reject"
    ALWAYS = "always"

    @property
    def rank(self) -> int:
        return list(RequireReason).index(self)


@dataclass(frozen=True)
class Stage:
    """One step of an approval: ``quorum`` distinct ``approvers`` (None: anyone) must approve."""

    name: str = ""
    approvers: frozenset[str] | None = None
    quorum: int = 1

    @property
    def title(self) -> str:
        return f"stage {self.name}" if self.name else "approval"


@dataclass(frozen=True)
class Plan:
    """Everything the rules say about who decides a request."""

    stages: tuple[Stage, ...] = (Stage(),)
    prevent_self_approval: bool = False
    require_reason: RequireReason = RequireReason.NONE
    escalate_after: timedelta | None = None
    escalate_to: frozenset[str] = frozenset()
    # ``authenticated:``: the channels an approval must be proven through (None: any
    # decision counts, a claimed name too).
    authenticated: frozenset[str] | None = None

    @property
    def named(self) -> bool:
        """Whether it matters who approves: approvers named, votes, or no self-approval."""
        return (
            self.by_votes
            or self.prevent_self_approval
            or any(s.approvers is not None for s in self.stages)
        )

    @property
    def people(self) -> bool:
        """Whether a human must decide whatever the risk (``min_risk`` never allows it):
        approvers named, votes, no self-approval, or ``authenticated:`` channels."""
        return self.named or self.authenticated is not None

    @property
    def by_votes(self) -> bool:
        """Decided by votes (a ``votes:`` map in the note), not by one person's ``status``."""
        return len(self.stages) > 1 or self.stages[0].quorum > 1

    def eligible(self, stage: int, escalated: bool) -> frozenset[str] | None:
        """Who may approve in ``stage`` (None: anyone); the escalation's people once it came."""
        names = self.stages[stage].approvers
        if names is None:
            return None
        return names | self.escalate_to if escalated else names


@dataclass(frozen=True)
class Part:
    """What one rule (or the defaults) says about approval; None / () where it says nothing."""

    approvers: frozenset[str] | None = None
    quorum: int | None = None
    stages: tuple[Stage, ...] = ()
    prevent_self_approval: bool = False
    require_reason: RequireReason = RequireReason.NONE
    escalate_after: timedelta | None = None
    escalate_to: frozenset[str] = frozenset()
    authenticated: frozenset[str] | None = None


def combine(parts: Iterable[Part]) -> Plan:
    """The strictest plan all ``parts`` allow: the names every ``approvers`` list holds, the
    largest quorum, every stage (each once, in order), self-approval refused if any part
    refuses it, the strictest ``require_reason``, the shortest escalation (to everyone named),
    and only the channels every ``authenticated:`` allows.

    A part's own ``approvers``/``quorum`` form the first stage; ``stages`` follow it.
    """
    parts = list(parts)
    approvers: frozenset[str] | None = None
    for p in parts:
        if p.approvers is not None:
            approvers = p.approvers if approvers is None else common(approvers, p.approvers)
    quorums = [p.quorum for p in parts if p.quorum is not None]
    stages: list[Stage] = []
    for p in parts:
        stages += [s for s in p.stages if s not in stages]
    if approvers is not None or quorums or not stages:
        stages.insert(0, Stage("", approvers, max(quorums, default=1)))
    escalations = [p.escalate_after for p in parts if p.escalate_after is not None]
    to = frozenset().union(*(p.escalate_to for p in parts)) if escalations else frozenset()
    proven: frozenset[str] | None = None
    for p in parts:
        if p.authenticated is not None:
            proven = p.authenticated if proven is None else proven & p.authenticated
    return Plan(
        stages=tuple(stages),
        prevent_self_approval=any(p.prevent_self_approval for p in parts),
        require_reason=max(
            (p.require_reason for p in parts), key=lambda r: r.rank, default=RequireReason.NONE
        ),
        escalate_after=min(escalations) if escalations else None,
        escalate_to=to,
        authenticated=proven,
    )


@dataclass(frozen=True)
class Vote:
    """One person's recorded vote: approve or reject, when, and why."""

    name: str
    approve: bool
    at: datetime | None = None
    reason: str = ""
    via: str | None = None  # the channel it was proven through (``api``); None: a claim


@dataclass(frozen=True)
class Count:
    """Where a request's votes leave it under a plan."""

    plan: Plan
    stage: int  # the stage still collecting approvals; len(plan.stages) once all are met
    approvals: tuple[tuple[str, ...], ...]  # who counted in each stage, in order
    rejected_by: str | None = None
    escalated: bool = False
    voters: frozenset[str] = field(default_factory=frozenset)  # as :func:`same_name` has them
    requester: str = ""  # who asked (not among those waited for under prevent_self_approval)

    @property
    def approved(self) -> bool:
        return self.rejected_by is None and self.stage >= len(self.plan.stages)

    @property
    def decided(self) -> bool:
        return self.approved or self.rejected_by is not None

    @property
    def stage_name(self) -> str | None:
        """The name of the stage collecting approvals (None when done or unnamed)."""
        if self.decided:
            return None
        return self.plan.stages[self.stage].name or None

    def waiting_for(self) -> list[str] | None:
        """Who could still approve in the current stage (None: anyone may), sorted."""
        if self.decided:
            return []
        names = self.plan.eligible(self.stage, self.escalated)
        if names is None:
            return None
        left_out = self.left_out()
        return sorted(n for n in names if same_name(n) not in left_out)

    def left_out(self) -> frozenset[str]:
        """Who may not approve now whoever the approvers are, as :func:`same_name` has
        them: those who voted already and, under ``prevent_self_approval``, the requester
        (for a rule that names no approvers, where :meth:`waiting_for` says anyone)."""
        if self.plan.prevent_self_approval and self.requester:
            return self.voters | {same_name(self.requester)}
        return self.voters

    def progress(self) -> str:
        """``1 of 2 approvals; waiting for bob or carol`` (one line, for people)."""
        if self.rejected_by is not None:
            return f"rejected by {self.rejected_by}"
        stages = self.plan.stages
        if self.approved:
            total = sum(len(a) for a in self.approvals)
            return f"{total} of {total} approvals: approved"
        stage = stages[self.stage]
        text = f"{len(self.approvals[self.stage])} of {stage.quorum} approvals"
        if len(stages) > 1:
            text += f" in {stage.title} (stage {self.stage + 1} of {len(stages)})"
        if self.plan.authenticated is not None:
            text += ", each proven (authenticated)"
        waiting = self.waiting_for()
        if waiting is None:
            return text + "; waiting for anyone"
        if not waiting or len(waiting) < stage.quorum - len(self.approvals[self.stage]):
            return text + "; not enough approvers left to reach it (see the rules)"
        return text + "; waiting for " + " or ".join(waiting)


def count(
    plan: Plan, votes: Sequence[Vote], *, requester: str = "", escalated: bool = False
) -> Count:
    """Replay ``votes`` in order; a vote that would not count now is skipped (the rules may
    have changed since it was recorded)."""
    state = Count(plan, 0, tuple(() for _ in plan.stages), escalated=escalated, requester=requester)
    for vote in votes:
        if state.decided:
            break
        if refusal(state, vote, requester=requester) is None:
            state = _add(state, vote)
    return state


def _add(state: Count, vote: Vote) -> Count:
    voters = state.voters | {same_name(vote.name)}
    if not vote.approve:
        return replace(state, rejected_by=vote.name, voters=voters)
    approvals = list(state.approvals)
    approvals[state.stage] = (*approvals[state.stage], vote.name)
    stage = state.stage
    while (
        stage < len(state.plan.stages) and len(approvals[stage]) >= state.plan.stages[stage].quorum
    ):
        stage += 1
    return replace(state, stage=stage, approvals=tuple(approvals), voters=voters)


def add(state: Count, vote: Vote) -> Count:
    """``state`` with one more vote that :func:`refusal` let through."""
    return _add(state, vote)


def refusal(state: Count, vote: Vote, *, requester: str = "") -> str | None:
    """Why ``vote`` would not count now (a sentence with the fix), or None when it counts."""
    plan = state.plan
    who = vote.name or "an unnamed person"
    if plan.by_votes and not vote.name:
        return "say who you are: decide with --by NAME, or write your name's line under votes:"
    if plan.by_votes and (problem := name_problem(vote.name)) is not None:
        return f"{problem}: not a name hitl-vault accepts ({PERSON_FIX})"
    if vote.approve and plan.named and unnamed(vote.name):
        return (
            f"an approval by {who} counts for nobody here (its rules name approvers, count "
            "votes or prevent self-approval): say who you are (--by NAME, or decided_by: in "
            "the note)"
        )
    if vote.approve and plan.authenticated is not None and vote.via not in plan.authenticated:
        return proof_needed(plan.authenticated)
    if state.decided:
        return "it is decided already"
    if same_name(vote.name) in state.voters:
        return f"{who} has voted on it already; each person counts once"
    needs = plan.require_reason
    if not vote.reason.strip() and (
        needs is RequireReason.ALWAYS or (needs is RequireReason.REJECT and not vote.approve)
    ):
        what = "every decision" if needs is RequireReason.ALWAYS else "a rejection"
        return f"{what} needs a reason here (require_reason: {needs}); add one"
    if vote.approve and plan.prevent_self_approval and same_name(vote.name) == same_name(requester):
        return f"{who} asked for it and may not approve it (prevent_self_approval)"
    now = plan.eligible(state.stage, state.escalated)
    if now is None or among(vote.name, now):
        return None
    later = [
        i
        for i in range(state.stage + 1, len(plan.stages))
        if (names := plan.eligible(i, state.escalated)) is None or among(vote.name, names)
    ]
    if later and not vote.approve:  # a later stage's approver may stop it early: never unsafe
        return None
    if later:
        first = plan.stages[state.stage].title
        return (
            f"{who} approves in {plan.stages[later[0]].title}, which comes after {first}; "
            f"wait until {first} is met"
        )
    if any(among(vote.name, plan.eligible(i, state.escalated) or ()) for i in range(state.stage)):
        done = ", ".join(plan.stages[i].title for i in range(state.stage))
        return f"{who} decides in {done}, which is met already; {_waiting(state)}"
    stages = range(len(plan.stages))
    allowed = sorted(set().union(*(plan.eligible(i, state.escalated) or () for i in stages)))
    return f"{who} is not among its approvers ({', '.join(allowed) or 'nobody'})"


def _waiting(state: Count) -> str:
    waiting = state.waiting_for()
    return "waiting for " + (" or ".join(waiting) if waiting else "anyone")
