"""What the journal's feed told the daemon, acted on by the daemon's own thread.

Every transition reaches the daemon as an event once committed, whoever made it
(a save seen here, the CLI, a script, another process). The listener only
writes down what it heard, on whichever thread published; the daemon's step
acts on it: an approval is queued to run, and the note is to show what happened.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from ..model import Kind, Status

if TYPE_CHECKING:
    from ..events import Event


class Followed:
    """Transitions heard from the feed, waiting for the daemon's step to act on them."""

    def __init__(
        self,
        queue: Callable[[str], None],
        show: Callable[[str, datetime, bool], None],
        wake: Callable[[], None],
        wake_now: Callable[[], None] | None = None,
    ) -> None:
        self._queue = queue  # an approved request that may run now
        # the request's note is to show what happened (once quiet, unless it already does),
        # told when the daemon heard of it and whether the entry is the request's creation
        self._show = show
        self._wake = wake  # tells the daemon there is something to act on
        # ... and that it is an approval, which someone waits to see run: a step at once
        self._wake_now = wake_now or wake
        self._lock = threading.Lock()
        # heard: the request, the status a move took it to (None: no move), its creation?
        self._heard: list[tuple[str, Status | None, bool]] = []

    def hear(self, event: Event) -> None:
        """A journal entry, whoever made it (called on the thread that published); the
        daemon's step acts on it (runs an approval, shows it in the note)."""
        moved = event.transition.kind is Kind.TRANSITION  # not a vote, an edit, a refusal
        created = event.transition.from_status is None
        with self._lock:
            self._heard.append((event.request_id, event.status if moved else None, created))
        (self._wake_now if moved and event.status is Status.APPROVED else self._wake)()

    def act(self, now: datetime) -> None:
        """On the daemon's thread, at ``now``: queue what was approved; each note is to show
        the journal."""
        with self._lock:
            heard, self._heard = self._heard, []
        # A retry's creation journals a ``retried as`` entry on the request it retries, in
        # the same commit: heard as an entry of that request, whose note then shows the link.
        for request_id, status, created in heard:
            if status is Status.APPROVED:
                self._queue(request_id)
            self._show(request_id, now, created)
