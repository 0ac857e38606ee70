"""The only module that imports watchdog: file events become "this path may have changed".

Events are hints, not facts: an editor's save can arrive as one or two
``modified`` events, as a ``moved`` from a temp file, or as a delete and a
create; an overflowing kernel queue drops events and watchdog only logs it. So
this module reports paths (and overflows) and leaves it to the caller to
re-read, coalesce, and rescan.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from watchdog.events import (
    DirCreatedEvent,
    DirDeletedEvent,
    DirModifiedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileClosedNoWriteEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileOpenedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer


class _StopRace(logging.Filter):
    """watchdog logs an ERROR when its inotify thread reads an event while being stopped (a
    race inside watchdog that loses nothing: the observer is going away). It is not an
    error of ours, and a user reading the daemon's log must not think it one."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "called when the thread is inactive" not in str(record.msg)


logging.getLogger("watchdog.observers.inotify").addFilter(_StopRace())

# Events that cannot change a file's content. A folder's own "modified" comes with
# every change inside it, which is reported for the file itself; a folder that
# appears or moves in (a git checkout, a sync) still comes as created or moved.
_NOISE = (FileOpenedEvent, FileClosedNoWriteEvent, DirModifiedEvent)
# The events that can change what a note holds. Handed to the observer, they also set
# the inotify mask, so the kernel never queues the open/close-without-write pair that
# every read makes (our own reads included) and no thread wakes up for them.
_WANTED: list[type[FileSystemEvent]] = [
    FileCreatedEvent,
    FileModifiedEvent,
    FileClosedEvent,
    FileMovedEvent,
    FileDeletedEvent,
    DirCreatedEvent,
    DirMovedEvent,
    DirDeletedEvent,
]


class _Handler(FileSystemEventHandler):
    def __init__(self, on_change: Callable[[Path], None]) -> None:
        self._on_change = on_change

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, _NOISE):
            return
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                self._on_change(Path(raw.decode() if isinstance(raw, bytes) else raw))


class _OverflowListener(logging.Handler):
    """watchdog reports a kernel queue overflow only in its log; we listen there."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._on_overflow()


_WATCHDOG_LOGGERS = ("watchdog.observers.inotify_c", "watchdog.observers.inotify")


class Watcher:
    """One recursive observer on a folder (one inotify instance, however many folders)."""

    def __init__(
        self,
        root: Path,
        on_change: Callable[[Path], None],
        on_overflow: Callable[[], None] | None = None,
    ) -> None:
        self.root = root
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.schedule(
            _Handler(on_change), str(root), recursive=True, event_filter=_WANTED
        )
        self._listener = _OverflowListener(on_overflow) if on_overflow else None
        self._lock = threading.Lock()
        self._started = False

    def start(self) -> Watcher:
        with self._lock:
            if not self._started:
                if self._listener is not None:
                    for name in _WATCHDOG_LOGGERS:
                        logging.getLogger(name).addHandler(self._listener)
                self._observer.start()
                self._started = True
        return self

    def stop(self) -> None:
        with self._lock:
            if not self._started:
                return
            self._started = False
            if self._listener is not None:
                for name in _WATCHDOG_LOGGERS:
                    logging.getLogger(name).removeHandler(self._listener)
            self._observer.stop()
        self._observer.join(timeout=10)

    def __enter__(self) -> Watcher:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
