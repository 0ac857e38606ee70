"""Journaling a human's decision: judged by the rules in force (:func:`judge`), then a vote,
a decision, or both written in one transaction.

:class:`Decider` is handed the journal, the rules in force (a callable: they are reloaded)
and this process's Python rules; the API, the CLI and the notes all decide through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from datetime import datetime
from typing import Any

from ..chain import RECORDER_ACTOR, RECORDER_UID
from ..errors import (
    DecisionRefusedError,
    NotAnApproverError,
    RulesError,
    UnprovenDecisionError,
)
from ..identity import (
    NAME_FIX,
    Proof,
    name_problem,
    proof_counts,
    proof_details,
    proofs_kept,
    proven_by,
    same_name,
)
from ..model import Request, Status, Transition
from ..policy.quorum import Plan
from ..policy.rules import Policy, RuleFunction
from ..policy.verdict import Verdict, counted, judge, plan_for, rulings, settled
from ..store import JournalStore, request_flag
from ..text import one_line


class Decider:
    """Judges and journals approvals, rejections and votes of pending requests."""

    def __init__(
        self,
        journal: JournalStore,
        policy: Callable[[], Policy],
        functions: Sequence[RuleFunction],
    ) -> None:
        self.journal = journal
        self._policy = policy
        self._functions = functions

    def policy(self) -> Policy:
        """The rules in force."""
        return self._policy()

    @property
    def functions(self) -> Sequence[RuleFunction]:
        """This process's Python rules."""
        return self._functions

    def plan(self, request: Request, *, code: bool = True) -> Plan:
        """Who decides ``request`` under the rules in force (its params as asked for, and as
        they stand); ``code=False``: without calling this process's Python rules (what
        they said at submit is pinned with the request)."""
        policy = self._policy()
        versions = (request.params, self.journal.created_params(request.id))
        found = rulings(policy, request, versions, self._functions if code else ())
        return plan_for(policy, found, self.journal.pinned(request.id))

    def counting(self, request: Request) -> Request:
        """``request`` as the rules count its votes: a proof stands only in an entry the
        service recorded (the recorder's uid is the one ``serve`` keeps for its host);
        another process's ``via`` detail is read as the name it claims and no more."""
        return counted_proofs(self.journal, request)

    def proof_counts(self) -> bool:
        """Whether a proof this process records counts: it runs as the service's user on
        this host."""
        return proof_counts(self.journal, RECORDER_UID, RECORDER_ACTOR)

    def decide(
        self,
        request: Request,
        to: Status,
        *,
        by: str,
        reason: str,
        params: Mapping[str, Any] | None,
        now: datetime,
        typed: bool = False,
        proof: Proof | None = None,
    ) -> Transition | None:
        """Judge a human's approval or rejection of a pending request (:func:`judge`) and
        journal the verdict: a vote, then the decision when the votes make one. Raises
        :class:`DecisionRefusedError` when ``by``'s decision does not count; None when the
        request was no longer pending. ``typed``: a status typed in the note (or its folder),
        which a request decided by votes refuses. ``proof``: the service proved who decides
        (``by`` is then its name); the vote, or the decision one person makes, keeps its
        ``via`` detail, and ``authenticated:`` rules count it, when this process runs as
        the service's user (else ``by`` is only the name it claims)."""
        credential = None if proof is None else proof.credential  # kept even as a claim
        if proof is not None:
            by = proof.name
            if not self.proof_counts():  # not the service's process: a name, not a proof
                proof = None
        problem = name_problem(by) if by else None  # no name: "unknown", judged as such
        if problem is not None:
            raise DecisionRefusedError(request.id, by, f"{problem} ({NAME_FIX})")
        via = None if proof is None else proof.via
        verdict = self._verdict(request, to, by, reason, params, now, typed, via)
        # The vote and the decision it completes are written together, judged on the votes
        # the journal holds inside the same transaction: two people voting at the same
        # moment are counted one after the other, never both as "1 of 2". (Inside the daemon's
        # batch, that is its transaction.)
        batching = self.journal.batching  # then ``request`` was read in this transaction
        with nullcontext() if batching else self.journal.batch():
            fresh = None if batching else self.journal.get(request.id)
            if fresh is not None and len(fresh.history) != len(request.history):
                request = fresh  # something was recorded meanwhile: judge again
                verdict = self._verdict(request, to, by, reason, params, now, typed, via)
            proven = () if proof is None else proof_details(proof)
            if verdict.vote is None or verdict.count is None:
                return self.transition(request, verdict, by, now, proven, credential)
            v, c = verdict.vote, verdict.count
            done = sum(len(a) for a in c.approvals)
            need = sum(s.quorum for s in c.plan.stages)
            t = self.journal.record_vote(
                request.id,
                at=now,
                by=v.name,
                approve=v.approve,
                reason=v.reason,
                count=f"{done} of {need}" if v.approve else "rejects it",
                details=proven,
                credential=credential,
            )
            if t is None or verdict.to is Status.PENDING:
                return t
            return self.transition(request, verdict, by, now, credential=credential)

    def _verdict(
        self,
        request: Request,
        to: Status,
        by: str,
        reason: str,
        params: Mapping[str, Any] | None,
        now: datetime,
        typed: bool = False,
        via: str | None = None,
    ) -> Verdict:
        """:func:`judge`; raises :class:`DecisionRefusedError` when ``by``'s does not count."""
        verdict = judge(
            self._policy(),
            self.counting(request),
            to,
            by=by,
            reason=reason,
            params=params,
            now=now,
            created=self.journal.created_params(request.id),
            pinned=self.journal.pinned(request.id),
            functions=self._functions,
            typed=typed,
            via=via,
        )
        if verdict.refused is not None:
            r = verdict.refused
            if r.unproven:
                raise UnprovenDecisionError(request.id, r.by, r.problem)
            if r.problem:
                raise DecisionRefusedError(request.id, r.by, r.problem)
            raise NotAnApproverError(request.id, r.by, r.approvers, r.rule)
        return verdict

    def transition(
        self,
        request: Request,
        verdict: Verdict,
        by: str,
        now: datetime,
        proven: tuple[str, ...] = (),
        credential: str | None = None,
    ) -> Transition | None:
        """Journal the move ``verdict`` makes of a pending request (None: not pending);
        ``proven``: the ``via`` detail of the one person who made it, kept last;
        ``credential``: the one the decision came with through the service."""
        if verdict.to is Status.TIMED_OUT:
            return self.journal.transition(
                request.id,
                Status.TIMED_OUT,
                at=now,
                by="hitl-vault",
                expect={Status.PENDING},
                details=verdict.details,
            )
        return self.journal.transition(
            request.id,
            verdict.to,
            at=now,
            by=str(verdict.fields.get("decided_by") or by or "unknown"),
            reason=verdict.reason,
            details=verdict.details + (proven if _one(verdict, by) else ()),
            expect={Status.PENDING},
            fields=dict(verdict.fields),
            credential=credential,
        )

    def rule_failed(
        self, request: Request, what: str, error: RulesError, now: datetime, where: str = ""
    ) -> str:
        """A Python rule raised while judging ``what`` (a decision, an edit) of a pending
        request: nothing is recorded but that. It is listed under Needs attention (at
        ``where``, else as the request) and, the first time, in its history. The message."""
        message = f"{what} not recorded, the request stays pending: {error}"
        shown = f"{where}: {message}" if where else f"request {request.id}: {message}"
        if self.journal.flag(where or request_flag(request.id), shown, now, request.id):
            self.journal.record_ignored(request.id, now, (one_line(message, 400),))
        return shown

    def unproven(self, request: Request, error: UnprovenDecisionError, now: datetime) -> None:
        """An approval made through the API or the CLI that ``authenticated:`` does not
        count: journaled as not acted on and listed under Needs attention, as a refused
        note edit is, so the owner sees that someone approved in a name without proof."""
        message = f"{error.who or 'someone'}'s approval not counted: {error.problem}"
        shown = f"request {request.id}: {message}"
        if self.journal.flag(request_flag(request.id), shown, now, request.id):
            self.journal.record_ignored(request.id, now, (one_line(message, 400),))

    def settle(self, request_id: str, now: datetime) -> Transition | None:
        """A pending request whose recorded votes decide it under the rules in force (they
        changed since: a lower quorum, a stage gone) is decided so; None when they do not."""
        first = self.journal.get(request_id)
        if first is None or first.status is not Status.PENDING or not first.votes():
            return None  # the usual case, with no write lock taken
        with self.journal.batch():
            request = self.journal.get(request_id)
            if request is None or request.status is not Status.PENDING or not request.votes():
                return None
            state = counted(self.plan(request, code=False), self.counting(request))
            if not state.decided:
                return None
            return self.transition(request, settled(state, now), "", now)


def counted_proofs(journal: JournalStore, request: Request) -> Request:
    """``request`` with a ``via`` detail kept only where a service process recorded it
    (see :func:`~hitl_vault.identity.proofs_kept`): what the rules count, and what a
    person is told was proven."""
    if not any(proven_by(t) for t in request.history):
        return request  # the usual case: nothing to look up
    recorders = [(e.uid, e.actor) for e in journal.entries(request.id)]
    return proofs_kept(journal, request, recorders)


def _one(verdict: Verdict, by: str) -> bool:
    """Whether ``by`` alone made the decision ``verdict`` records (not votes already in)."""
    return same_name(str(verdict.fields.get("decided_by") or by)) == same_name(by)
