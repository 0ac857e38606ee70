"""Long-polls: every open ``?wait=`` of the service, woken by the journal's own events.

One listener on the engine's events (the daemon in the same process publishes every write,
whichever process made it) looks at the waits on the request that moved, on the thread that
published: a wait whose request moved gets its answer read there, and only then is its event
loop woken, to send it. A busy service's loop and worker threads are then no stops on the
way from a decision to the answer. A wait costs an :class:`asyncio.Event` and a set entry:
a thousand open waits poll nothing and hold no thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any

from ..events import Event

log = logging.getLogger(__name__)


class Wait:
    """One open wait: the event its loop waits on, and, once its request has moved, the
    answer (or the error) the publishing thread read for it."""

    def __init__(self, look: Callable[[], tuple[bool, Any]]) -> None:
        self.wake = asyncio.Event()
        self._look = look  # (moved?, the answer), on any thread
        self._lock = threading.Lock()
        self._answer: tuple[Any, BaseException | None] | None = None

    def looked(self) -> bool:
        """On the publishing thread: whether the request moved (the answer is read then)."""
        if self._answer is not None:
            return False  # answered already: its loop is on its way
        error: Exception | None = None
        try:
            moved, answer = self._look()
        except Exception as e:  # raised where the wait is
            moved, answer, error = True, None, e
        with self._lock:  # (two threads that published at once: the first answer stands)
            if not moved or self._answer is not None:
                return False
            self._answer = (answer, error)
        return True

    def answer(self) -> tuple[bool, Any]:
        """On the loop, once woken: (True, the answer) if the publishing thread read one
        (its error raised here), else (False, None)."""
        with self._lock:
            if self._answer is None:
                return False, None
            answer, error = self._answer
        if error is not None:
            raise error
        return True, answer


class Waiters:
    """The open waits, by request id, on one event loop."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # the dict is read by the publishing thread
        self._by_id: dict[str, set[Wait]] = {}

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The loop the waits run on (the server's)."""
        self._loop = loop

    def __len__(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._by_id.values())

    def heard(self, event: Event) -> None:
        """An engine listener (any thread): look at the waits on ``event``'s request."""
        self.poke(event.request_id, look=True)

    def poke(self, request_id: str, *, look: bool = False) -> None:
        """Wake the waits on ``request_id`` (any thread; nothing to do when none wait);
        with ``look``, only those whose request moved, their answers read here first."""
        loop = self._loop
        with self._lock:
            waiting = list(self._by_id.get(request_id, ()))
        if not waiting or loop is None:
            return
        for wait in waiting:
            if look and not wait.looked():
                continue
            with contextlib.suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(wait.wake.set)

    def poke_all(self) -> None:
        """Wake every wait (each re-reads its request): after events may have been lost."""
        with self._lock:
            ids = list(self._by_id)
        for request_id in ids:
            self.poke(request_id)

    @contextlib.contextmanager
    def waiting(self, request_id: str, look: Callable[[], tuple[bool, Any]]) -> Iterator[Wait]:
        """A wait on ``request_id``, for as long as inside: woken when ``look`` (called on
        the publishing thread) says it moved, with what it read, and whenever events may
        have been lost."""
        wait = Wait(look)
        with self._lock:
            self._by_id.setdefault(request_id, set()).add(wait)
        try:
            yield wait
        finally:
            with self._lock:
                left = self._by_id.get(request_id)
                if left is not None:
                    left.discard(wait)
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
