"""May this decision stand? One pure answer, beside the rules.

A human's approval or rejection, an edit of a pending request's params, and an
approved request about to run are each judged here, from the policy and the
request alone: no journal, no notes, no clock of its own. The caller records
what the verdict says. Who may decide (``approvers``), expiry, re-checking
edited params, ``editable: false`` and a ``block`` rule all live in this file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..identity import proven_by
from ..model import Request, Status
from ..params import describe_changes, params_sha
from ..times import format_ts
from .quorum import Count, Plan, Vote, add, among, count, proof_needed, refusal
from .rules import Decision, Mode, Policy, Proposal, RuleFunction, Ruling


@dataclass(frozen=True)
class Refusal:
    """Why a person's decision does not count: not among the ``approvers`` of ``rule``,
    or ``problem`` (the requester approving, a missing reason, a stage out of turn)."""

    by: str
    approvers: frozenset[str] = frozenset()
    rule: str = ""
    problem: str = ""
    unproven: bool = False  # an approval ``authenticated:`` does not count: not proven


@dataclass(frozen=True)
class Verdict:
    """What a proposed decision becomes.

    ``to`` is the move that stands: the one proposed, ``timed_out`` when it came too
    late, or ``rejected`` when a rule refuses the approval (``reason`` says which).
    With ``refused`` set, nothing stands: the person may not decide.
    """

    to: Status
    reason: str = ""
    details: tuple[str, ...] = ()
    params: Mapping[str, Any] | None = None  # what an approval runs; None for anything else
    refused: Refusal | None = None
    fields: Mapping[str, Any] = field(default_factory=dict)  # what the request records
    # Decided by votes: the vote to record and where the votes stand with it (``to`` is
    # then ``pending`` until the last stage's quorum is met, or one rejection ends it).
    vote: Vote | None = None
    count: Count | None = None


def rulings(
    policy: Policy,
    request: Request,
    versions: Sequence[Mapping[str, Any]],
    functions: Sequence[RuleFunction] = (),
) -> list[Ruling]:
    """What the rules say of each distinct version of the params (the first one first):
    an edit never escapes a rule that covered any version before it."""
    distinct: dict[str, Mapping[str, Any]] = {}
    for p in versions:
        distinct.setdefault(params_sha(p), p)
    return [
        policy.evaluate(
            Proposal(request.action, p, request.summary, request.requested_by), functions
        )
        for p in distinct.values()
    ]


def plan_for(policy: Policy, found: Sequence[Ruling], pinned: Mapping[str, Any]) -> Plan:
    """Who decides a request whose params were ``found`` so by the rules (every version),
    with what was ``pinned`` at submit. The ``authenticated:`` channels pinned then still
    hold: the channels that count are those both they and the rules in force allow, so an
    edit of the synced rules file can narrow them, never lift them."""
    matches = [m for r in found for m in r.matches]
    return policy.plan_of(matches, pinned.get("approvers"), pinned.get("authenticated"))


def votes_of(request: Request) -> list[Vote]:
    """The votes that count for the request's params as they stand (each with the channel
    it was proven through, if it was)."""
    return [
        Vote(t.by, t.to_status is Status.APPROVED, t.at, t.reason, proven_by(t))
        for t in request.votes()
    ]


def counted(plan: Plan, request: Request) -> Count:
    """Where the request's recorded votes leave it under ``plan``."""
    return count(
        plan, votes_of(request), requester=request.requested_by, escalated=request.escalated
    )


def settled(state: Count, now: datetime) -> Verdict:
    """The decision votes already recorded make under the rules in force: after a change of
    the rules (a lower quorum, a stage removed) they may decide a request by themselves."""
    if state.rejected_by is not None:
        return Verdict(
            Status.REJECTED,
            reason="rejected by a vote already in, under the rules as they stand now",
            fields={"decided_by": state.rejected_by, "decided_at": now},
        )
    names = ", ".join(n for stage in state.approvals for n in stage)
    why = "the votes already in meet the rules as they stand now"
    return Verdict(Status.APPROVED, reason=why, fields={"decided_by": names, "decided_at": now})


