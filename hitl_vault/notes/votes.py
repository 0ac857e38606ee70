"""Votes in notes: who decides a request, the ``votes:`` lines its note shows, the votes
written there, and votes that decide a request once the rules change.

:class:`Voting` is mixed into :class:`~hitl_vault.notes.reconcile.Reconciler`, which provides the
journal, the rules and :meth:`~hitl_vault.notes.reconcile.Reconciler.decide`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..errors import DecisionRefusedError, NoteError, RulesError
from ..model import Request, Status, Transition
from ..policy.quorum import Plan, count
from ..policy.rules import Policy, RuleFunction
from ..policy.verdict import Verdict, counted, plan_for, rulings, settled, votes_of
from ..store import JournalStore
from ..text import one_line
from .edit import NOT_COUNTED, vote_lines
from .file import Note
from .render import history_key, read_refused_vote, refused_vote
from .state import note_votes


class Voting:
    """Mixed into :class:`~hitl_vault.notes.reconcile.Reconciler`, which provides these."""

    journal: JournalStore
    _policy: Callable[[], Policy]
    _functions: Sequence[RuleFunction]
    decide: Callable[..., Transition | None]
    rule_failed: Callable[..., str]
    _transition: Callable[[Request, Verdict, str, datetime], Transition | None]

    def plan(self, request: Request, *, code: bool = True) -> Plan:
        """Who decides ``request`` under the rules in force (its params as asked for, and as
        they stand); ``code=False``: without calling this process's Python rules (what
        they said at submit is pinned with the request)."""
        policy = self._policy()
        versions = (request.params, self.journal.created_params(request.id))
        found = rulings(policy, request, versions, self._functions if code else ())
        return plan_for(policy, found, self.journal.pinned(request.id))

    def _record_votes(
        self, note: Note, request: Request, params: dict[str, Any], now: datetime
    ) -> tuple[Transition | None, str | None]:
        """The votes written under ``votes:`` that the journal does not hold yet, each
        judged and recorded in the order of the lines; what did not count is returned.

        A line that did not count is journaled as such, and the note marks it ``# not
        counted: <why>``; it is never counted later on its own (when its stage opens, after
        an escalation, for params edited since): the human deletes the mark to vote again.
        """
        try:
            lines = note_votes(note)
        except NoteError as e:
            return None, str(e)
        recorded = {t.by: t.to_status for t in request.votes()}
        refused = {
            (found[0], found[1]): t
            for t in request.history
            if (found := read_refused_vote(t)) is not None
        }
        shown = {history_key(line) for line in note.lines[note.fm_end + 1 :]}
        raw = vote_lines(note)
        acted: Transition | None = None
        problems: list[str] = []
        for name, (vote, reason) in lines.items():
            if vote is None or recorded.get(name) is vote:
                continue
            earlier = refused.get((name, str(vote)))
            if earlier is not None and (
                NOT_COUNTED in raw.get(name, "") or earlier.key not in shown
            ):
                problems.append(
                    f"{note.where}: {earlier.details[0]} (delete the {NOT_COUNTED!r} "
                    "comment on the line to vote again)"
                )
                continue
            if name in recorded:
                problems.append(
                    f"{note.where}: {name} {recorded[name]} already; a vote cannot be changed "
                    f"(it will be shown as {recorded[name]} again)"
                )
                continue
            current = self.journal.get(request.id)
            if current is None or current.status is not Status.PENDING:
                break
            try:
                acted = self.decide(
                    current, vote, by=name, reason=reason, now=now,
                    params=params if vote is Status.APPROVED else None,
                ) or acted  # fmt: skip
            except DecisionRefusedError as e:
                problems.append(f"{note.where}: {e}")
                detail = one_line(refused_vote(name, vote, e.problem), 400)
                self.journal.record_ignored(request.id, now, (detail,))
            except RulesError as e:  # fail closed: not recorded, pending, and said
                problems.append(self.rule_failed(current, f"{name}'s vote", e, now, note.where))
                break
        return acted, "; ".join(problems) or None

    def approval_view(self, request: Request) -> tuple[dict[str, str] | None, list[str]]:
        """For a request decided by votes: the ``votes:`` lines its note should show, and
        what the callout says is still needed (now first, then what it said before, to
        find it by); (None, []) for a request one person decides."""
        pending = request.status is Status.PENDING
        if not pending and not request.votes():
            return None, []
        plan = self.plan(request, code=False)  # only showing: what Python rules said is pinned
        if not plan.by_votes:
            return None, []
        recorded = request.votes()
        votes = {t.by: str(t.to_status) for t in recorded}
        said = [
            count(plan, votes_of(replace(request, history=request.history[:k])),
                  requester=request.requested_by, escalated=e).progress()
            for k in range(len(request.history) + 1) for e in (False, True)
        ]  # fmt: skip
        if not pending:
            return votes, ["", *said]
        state = counted(plan, request)
        for name in state.waiting_for() or ():
            votes.setdefault(name, "")
        return votes, [state.progress(), *said]

    # --- deciding -------------------------------------------------------------

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
            state = counted(self.plan(request, code=False), request)
            if not state.decided:
                return None
            return self._transition(request, settled(state, now), "", now)
