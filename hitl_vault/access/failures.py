"""Failed sign-ins as the service log keeps them: per client address, at most one
``auth failed`` entry a minute, with how many failed since the last one.

Counting a failure is cheap (a lock and a dictionary, no write): :meth:`FailureLog.failed`
says when a summary is due, and :meth:`FailureLog.flush` writes the due ones (one store
write each), off the event loop. Call ``flush`` now and then (every few seconds, or when
``failed`` says one is due) and with ``everything=True`` when the service stops, so no
count is lost but to a crash. Whether an address is refused (429) is the service's own
business; this only keeps the record, for every address, refused or not.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..errors import JournalUnavailableError
from ..store import JournalStore, ServiceEntry
from .tokens import client_name, failed

log = logging.getLogger(__name__)

EVERY = timedelta(minutes=1)  # at most one entry per client in this long
# Clients remembered at most (the longest quiet forgotten first); beyond it, failures are
# counted under OTHERS, so no memory grows without end whatever addresses are used.
KEPT = 10_000
OTHERS = "other clients"
SWEEP = timedelta(seconds=1)  # a full table is looked through for quiet clients this often


@dataclass
class _Tally:
    pending: int = 0  # failures not in the log yet
    since: datetime | None = None  # the first of them
    logged: datetime | None = None  # when the client's last entry was written


class FailureLog:
    """Counts failed sign-ins per client for one store's service log, written by ``by``."""

    def __init__(
        self,
        store: JournalStore,
        *,
        by: str = "hitl-vault",
        every: timedelta = EVERY,
        kept: int = KEPT,
    ) -> None:
        self._store = store
        self._by = by
        self._every = every
        self._kept = kept
        self._lock = threading.Lock()
        self._tallies: dict[str, _Tally] = {}  # the most recently failed last
        self._swept: datetime | None = None

    def failed(self, client: str, now: datetime) -> bool:
        """Count one failed sign-in from ``client`` (no write); whether a summary is due,
        for :meth:`flush` to write."""
        name = client_name(client)
        with self._lock:
            tally = self._tallies.pop(name, None)
            if tally is None and len(self._tallies) >= self._kept:
                self._forget(now)
                if len(self._tallies) >= self._kept:
                    name, tally = OTHERS, self._tallies.pop(OTHERS, None)
            tally = tally or _Tally()
            self._tallies[name] = tally
            tally.pending += 1
            tally.since = tally.since or now
            return self._due(tally, now)

    def flush(self, now: datetime, *, everything: bool = False) -> list[ServiceEntry]:
        """Write a summary for each client whose count is due (``everything``: every count
        not written yet, as the service stops). A write the store is too busy for is kept
        for the next flush."""
        with self._lock:
            due = [
                (name, tally.pending, tally.since)
                for name, tally in self._tallies.items()
                if tally.pending and (everything or self._due(tally, now))
            ]
            for name, _, _ in due:
                self._tallies[name].pending, self._tallies[name].since = 0, None
                self._tallies[name].logged = now
        written: list[ServiceEntry] = []
        for name, count, since in due:
            try:
                written.append(failed(self._store, name, count, now, self._by, since=since))
            except JournalUnavailableError:  # busy: the count waits for the next flush
                log.debug("could not record failed sign-ins from %s yet", name, exc_info=True)
                with self._lock:
                    tally = self._tallies.setdefault(name, _Tally())
                    tally.pending += count
                    tally.since = min(since, tally.since) if since and tally.since else since
                    tally.logged = None
        return written

    def pending(self) -> dict[str, int]:
        """The failures not in the log yet, by client."""
        with self._lock:
            return {name: t.pending for name, t in self._tallies.items() if t.pending}

    def _due(self, tally: _Tally, now: datetime) -> bool:
        return tally.pending > 0 and (tally.logged is None or now - tally.logged >= self._every)

    def _forget(self, now: datetime) -> None:
        """Forget the clients with nothing pending whose minute is over (under the lock), at
        most once a :data:`SWEEP`: a flood of new addresses costs no more than that."""
        if self._swept is not None and now - self._swept < SWEEP:
            return
        self._swept = now
        for name in [
            name
            for name, t in self._tallies.items()
            if not t.pending and (t.logged is None or now - t.logged >= self._every)
        ]:
            del self._tallies[name]
