"""Votes in notes: the votes written under a note's ``votes:`` map, each judged and
recorded, and the ``votes:`` lines and callout text a note decided by votes shows.

:class:`Votes` is handed the journal and the :class:`~hitl_vault.notes.decide.Decider`
each vote is judged by.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from ..errors import DecisionRefusedError, NoteError, RulesError
from ..identity import same_name
from ..model import Request, Status, Transition
from ..policy.quorum import count
from ..policy.verdict import counted, votes_of
from ..store import JournalStore
from ..text import one_line
from .decide import Decider
from .edit import NOT_COUNTED, vote_lines
from .file import Note
from .render import history_key, read_refused_vote, refused_vote
from .state import note_votes


class Votes:
    """Records the votes written in notes and says what a voted note should show."""

    def __init__(self, journal: JournalStore, decider: Decider) -> None:
        self.journal = journal
        self._decider = decider

    def record(
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
        recorded = {same_name(t.by): (t.by, t.to_status) for t in request.votes()}
        refused = {
            (same_name(found[0]), found[1]): t
            for t in request.history
            if (found := read_refused_vote(t)) is not None
        }
        shown = {history_key(line) for line in note.lines[note.fm_end + 1 :]}
        raw = vote_lines(note)
        acted: Transition | None = None
        problems: list[str] = []
        for name, (vote, reason) in lines.items():
            key = same_name(name)  # Alice and alice are one person
            if vote is None or recorded.get(key, ("", None))[1] is vote:
                continue
            earlier = refused.get((key, str(vote)))
            if earlier is not None and (
                NOT_COUNTED in raw.get(name, "") or earlier.key not in shown
            ):
                problems.append(
                    f"{note.where}: {earlier.details[0]} (delete the {NOT_COUNTED!r} "
                    "comment on the line to vote again)"
                )
                continue
            if key in recorded:
                known, status = recorded[key]
                problems.append(
                    f"{note.where}: {known} {status} already; a vote cannot be changed "
                    f"(it will be shown as {status} again)"
                )
                continue
            current = self.journal.get(request.id)
            if current is None or current.status is not Status.PENDING:
                break
            try:
                acted = self._decider.decide(
                    current, vote, by=name, reason=reason, now=now,
                    params=params if vote is Status.APPROVED else None,
                ) or acted  # fmt: skip
            except DecisionRefusedError as e:
                problems.append(f"{note.where}: {e}")
                detail = one_line(refused_vote(name, vote, e.problem), 400)
                self.journal.record_ignored(request.id, now, (detail,))
            except RulesError as e:  # fail closed: not recorded, pending, and said
                what = f"{name}'s vote"
                problems.append(self._decider.rule_failed(current, what, e, now, note.where))
                break
        return acted, "; ".join(problems) or None

    def proven(self, request: Request) -> frozenset[str] | None:
        """The channels its rules' ``authenticated:`` count an approval from (None: any
        decision counts), for what its note tells a person to do."""
        return self._decider.plan(request, code=False).authenticated

    def approval_view(self, request: Request) -> tuple[dict[str, str] | None, list[str]]:
        """For a request decided by votes: the ``votes:`` lines its note should show, and
        what the callout says is still needed (now first, then what it said before, to
        find it by); (None, []) for a request one person decides."""
        pending = request.status is Status.PENDING
        if not pending and not request.votes():
            return None, []
        request = self._decider.counting(request)  # only the service's proofs count
        # Only showing: what Python rules said is pinned with the request.
        plan = self._decider.plan(request, code=False)
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
