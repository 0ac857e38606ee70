"""The only module that imports watchdog: file events become "this path may have changed".

Events are hints, not facts: an editor's save can arrive as one or two
``modified`` events, as a ``moved`` from a temp file, or as a delete and a
create; an overflowing kernel queue drops events and watchdog only logs it. So
this module reports paths (and overflows) and leaves it to the caller to
re-read, coalesce, and rescan.

:class:`Watcher` watches a whole tree. :class:`FolderWatcher` watches a folder and the named
folders directly in it, and nothing deeper: the daemon's view of a vault (its request
folders, the Inbox, the rules, the journal's folder), which the rest of a vault (other
notes, ``.obsidian/``, ``.git/``) costs nothing. On Linux it reads an inotify instance of its
own (through watchdog's bindings) and calls back from its reading thread, without the
observer's further threads and queues per event: the file events of a request written by
the service in the daemon's own process were a third of its work per request, and each
hand-off between threads waits for the interpreter while the service is busy.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import logging
import os
import select
import struct
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

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
_log = logging.getLogger(__name__)

# Events that cannot change a file's content. A folder's own "modified" comes with
# every change inside it, which is reported for the file itself; a folder that
# appears or moves in (a git checkout, a sync) still comes as created or moved.
_NOISE = (FileOpenedEvent, FileClosedNoWriteEvent, DirModifiedEvent)
# The events that can change what a note holds. Handed to the observer, they also set
# the inotify mask, so the kernel never queues the open/close-without-write pair that
# every read makes (our own reads included) and no thread wakes up for them.
_WANTED: list[type[FileSystemEvent]] = [
    FileCreatedEvent, FileModifiedEvent, FileClosedEvent, FileMovedEvent, FileDeletedEvent,
    DirCreatedEvent, DirMovedEvent, DirDeletedEvent,
]  # fmt: skip


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

    def __exit__(self, *exc: object) -> None:
        self.stop()


class FolderWatcher:
    """Watches ``root`` and the folders named ``folders`` directly in it (not deeper): each
    path that may have changed in them goes to ``on_change``. A named folder that appears
    later (created, moved in, synced) is watched from then on, and reported itself so the
    caller looks at what it already holds; one that goes away is dropped until it comes back.
    Any change in ``root`` (the rules, the dashboard) also watches a named folder that exists
    and is not watched yet: where the system does not report a new folder (macOS's FSEvents
    does not, to a watch without recursion), the next write beside it does. A file whose
    name ends with one of ``ignored`` is never reported: the temp files of the caller's own
    writes (five events of a new note's six), which nothing waits for.
    """

    def __init__(
        self,
        root: Path,
        folders: Iterable[str],
        on_change: Callable[[Path], None],
        on_overflow: Callable[[], None] | None = None,
        *,
        ignored: tuple[str, ...] = (),
    ) -> None:
        self.root = root
        self.folders = frozenset(folders)
        self.ignored = ignored
        self._on_change = on_change
        self._on_overflow = on_overflow or (lambda: None)
        self._overflowed_at = -1.0
        self._backend: _Backend | None = None

    def start(self) -> FolderWatcher:
        if self._backend is None:
            self._backend = _inotify_backend(self) or _ObserverBackend(self)
            self._backend.add(self.root)
            self._watch_named()
        return self

    def stop(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            backend.close()

    def _watch_named(self) -> None:
        backend = self._backend
        for name in sorted(self.folders):
            if backend is not None and (self.root / name).is_dir():
                backend.add(self.root / name)  # (nothing if watched already)

    def changed(self, folder: Path, name: str, is_dir: bool, arrived: bool, left: bool) -> None:
        """From the backend's thread: ``name`` in ``folder`` may have changed; ``arrived``: it
        was created or moved in, ``left``: deleted or moved away."""
        if self.ignored and name.endswith(self.ignored) and not is_dir:
            return
        path = folder / name
        backend = self._backend
        if backend is not None and folder == self.root:
            if name in self.folders and is_dir and left:
                backend.remove(path)
            else:
                self._watch_named()
        self._on_change(path)

    def gone(self, folder: Path, watch: object) -> None:
        """From the backend's thread: ``folder`` itself was deleted or moved away (``watch``:
        the watch that said so, which a newer one on a folder made again outlives)."""
        backend = self._backend
        if backend is not None and folder != self.root:
            backend.remove(folder, watch)
        self._on_change(folder)

    def overflowed(self) -> None:
        """Events were lost (said once, however many folders heard it)."""
        now = time.monotonic()
        if now - self._overflowed_at > 1.0:
            self._overflowed_at = now
            self._on_overflow()

    def __enter__(self) -> FolderWatcher:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _Backend(Protocol):
    """A way of watching folders one by one, without recursion."""

    def add(self, folder: Path) -> None:
        """Watch ``folder`` (nothing if it is watched already, or gone again)."""

    def remove(self, folder: Path, watch: object | None = None) -> None:
        """Stop watching ``folder`` (only if ``watch`` is still its watch, when given)."""

    def close(self) -> None:
        """Stop watching everything."""


class _Watches:
    """Each watched folder's watch and what set it (its handler, or its descriptor), for a
    backend on any thread (``take`` compares setters by ``==``: descriptors are numbers)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_folder: dict[Path, tuple[Any, object]] = {}

    def take(self, folder: Path, setter: object | None = None) -> tuple[Any, object] | None:
        """Forget ``folder``'s watch (only if ``setter`` set it, when given) and return it."""
        with self.lock:
            held = self.by_folder.get(folder)
            if held is None or (setter is not None and held[1] != setter):
                return None
            del self.by_folder[folder]
            return held


