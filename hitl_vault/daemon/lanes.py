"""One queue and one sending thread per notification target.

A receiver that accepts a connection and never answers holds up only the messages
to it: every other target has its own thread, so its messages go out at once. Each
target's messages still go out in the order they were handed over (the outbox's,
oldest due first). A thread with nothing to send for a while ends; the next message
to its target starts a new one.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable

from ..store import Outgoing

log = logging.getLogger(__name__)

IDLE_END = 30.0  # seconds a target's thread waits for more before it ends


class Lanes:
    """Sends each handed-over notification in its target's own thread, with ``work``.

    ``work(item)`` sends one notification and records the outcome in the outbox (True:
    delivered); ``done()`` is called after each, so the caller can look at the outbox
    again (a failed try has a new due time). An item is *taken* from when it is handed
    over until its outcome is recorded: :meth:`offer` never hands it over twice.
    """

    def __init__(self, work: Callable[[Outgoing], bool], done: Callable[[], None]) -> None:
        self._work = work
        self._done = done
        self._lock = threading.Lock()
        self._lanes: dict[str, tuple[queue.SimpleQueue[Outgoing | None], threading.Thread]] = {}
        self._taken: set[int] = set()
        self._stop = threading.Event()
        self.delivered = 0  # how many ``work`` delivered, in all

    def taken(self) -> set[int]:
        """The ids of the notifications handed over and not yet sent or failed."""
        with self._lock:
            return set(self._taken)

    def offer(self, items: Iterable[Outgoing], skip: set[int] | None = None) -> int:
        """Hand each item over to its target's thread, unless it is taken already or in
        ``skip`` (the ids :meth:`taken` gave *before* the outbox was read: one finished
        since is then either out of the outbox or not skipped, never sent twice).
        How many were handed over."""
        handed = 0
        with self._lock:
            for item in items:
                if self._stop.is_set() or item.id in self._taken or item.id in (skip or ()):
                    continue
                lane = self._lanes.get(item.target)
                if lane is None:
                    inbox: queue.SimpleQueue[Outgoing | None] = queue.SimpleQueue()
                    lane = (inbox, threading.Thread(
                        target=self._run, args=(item.target, inbox), daemon=True,
                        name=f"hitl-notify-{len(self._lanes) + 1}",
                    ))  # fmt: skip
                    self._lanes[item.target] = lane
                    lane[1].start()
                self._taken.add(item.id)
                lane[0].put(item)
                handed += 1
        return handed

    def _run(self, target: str, inbox: queue.SimpleQueue[Outgoing | None]) -> None:
        while True:
            try:
                item = inbox.get(timeout=IDLE_END)
            except queue.Empty:
                with self._lock:  # nothing was put meanwhile (offer holds the lock to put)
                    if inbox.empty():
                        if self._lanes.get(target, (None,))[0] is inbox:
                            del self._lanes[target]
                        return
                continue
            if item is None:  # the end: what was put before it is sent
                return
            try:
                if not self._stop.is_set() and self._work(item):
                    with self._lock:
                        self.delivered += 1
            except Exception:  # a bug, or the journal held too long: the others still go
                log.exception("%s: error while sending the %s notification", item.request_id,
                              item.event)  # fmt: skip
            finally:
                with self._lock:
                    self._taken.discard(item.id)
                self._done()

    def _end(self, stop: bool, timeout: float | None) -> bool:
        if stop:
            self._stop.set()
        with self._lock:
            lanes = list(self._lanes.values())
            self._lanes.clear()
            for inbox, _ in lanes:
                inbox.put(None)
        deadline = None if timeout is None else time.monotonic() + timeout
        for _, thread in lanes:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for _, thread in lanes)

    def drain(self) -> None:
        """Send everything handed over, then end the threads (each send is bounded)."""
        self._end(stop=False, timeout=None)

    def stop(self, timeout: float) -> bool:
        """End the threads once the sends in flight end (what is queued behind them stays in
        the outbox, for the next start); waits at most ``timeout`` s. True if all ended."""
        return self._end(stop=True, timeout=timeout)
