"""Lifecycle events: every transition, once, to whoever listens.

The journal is the one place a transition is recorded; :meth:`Events.publish`
reads what it recorded since the last call (its change feed) and calls each
listener whose statuses match. So a listener hears a transition once, after it
is committed (never one that was rolled back), whichever process made it. A
listener's exception is logged and never reaches the code that made the
transition: telling people is never a reason for a decision not to stand.

A *durable* listener (:meth:`Events.durable`, the daemon's notifier) hears every
entry once across restarts: its position in the feed is a cursor kept in the
journal, moved in the same commit as what the listener recorded, so what was
recorded while it did not run (no daemon, say) is handed to it when
:meth:`Events.catch_up` next runs, and nothing is handed to it twice.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING

from .model import Kind, Request, Status, Transition

if TYPE_CHECKING:
    from .store import JournalStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Event:
    """One transition of one request, as the journal recorded it."""

    request_id: str
    transition: Transition
    seq: int  # its place in the journal: events arrive in this order
    _load: Callable[[str], Request | None] = field(repr=False, compare=False)

    @property
    def status(self) -> Status:
        """Where the request went."""
        return self.transition.to_status

    @cached_property
    def request(self) -> Request | None:
        """The request as the journal has it now (read on first use; it may have moved on)."""
        return self._load(self.request_id)


# A listener: a plain callable given each event it registered for (as structlog's processors).
Listener = Callable[[Event], None]
# Called once ever for a durable listener, when its cursor is made (it hears no past).
Start = Callable[[], None]


class Events:
    """Listeners by the statuses they want, and the journal position heard up to.

    Listeners are called one at a time, on the thread that published, in journal order.
    """

    def __init__(self, journal: JournalStore) -> None:
        self.journal = journal
        self._lock = threading.Lock()
        # (listener, the statuses it wants or None, whether it hears every kind of entry)
        self._listeners: list[tuple[Listener, frozenset[Status] | None, bool]] = []
        self.seen: int | None = None  # the journal position published up to
        # Held while reading the feed and calling listeners, so no entry is handed on twice;
        # re-entrant, so a listener may act on the vault (its own events follow at once).
        self.publishing = threading.RLock()
        self._durable: dict[str, tuple[Listener, Start | None]] = {}  # by cursor name

    def __bool__(self) -> bool:
        return bool(self._listeners)

    def listen(
        self, listener: Listener, statuses: Iterable[Status | str] = (), *, every: bool = False
    ) -> Listener:
        """:meth:`add`, hearing what happens from now on (no replay of the journal)."""
        if not self:
            self.seen = self.journal.last_seq()
        return self.add(listener, statuses, every=every)

    def publish(self) -> int:
        """Hand what the journal recorded since the last call to the listeners, once each.

        Called after every operation, and by the daemon after each commit; inside a
        batch that has not committed yet it waits for the commit. Returns how many
        entries there were (0 when nobody listens: then nothing is read).
        """
        if not self or self.journal.batching:
            return 0
        with self.publishing:  # one thread at a time: each entry is handed on once
            if self.seen is None:
                self.seen = self.journal.last_seq()
            entries = self.journal.feed(self.seen)
            if entries:
                self.seen = entries[-1][0]
            load = functools.partial(self.journal.get, history=False)
            return self.emit(Event(rid, t, seq, load) for seq, rid, t in entries)

    def recorded(self) -> list[Event]:
        """What the journal recorded after the published position, inside a batch its own
        uncommitted entries too, without telling anyone or moving the position: for work
        done in the same commit (the daemon claims an approval with it), which a rollback
        undoes with them. Listeners hear these entries at the next :meth:`publish`."""
        seen = self.seen
        if seen is None:  # nobody listens: nothing is published either
            return []
        load = functools.partial(self.journal.get, history=False)
        return [Event(rid, t, seq, load) for seq, rid, t in self.journal.feed(seen)]

    def durable(self, name: str, listener: Listener, *, first: Start | None = None) -> Listener:
        """Hand ``listener`` every journal entry once, across restarts, at :meth:`catch_up`.

        Its position is the journal's cursor ``name`` (one listener per name: registering
        the name again replaces it). The first time ever, it starts at the journal's end
        and ``first`` is called instead of replaying the past. What the listener writes to
        the journal commits with its cursor: if it raises, neither happened, and it is
        handed the same entries at the next :meth:`catch_up`.
        """
        with self._lock:
            self._durable[name] = (listener, first)
        return listener

    def catch_up(self) -> int:
        """Hand each durable listener the entries after its cursor, each listener in one
        commit with its cursor; how many entries were handed on. A listener's exception
        is raised here, after the others had their turn (it is retried next time)."""
        with self._lock:
            durable = list(self._durable.items())
        count = 0
        failed: Exception | None = None
        for name, (listener, first) in durable:
            try:
                count += self._catch_up(name, listener, first)
            except Exception as e:  # raised below: the caller retries, the others go on
                failed = failed or e
        if failed is not None:
            raise failed
        return count

    def _catch_up(self, name: str, listener: Listener, first: Start | None) -> int:
        journal = self.journal
        if journal.cursor(name) == journal.last_seq():
            return 0  # nothing new: no write lock taken
        with journal.batch():  # read again inside: the position and the feed agree
            start, last = journal.cursor(name), journal.last_seq()
            if start is None:
                entries = []
                if first is not None:
                    first()
            else:
                entries = journal.feed(start)
            load = functools.partial(journal.get, history=False)
            for seq, request_id, t in entries:
                listener(Event(request_id, t, seq, load))
            journal.move_cursor(name, entries[-1][0] if entries else last)
        return len(entries)

    def add(
        self, listener: Listener, statuses: Iterable[Status | str] = (), *, every: bool = False
    ) -> Listener:
        """Call ``listener`` for every transition into one of ``statuses`` (none: every one);
        with ``every``, for every journal entry (a vote, an escalation, an edit) as well."""
        wanted = frozenset(Status.named(s) for s in statuses) or None
        with self._lock:
            self._listeners.append((listener, wanted, every))
        return listener

    def remove(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [e for e in self._listeners if e[0] is not listener]

    def emit(self, events: Iterable[Event]) -> int:
        """Hand each event to the listeners that want it; returns how many events there were."""
        with self._lock:
            listeners = list(self._listeners)
        count = 0
        for event in events:
            count += 1
            moved = event.transition.kind is Kind.TRANSITION  # a vote or an edit is no move
            for listener, wanted, every in listeners:
                if not (moved or every) or (wanted is not None and event.status not in wanted):
                    continue
                try:
                    listener(event)
                except Exception:  # never raised: the transition stands either way
                    log.exception(
                        "listener %s failed on %s %s",
                        getattr(listener, "__qualname__", listener),
                        event.request_id,
                        event.transition.move,
                    )
        return count
