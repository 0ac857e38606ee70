"""The daemon's clock-driven part for pending requests: expiry and escalation.

A pending request nobody decided in time times out at ``expires``; one that has
``escalate_after`` is escalated when that falls due (``escalate_to`` may decide
too). Both are journaled at once (the note shows it once quiet), and the part
says when the next one falls due, so the daemon sleeps until then.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from ..engine import Engine


class Timeouts:
    """Expires and escalates the pending requests whose time came."""

    def __init__(self, engine: Engine, show: Callable[[str], None]) -> None:
        self.engine = engine
        self._show = show  # the request's note is to show what happened (once quiet)

    def expire(self, now: datetime) -> bool:
        """pending → timed_out for each request whose expiry passed; True if any was due."""
        due = self.engine.journal.expiring(before=now)
        for request_id, _ in due:
            if self.engine.expire(request_id, now) is not None:
                self._show(request_id)
        return bool(due)

    def escalate(self, now: datetime) -> bool:
        """Escalate each request whose ``escalate_after`` passed; True if any was due."""
        due = self.engine.journal.escalating(before=now)
        for request_id in due:
            if self.engine.escalate(request_id, now) is not None:
                self._show(request_id)
        return bool(due)

    def next_wake(self, now: datetime) -> datetime | None:
        """When the next pending request expires or escalates (None: none will)."""
        journal = self.engine.journal
        due = [t for t in (journal.next_expiry(), journal.next_escalation()) if t is not None]
        return min(due, default=None)