def not_editable(found: Sequence[Ruling], pinned: Mapping[str, Any]) -> list[str]:
    """The rules that forbid editing the params: those of hitl-vault.yaml that matched any
    version of them, and the submitter's Python rules (``pinned`` at submit)."""
    fixed = [m.rule for r in found for m in r.matches if not m.editable]
    return fixed + [rule for rule in pinned.get("fixed", ()) if rule not in fixed]


def judge(
    policy: Policy,
    request: Request,
    to: Status,
    *,
    by: str,
    reason: str,
    params: Mapping[str, Any] | None,
    now: datetime,
    created: Mapping[str, Any],
    pinned: Mapping[str, Any],
    functions: Sequence[RuleFunction] = (),
    typed: bool = False,
    via: str | None = None,
) -> Verdict:
    """A human's approval or rejection of a pending request, judged.

    An approval runs ``params`` (the note's at that moment; None: as recorded). If
    they differ from the requested ones the rules are checked again: a rule with
    ``editable: false`` or a ``block`` turns the approval into a rejection. A person
    not among a matching rule's ``approvers`` (or the submitter's Python rules'
    approvers, ``pinned``) is refused. A decision seen at or after ``expires`` comes
    too late: the request times out instead. ``created``: the params as asked for.

    Where the rules ask for several approvals (:mod:`hitl_vault.policy.quorum`), the decision is
    one person's vote: the verdict carries it and where the votes stand with it, and
    ``to`` stays ``pending`` until they decide. Votes already in that meet rules changed
    since settle an approval; a "no" from someone who may decide still wins then.
    ``typed``: a status typed in the note, which such a request refuses.

    ``via``: the channel the decision was proven through (the service's, never a name
    someone wrote). Under ``authenticated:`` an approval without a channel it allows is
    refused (``unproven`` set); a rejection is judged as any other: stopping is safe.
    """
    if request.expires is not None and now >= request.expires:
        late = f"{to} seen after it expired at {format_ts(request.expires)}"
        return Verdict(Status.TIMED_OUT, details=(late,))
    final = dict(request.params) if params is None else dict(params)
    changes = describe_changes(request.params, final)
    edited = describe_changes(created, final)
    found = rulings(policy, request, (final, created, request.params), functions)
    plan = plan_for(policy, found, pinned)
    if to is Status.APPROVED and plan.authenticated is not None and via not in plan.authenticated:
        unproven = proof_needed(plan.authenticated)
        return Verdict(to, refused=Refusal(by, problem=unproven, unproven=True))
    if typed and plan.by_votes:  # a status typed in the note: votes decide this one
        votes = (
            "this request is decided by votes: write approved or rejected after your own "
            "name under votes: (hitl-vault sets status when the votes decide)"
        )
        return Verdict(to, refused=Refusal(by, problem=votes))
    state = counted(plan, request)
    vote = Vote(by, to is Status.APPROVED, now, reason, via)
    early = _not_among_approvers(plan, found, pinned, state, to, by) or _already_decided(
        plan, state, to, by, reason, now
    )
    if early is not None:
        return early
    problem = refusal(state, vote, requester=request.requested_by)
    if problem is None and plan.by_votes and to is Status.APPROVED and changes:
        problem = (
            f"a vote is for the params as recorded, and these differ ({changes}); save the "
            "params edit in the note on its own first (before anyone votes), then vote"
        )
    if problem is not None:
        return Verdict(to, refused=Refusal(by, problem=problem))
    after = add(state, vote)
    if plan.by_votes and not after.decided:  # a vote that counts; not decided yet
        return Verdict(Status.PENDING, reason=reason, vote=vote, count=after)
    if plan.by_votes:
        by = ", ".join(n for names in after.approvals for n in names) if after.approved else by
    fixed = not_editable(found, pinned) if edited else []
    to, reason = _standing(to, reason, found[0], fixed, edited, changes)
    fields: dict[str, Any] = {"decided_by": by or None, "reason": reason or None, "decided_at": now}
    if to is Status.APPROVED:
        fields["params"] = final
    return Verdict(
        to,
        reason=reason,
        details=(changes,) if changes else (),
        params=final if to is Status.APPROVED else None,
        fields=fields,
        vote=vote if plan.by_votes else None,
        count=after if plan.by_votes else None,
    )


