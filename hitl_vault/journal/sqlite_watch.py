"""How a process learns that another one wrote the SQLite journal: SQLite has no way to
say so, but every commit changes the journal's files (``journal.db``, ``-wal``,
``-shm``), so one file watcher on their folder stands for "the journal changed".
Like every file event this is a hint: a waker re-reads, and may wake for nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Wake = Callable[[], None]


class JournalWatch:
    """Calls every registered ``wake`` when a file of the journal at ``path`` may have
    changed (or events were lost). The watcher starts with the first registration and
    stops with :meth:`close`, so processes that never wait start no thread."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._watcher: Any = None
        self._wakers: dict[int, Wake] = {}

    def _changed(self, path: Path) -> None:
        if path.parent == self._path.parent and path.name.startswith(self._path.name):
            self._wake_all()

    def _wake_all(self) -> None:
        for wake in list(self._wakers.values()):
            wake()

    @contextmanager
    def watching(self, wake: Wake) -> Iterator[None]:
        from ..watcher import Watcher  # watchdog is loaded only by processes that wait

        key = id(wake)
        with self._lock:
            if self._watcher is None:
                folder = self._path.parent
                self._watcher = Watcher(folder, self._changed, self._wake_all).start()
            self._wakers[key] = wake
        try:
            yield
        finally:
            with self._lock:
                self._wakers.pop(key, None)

    def close(self) -> None:
        with self._lock:
            watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.stop()