class _ObserverBackend:
    """watchdog's observer, one schedule per folder without recursion (any platform)."""

    def __init__(self, owner: FolderWatcher) -> None:
        self._owner = owner
        self._watches = _Watches()
        self._listener = _OverflowListener(owner.overflowed)
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).addHandler(self._listener)
        self._observer = Observer()
        self._observer.daemon = True
        self._observer.start()

    def add(self, folder: Path) -> None:
        with self._watches.lock:
            if folder in self._watches.by_folder:
                return
            handler = _FolderHandler(self._owner, folder)
            with contextlib.suppress(OSError):  # gone again already: nothing to watch
                watch = self._observer.schedule(
                    handler, str(folder), recursive=False, event_filter=_WANTED
                )
                self._watches.by_folder[folder] = (watch, handler)

    def remove(self, folder: Path, watch: object | None = None) -> None:
        held = self._watches.take(folder, watch)
        if held is not None:
            with contextlib.suppress(KeyError, OSError):
                self._observer.unschedule(held[0])

    def close(self) -> None:
        for name in _WATCHDOG_LOGGERS:
            logging.getLogger(name).removeHandler(self._listener)
        self._observer.stop()
        self._observer.join(timeout=10)


class _FolderHandler(FileSystemEventHandler):
    def __init__(self, owner: FolderWatcher, folder: Path) -> None:
        self._owner = owner
        self._folder = folder

    def on_any_event(self, event: FileSystemEvent) -> None:
        if isinstance(event, _NOISE):
            return
        is_dir = event.is_directory
        for raw, arrived, left in (
            (event.src_path, isinstance(event, (FileCreatedEvent, DirCreatedEvent)),
             isinstance(event, (FileDeletedEvent, DirDeletedEvent, FileMovedEvent, DirMovedEvent))),
            (getattr(event, "dest_path", ""), True, False),
        ):  # fmt: skip
            if not raw:
                continue
            path = Path(os.fsdecode(raw))
            if path == self._folder:
                if left:
                    self._owner.gone(self._folder, self)
            elif path.parent == self._folder:
                self._owner.changed(self._folder, path.name, is_dir, arrived, left)


def _inotify_backend(owner: FolderWatcher) -> _Backend | None:
    """The inotify backend where there is inotify (Linux), else None."""
    if not sys.platform.startswith("linux"):  # (elsewhere its bindings raise an error of theirs)
        return None
    try:
        from watchdog.observers import inotify_c as c
    except (ImportError, OSError, AttributeError):  # no inotify here, or another watchdog
        return None
    fd = c.inotify_init()
    if fd < 0:  # refused (too many instances): the observer may still work
        return None
    return _InotifyBackend(owner, fd, c)


