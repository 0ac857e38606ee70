"""How a process learns that another one wrote the SQLite journal: SQLite has no way to
say so, but every commit changes the journal's files (``journal.db``, ``-wal``,
``-shm``), so one file watcher on their folder stands for "the journal changed".
Like every file event this is a hint: a waker re-reads, and may wake for nothing."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Wake = Callable[[], None]

log = logging.getLogger(__name__)


class JournalWatch:
    """Calls every registered ``wake`` when a file of the journal at ``path`` may have
    changed (or events were lost). The watcher starts with the first registration and
    stops with :meth:`close`, so processes that never wait start no thread; after
    :meth:`close` a registration starts none and is never called.

    The wakers run on the watcher's thread: one that raises (a wait that ended and closed
    its event loop meanwhile) is logged and dropped, and the others are still woken; an
    error let through would end that thread, and with it every wake-up but the waiters'
    safety net."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._watcher: Any = None
        self._wakers: dict[int, Wake] = {}
        self._closed = False

    def _changed(self, path: Path) -> None:
        if path.parent == self._path.parent and path.name.startswith(self._path.name):
            self._wake_all()

    def _wake_all(self) -> None:
        for key, wake in list(self._wakers.items()):
            try:
                wake()
            except Exception:
                log.debug("dropped a waker of %s that failed", self._path, exc_info=True)
                with self._lock:
                    if self._wakers.get(key) is wake:
                        del self._wakers[key]

    @contextmanager
    def watching(self, wake: Wake) -> Iterator[None]:
        from ..watcher import Watcher  # watchdog is loaded only by processes that wait

        key = id(wake)
        with self._lock:
            closed = self._closed  # then nothing would ever stop a watcher started now
            if not closed:
                if self._watcher is None:
                    folder = self._path.parent
                    self._watcher = Watcher(folder, self._changed, self._wake_all).start()
                self._wakers[key] = wake
        if closed:
            yield
            return
        try:
            yield
        finally:
            with self._lock:
                self._wakers.pop(key, None)

    def close(self) -> None:
        with self._lock:
            watcher, self._watcher = self._watcher, None
            self._closed = True
        if watcher is not None:
            watcher.stop()
