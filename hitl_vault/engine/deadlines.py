"""The steps time takes with a pending request: escalation once nobody decided by
``escalate_after``, and expiry (pending → timed_out).

:class:`Deadlines` is handed the journal, who decides a request (its plan) and a way to
tell the listeners; the daemon calls it when a deadline falls due, and a decision or a
``wait`` made with no daemon running catches up through it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ..model import Request, Status, Transition
from ..policy.quorum import Plan
from ..store import JournalStore


class Deadlines:
    """Escalates and expires pending requests when their time comes."""

    def __init__(
        self,
        journal: JournalStore,
        plan: Callable[[Request], Plan],
        publish: Callable[[], object],
    ) -> None:
        self._journal = journal
        self._plan = plan
        self._publish = publish

    def escalate(self, request: Request, now: datetime) -> Transition | None:
        """Nobody decided by ``escalate_after``: ``escalate_to`` may decide too (None: it
        was decided, or escalated, first)."""
        names = sorted(self._plan(request).escalate_to)
        to = "to " + (", ".join(names) or "nobody")
        t = self._journal.record_escalation(request.id, now, to)
        self._publish()
        return t

    def escalate_if_due(self, request: Request, now: datetime) -> Transition | None:
        """The escalation of a pending request that fell due with no daemon to see it."""
        due = request.escalate_at is not None and request.escalate_at <= now
        if request.status is Status.PENDING and due:
            return self.escalate(request, now)
        return None

    def expire(self, request_id: str, now: datetime) -> Transition | None:
        """pending → timed_out, unless it was decided first (then None)."""
        t = self._journal.transition(
            request_id, Status.TIMED_OUT, at=now, by="hitl-vault", expect={Status.PENDING}
        )
        self._publish()
        return t