class _InotifyBackend:
    """A watch per folder on an inotify instance of its own, read by a thread of its own that
    calls back at once: the kernel's event reaches the caller through one thread, not through
    watchdog's reader and dispatcher and the millisecond its reader gathers close reads for."""

    def __init__(self, owner: FolderWatcher, fd: int, c: Any) -> None:
        self._owner = owner
        self._fd = fd
        self._c = c
        # The events the observer asks for in Watcher (_WANTED); a watch whose folder goes
        # ends with IN_IGNORED, whatever the mask.
        k = c.InotifyConstants
        self._mask = (
            k.IN_CREATE | k.IN_MODIFY | k.IN_CLOSE_WRITE | k.IN_MOVED_FROM | k.IN_MOVED_TO
            | k.IN_DELETE | k.IN_ATTRIB | k.IN_DONT_FOLLOW
        )  # fmt: skip
        self._watches = _Watches()
        self._folders: dict[int, Path] = {}  # by watch descriptor
        self.closed = False
        self._close_at_end = False  # closed from the reading thread: it closes the files
        os.set_inheritable(fd, False)
        self._wake_r, self._wake_w = os.pipe()
        self._thread = threading.Thread(target=self._read, name="hitl-vault-watcher", daemon=True)
        self._thread.start()

    def add(self, folder: Path) -> None:
        with self._watches.lock:
            if folder in self._watches.by_folder or self.closed:
                return
            wd = self._c.inotify_add_watch(self._fd, os.fsencode(folder), self._mask)
            if wd < 0:
                code = ctypes.get_errno()
                if code not in (errno.ENOENT, errno.ENOTDIR):  # (else gone again already)
                    why = os.strerror(code)
                    _log.warning("cannot watch %s (%s): changes seen at rescans only", folder, why)
                return
            self._watches.by_folder[folder] = (wd, wd)
            self._folders[wd] = folder

    def remove(self, folder: Path, watch: object | None = None) -> None:
        held = self._watches.take(folder, watch)
        if held is not None:
            with self._watches.lock:
                self._folders.pop(held[0], None)
                if not self.closed:  # (its descriptor may be closed, its number reused)
                    self._c.inotify_rm_watch(self._fd, held[0])  # (-1: the kernel dropped it)

    def close(self) -> None:
        with self._watches.lock:
            self.closed = True
            self._watches.by_folder.clear()
        if threading.current_thread() is self._thread:  # (a callback stopped the watching)
            self._close_at_end = True
            return
        os.write(self._wake_w, b"!")
        self._thread.join(timeout=10)
        if not self._thread.is_alive():  # (else it is stuck in a callback: left open)
            self._close_files()

    def _close_files(self) -> None:
        for fd in (self._fd, self._wake_r, self._wake_w):
            os.close(fd)

    def _read(self) -> None:
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while not self.closed:
                poller.poll()
                if self.closed:
                    break
                try:
                    data = os.read(self._fd, 65536)
                except (BlockingIOError, InterruptedError):
                    continue
                self._dispatch(data)
        except OSError:  # a bug of ours or the system's: said, and the rescans still run
            _log.exception("the file watcher stopped; changes are seen at each rescan")
        finally:
            if self._close_at_end:
                self._close_files()

    def _dispatch(self, data: bytes) -> None:
        k, owner, at = self._c.InotifyConstants, self._owner, 0
        while at + 16 <= len(data):
            wd, mask, _cookie, size = struct.unpack_from("iIII", data, at)
            name = data[at + 16 : at + 16 + size].rstrip(b"\0")
            at += 16 + size
            with self._watches.lock:
                folder = self._folders.get(wd)
                if mask & k.IN_IGNORED:  # the watch is gone: its folder was, or it unmounted
                    self._folders.pop(wd, None)
            overflow = mask & k.IN_Q_OVERFLOW  # (on no watch)
            if (folder is None and not overflow) or self.closed:
                continue
            try:
                if overflow:
                    owner.overflowed()
                elif mask & k.IN_IGNORED and folder is not None:
                    self._watches.take(folder, wd)
                    owner.gone(folder, wd)
                elif name and folder is not None:
                    arrived = bool(mask & (k.IN_CREATE | k.IN_MOVED_TO))
                    left = bool(mask & (k.IN_DELETE | k.IN_MOVED_FROM))
                    is_dir = bool(mask & k.IN_ISDIR)
                    owner.changed(folder, os.fsdecode(name), is_dir, arrived, left)
            except Exception:  # never out of here: the vault would go unwatched
                _log.exception("a file event in %s could not be handled", folder)
