"""``.hitl/daemon.lock``: one daemon per vault.

Editors ignore advisory locks, so this lock guards nothing in the notes; it
only keeps a second daemon from running on the same vault. The kernel drops
it when the process dies, however it dies, so there is no stale lock to clean.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

from .errors import DaemonRunningError
from .model import format_ts, utcnow


class DaemonLock:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> DaemonLock:
        """Take the lock or raise :class:`DaemonRunningError` naming who holds it."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "unknown process"
            os.close(fd)
            raise DaemonRunningError(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(
            fd,
            f"pid {os.getpid()} on {socket.gethostname()} since {format_ts(utcnow())}\n".encode(),
            0,
        )
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def daemon_running(path: Path) -> bool:
    """Whether some process (this one included) holds the daemon lock right now."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
