"""One file watcher per Vault, shared by every ``wait`` in the process, started on first use."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Listener = Callable[[Path], None]


class Listeners:
    """Calls each registered listener with every path that may have changed under ``root``.

    After a lost-events overflow, listeners are called with ``root`` itself.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._watcher: Any = None
        self._listeners: set[Listener] = set()

    def _changed(self, path: Path) -> None:
        for listener in list(self._listeners):
            listener(path)

    def _overflowed(self) -> None:
        self._changed(self.root)

    @contextmanager
    def listening(self, listener: Listener) -> Iterator[None]:
        from .watcher import Watcher  # watchdog is loaded only by processes that wait

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