def _not_among_approvers(
    plan: Plan,
    found: Sequence[Ruling],
    pinned: Mapping[str, Any],
    state: Count,
    to: Status,
    by: str,
) -> Verdict | None:
    """Where one person decides: the refusal naming the rule whose approvers ``by`` is not
    among (those it escalated to count too), or None."""
    if plan.by_votes:
        return None
    extra = plan.escalate_to if state.escalated else frozenset()
    for r in found:
        if r.approvers is not None and not among(by, r.approvers | extra):
            return Verdict(to, refused=Refusal(by, r.approvers, r.rule))
    if "approvers" in pinned and not among(by, set(pinned["approvers"]) | extra):
        rule = ", ".join(pinned.get("rules", ())) or "a Python rule"
        return Verdict(to, refused=Refusal(by, frozenset(pinned["approvers"]), rule))
    return None


def _already_decided(
    plan: Plan, state: Count, to: Status, by: str, reason: str, now: datetime
) -> Verdict | None:
    """Votes already in that meet the rules as they stand now: an approval settles it; a
    "no" from someone who may decide still wins (nothing has run). None when they do not."""
    if not state.decided:
        return None
    if to is Status.APPROVED:
        return settled(state, now)
    if state.rejected_by is not None:
        return None
    names = [plan.eligible(i, True) for i in range(len(plan.stages))]
    if any(n is None or among(by, n) for n in names):
        no = {"decided_by": by or None, "reason": reason or None, "decided_at": now}
        return Verdict(Status.REJECTED, reason=reason, fields=no)
    return Verdict(to, refused=Refusal(by, problem=f"{by} is not among its approvers"))


def _standing(
    to: Status, reason: str, ruling: Ruling, fixed: Sequence[str], edited: str, changes: str
) -> tuple[Status, str]:
    """The move that stands and its reason: an approval of params a rule does not let be
    edited, or that a ``block`` rule (a kill switch) stops now, becomes a rejection."""
    if to is Status.APPROVED and fixed:
        return Status.REJECTED, (
            f"params were edited ({edited}) but rule {fixed[0]} does not allow edits "
            "(editable: false)"
        )
    if to is Status.APPROVED and ruling.decision is Decision.BLOCK:
        what = "the edited params are" if changes else "it is now"
        why = f": {ruling.reason}" if ruling.reason else ""
        return Status.REJECTED, f"{what} blocked by rule {ruling.rule}{why}"
    return to, reason


def judge_edit(
    policy: Policy,
    request: Request,
    params: Mapping[str, Any],
    *,
    created: Mapping[str, Any],
    pinned: Mapping[str, Any],
    functions: Sequence[RuleFunction] = (),
) -> str | None:
    """Params edited in a pending note with no decision: the rule that forbids the edit
    (``editable: false``), or None when it may be recorded. Back as asked for is no
    edit at all."""
    if not describe_changes(created, params):
        return None
    found = rulings(policy, request, (params, created, request.params), functions)
    fixed = not_editable(found, pinned)
    return fixed[0] if fixed else None


def judge_run(
    policy: Policy,
    request: Request,
    params: Mapping[str, Any],
    functions: Sequence[RuleFunction] = (),
) -> str | None:
    """An approved request about to run ``params``: why a ``block`` rule in force now
    stops it (the reason to reject it with), or None when it may run (always, in
    monitor mode)."""
    proposal = Proposal(request.action, params, request.summary, request.requested_by)
    ruling = policy.evaluate(proposal, functions)
    if ruling.decision is not Decision.BLOCK or policy.mode is Mode.MONITOR:
        return None  # monitor mode recorded "would block" at submit and lets it run
    return f"blocked by rule {ruling.rule} before it ran" + (
        f": {ruling.reason}" if ruling.reason else ""
    )
