"""How soon the daemon's loop steps after what it hears (hitl_vault/daemon/wakes.py): word of
the journal's writes is gathered for a moment, an approval is not (someone waits to see it
run)."""

from __future__ import annotations

from datetime import UTC, datetime

from hitl_vault.daemon.feed import Followed
from hitl_vault.daemon.wakes import Wakes
from hitl_vault.events import Event
from hitl_vault.model import Status, Transition
from hitl_vault.testing import MemoryJournal

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def _event(seq: int, before: Status | None, after: Status) -> Event:
    return Event("r1", Transition(AT, before, after, by="alice"), seq, lambda _: None)


def test_an_approval_heard_from_another_thread_wakes_the_loop_at_once() -> None:
    """A new request heard from another thread waits to be gathered; an approval asks for a
    step at once, so the action starts without the gathering's delay."""
    wakes = Wakes()
    followed = Followed(MemoryJournal(), lambda _: None, lambda *_: None, wakes.heard, wakes.now)
    followed.hear(_event(1, None, Status.PENDING))
    assert wakes.wanted == "soon"  # gathered with the rest of a burst
    followed.hear(_event(2, Status.PENDING, Status.APPROVED))
    assert wakes.wanted == "now"
