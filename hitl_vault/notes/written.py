"""What this process wrote last to each note, so its own writes' file events can be told
from anyone else's save without waking the daemon.

In ``serve`` the daemon shares its process with the service, which writes every new
request's note (and the daemon rewrites notes itself): each write comes back as a handful
of file events. A note that holds exactly the bytes this process last wrote there has
nothing new in it for the daemon: the journal recorded those bytes when they were written.

Content, never times, decides: a save in the same clock tick as our write has the same
mtime (file times move in ticks of a few milliseconds), and a save of other bytes is a
save, whatever its times say. The check reads the file (a few syscalls and a SHA-256 of a
few kilobytes), on whichever thread asks.

It also keeps which requests' new notes this process wrote, whole, after journaling them (the
service's submits): the daemon, hearing such a creation, has nothing to check in the note.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from pathlib import Path

from ..durable import read_file
from ..errors import NoteError

# Notes remembered at most (the oldest are forgotten first): far more than a burst of
# submits writes before the watcher's events for them arrive.
LIMIT = 4096


class WrittenHere:
    """The SHA-256 of the bytes this process last wrote to each note, by path (any thread)."""

    def __init__(self, limit: int = LIMIT) -> None:
        self._limit = limit
        self._lock = threading.Lock()
        self._by_path: OrderedDict[Path, str] = OrderedDict()
        self._new: OrderedDict[str, bool] = OrderedDict()  # requests whose new note we wrote

    def wrote(self, path: Path, data: bytes) -> None:
        """This process is about to write ``data`` to ``path`` (bytes the journal has).

        Said before the write, never after: the write's own file events reach the watcher
        thread while the writing thread is still in its syscalls, and must find it here.
        Until the bytes land, the file holds something else, which :meth:`holds_ours` tells.
        """
        digest = hashlib.sha256(data).hexdigest()
        with self._lock:
            self._by_path[path] = digest
            self._by_path.move_to_end(path)
            while len(self._by_path) > self._limit:
                self._by_path.popitem(last=False)

    def wrote_new(self, request_id: str) -> None:
        """This process wrote ``request_id``'s new note, whole, after journaling it."""
        with self._lock:
            self._new[request_id] = True
            while len(self._new) > self._limit:
                self._new.popitem(last=False)

    def took_new(self, request_id: str) -> bool:
        """Whether this process wrote ``request_id``'s new note (:meth:`wrote_new`); told
        once, then forgotten."""
        with self._lock:
            return self._new.pop(request_id, False)

    def forget(self, path: Path) -> None:
        """``path`` is no longer a note this process keeps there (moved away): bytes of ours
        that come back to it (a sync, a checkout) are news."""
        with self._lock:
            self._by_path.pop(path, None)

    def knows(self, path: Path) -> bool:
        """Whether this process wrote ``path`` (whatever it holds now)."""
        with self._lock:
            return path in self._by_path

    def holds_ours(self, path: Path) -> bool:
        """Whether ``path`` holds exactly what this process last wrote there (False when it
        is gone, unreadable, or holds anything else)."""
        with self._lock:
            digest = self._by_path.get(path)
        if digest is None:
            return False
        try:
            data = read_file(path, path.name)
        except (OSError, NoteError):
            return False
        return hashlib.sha256(data).hexdigest() == digest
