"""The daemon's clock-driven part for pending requests: expiry and escalation.

A pending request nobody decided in time times out at ``expires``; one that has
``escalate_after`` is escalated when that falls due (``escalate_to`` may decide
too). Both are journaled at once (the note shows it once quiet), and the part
says when the next one falls due, so the daemon sleeps until then.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..model import Transition
    from ..store import JournalStore

# What moves one request on at ``now`` (None: it was decided, or moved on, first).
Step = Callable[[str, datetime], "Transition | None"]


class Timeouts:
    """Expires and escalates the pending requests whose time came."""

    def __init__(
        self, journal: JournalStore, expire: Step, escalate: Step, show: Callable[[str], None]
    ) -> None:
        self.journal = journal
        self._expire = expire  # pending → timed_out (:meth:`Engine.expire`)
        self._escalate = escalate  # escalate_to may decide too (:meth:`Engine.escalate`)
        self._show = show  # the request's note is to show what happened (once quiet)

    def expire(self, now: datetime) -> bool:
        """pending → timed_out for each request whose expiry passed; True if any was due."""
        due = self.journal.expiring(before=now)
        for request_id, _ in due:
            if self._expire(request_id, now) is not None:
                self._show(request_id)
        return bool(due)

    def escalate(self, now: datetime) -> bool:
        """Escalate each request whose ``escalate_after`` passed; True if any was due."""
        due = self.journal.escalating(before=now)
        for request_id in due:
            if self._escalate(request_id, now) is not None:
                self._show(request_id)
        return bool(due)

    def next_wake(self, now: datetime) -> datetime | None:
        """When the next pending request expires or escalates (None: none will)."""
        journal = self.journal
        due = [t for t in (journal.next_expiry(), journal.next_escalation()) if t is not None]
        return min(due, default=None)
