"""Long-polls: every open ``?wait=`` of the service, woken by the journal's own events.

One listener on the engine's events (the daemon in the same process publishes every write,
whichever process made it) wakes only the waits on the request that moved, on the event
loop that holds them. A wait costs an :class:`asyncio.Event` and a set entry: a thousand
open waits poll nothing and hold no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

from ..events import Event

log = logging.getLogger(__name__)


class Waiters:
    """The open waits, by request id, on one event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # the dict is read by the publishing thread
        self._by_id: dict[str, set[asyncio.Event]] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the waits run on (the server's)."""
        self._loop = loop

    def __len__(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._by_id.values())

    def heard(self, event: Event) -> None:
        """An engine listener (any thread): wake the waits on ``event``'s request."""
        self.poke(event.request_id)

    def poke(self, request_id: str) -> None:
        """Wake the waits on ``request_id`` (any thread; nothing to do when none wait)."""
        loop = self._loop
        with self._lock:
            waiting = list(self._by_id.get(request_id, ()))
        if not waiting or loop is None:
            return
        for wake in waiting:
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(wake.set)

    def poke_all(self) -> None:
        """Wake every wait (each re-reads its request): after events may have been lost."""
        with self._lock:
            ids = list(self._by_id)
        for request_id in ids:
            self.poke(request_id)

    @contextlib.contextmanager
    def waiting(self, request_id: str) -> Iterator[asyncio.Event]:
        """An event set whenever ``request_id`` may have moved, for as long as inside."""
        wake = asyncio.Event()
        with self._lock:
            self._by_id.setdefault(request_id, set()).add(wake)
        try:
            yield wake
        finally:
            with self._lock:
                left = self._by_id.get(request_id)
                if left is not None:
                    left.discard(wake)
                    if not left:
                        del self._by_id[request_id]


@contextlib.contextmanager
def following_journal(
    watch: Callable[[Callable[[], None]], AbstractContextManager[None]],
    publish: Callable[[], int],
) -> Iterator[None]:
    """Without a daemon in this process, nobody publishes other processes' writes: while
    inside, the store's word of a write has the engine publish them, on a thread of its own
    (the store's watcher thread never waits for the journal; writes meanwhile are read
    together)."""
    wrote = threading.Event()
    stopping = False

    def publisher() -> None:
        while True:
            wrote.wait()
            wrote.clear()
            if stopping:
                return
            try:
                publish()
            except Exception:  # the next write tries again; a wait's own timer is the net
                log.exception("could not read the journal's new entries")

    thread = threading.Thread(target=publisher, name="hitl-vault-publish", daemon=True)
    thread.start()
    try:
        with watch(wrote.set):
            yield
    finally:
        stopping = True
        wrote.set()
        thread.join()
