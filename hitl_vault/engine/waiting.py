"""Waiting for a decision: one file watcher per vault, shared by every ``wait`` in the
process and started on first use, and the loop that applies what it sees."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import UsageError, WaitTimeoutError
from ..model import Request, Status

# Longest a waiter sleeps without an event, as a net under lost events.
_WAIT_SAFETY_NET = 30.0

_FileListener = Callable[[Path], None]
_UNTIL_DECIDED = frozenset({Status.PENDING})
_UNTIL_OUTCOME = frozenset({Status.PENDING, Status.APPROVED, Status.EXECUTING})


class _FileChanges:
    """Calls each registered listener with every path that may have changed under ``root``.

    After a lost-events overflow, listeners are called with ``root`` itself.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._watcher: Any = None
        self._listeners: set[_FileListener] = set()

    def _changed(self, path: Path) -> None:
        for listener in list(self._listeners):
            listener(path)

    def _overflowed(self) -> None:
        self._changed(self.root)

    @contextmanager
    def listening(self, listener: _FileListener) -> Iterator[None]:
        from ..watcher import Watcher  # watchdog is loaded only by processes that wait

        with self._lock:
            if self._watcher is None:
                self._watcher = Watcher(self.root, self._changed, self._overflowed).start()
            self._listeners.add(listener)
        try:
            yield
        finally:
            with self._lock:
                self._listeners.discard(listener)

    def close(self) -> None:
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()


class Waiting:
    """``wait`` for one vault: watches the request's note and the journal, and applies the
    human's decision and the expiry itself (``refresh``), so no daemon is needed."""

    def __init__(
        self,
        root: Path,
        refresh: Callable[[str], Request],
        now: Callable[[], datetime],
        journal_watch: Callable[[Callable[[], None]], AbstractContextManager[None]],
    ) -> None:
        self._changes = _FileChanges(root)
        self._root = root
        self._refresh = refresh
        self._now = now
        self._journal_watch = journal_watch  # the store says when another process wrote

    async def wait(
        self, request_id: str, timeout: float | None = None, *, outcome: bool = False
    ) -> Request:
        """Return once the request is no longer pending (``outcome``: once it has ended:
        executed, failed, rejected, timed out or cancelled); :class:`WaitTimeoutError` if
        ``timeout`` seconds pass first."""
        import asyncio  # here: a command that never waits starts without it

        waiting = _UNTIL_OUTCOME if outcome else _UNTIL_DECIDED
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        started = loop.time()

        def wake_up() -> None:
            # Called on a watcher's thread, maybe just after this wait ended and its loop
            # closed: there is nothing left to wake then, and the thread must live on.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

        def poke(path: Path) -> None:
            if path.name.startswith(request_id) or path == self._root:
                wake_up()

        with self._changes.listening(poke), self._journal_watch(wake_up):
            while True:
                wake.clear()
                request = self._refresh(request_id)
                if request.status not in waiting:
                    return request
                delay = _WAIT_SAFETY_NET
                if request.expires is not None and request.status is Status.PENDING:
                    left_to_expiry = (request.expires - self._now()).total_seconds()
                    delay = min(delay, max(0.0, left_to_expiry) + 0.05)
                if timeout is not None:
                    left = timeout - (loop.time() - started)
                    if left <= 0:
                        raise WaitTimeoutError(request_id, timeout)
                    delay = min(delay, left)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(wake.wait(), delay)

    def wait_sync(
        self, request_id: str, timeout: float | None = None, *, outcome: bool = False
    ) -> Request:
        """``wait`` for code that is not async (it cannot be called from inside an event loop)."""
        import asyncio

        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.wait(request_id, timeout, outcome=outcome))
        raise UsageError(
            "wait_sync", "called from inside a running event loop", "use `await vault.wait(...)`"
        )

    def close(self) -> None:
        self._changes.close()
