"""One daemon per vault: a lock on the ``.hitl/`` folder itself.

Why the folder and not ``.hitl/daemon.lock``: a lock on a file guards only that
file's inode, so ``rm .hitl/daemon.lock`` under a running daemon let a second
daemon create a fresh file, lock it, and run the same approved action at the
same time as the first. The ``.hitl/`` folder cannot be removed while the
journal is in it, so an exclusive ``flock`` on it holds for as long as the
daemon lives. The kernel drops it when the process dies, however it dies, so
there is no stale lock to clean. SQLite locks its journal files with POSIX
``fcntl`` record locks, never the folder and never ``flock``, so the two do not
meet.

``.hitl/daemon.lock`` is now only a note for people: "pid N on HOST since TIME",
so that the error for a second daemon can say who holds the vault. Whatever
else sits at that name (a FIFO, a folder, a symlink, a device) is never
opened for reading or followed, and never deleted: the lock does not depend on it.

Editors ignore advisory locks, so this lock guards nothing in the notes.

Windows has neither ``fcntl`` nor folder locks; there a byte of
``.hitl/daemon.winlock`` is locked with ``msvcrt.locking`` (best effort).
Neither module is needed to import this one: where the one the platform calls
for is missing, taking or asking about the lock raises :class:`LockUnavailableError`.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path

from ..chain import RECORDER_HOST
from ..errors import DaemonRunningError, VaultError
from ..times import format_ts, utcnow

# Both imports are guarded so that every module imports on every platform; which
# one is used is decided by sys.platform when locking (see _lock_state).
try:
    import fcntl
except ImportError:  # Windows, or a Python built without it
    fcntl = None  # type: ignore[assignment]
try:
    import msvcrt
except ImportError:  # anything but Windows
    msvcrt = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

WINDOWS_LOCK = "daemon.winlock"
"""On Windows only: the file, next to the holder note, whose first byte is locked."""

UNKNOWN = "unknown process"

# Never block on and never follow what sits at the holder's name (O_NOFOLLOW,
# O_NONBLOCK and O_DIRECTORY do not exist on Windows, where FIFOs do not either).
_SAFE = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)

# What a lock held by someone else raises: flock says EWOULDBLOCK; msvcrt says
# EACCES or EDEADLOCK, as a plain OSError.
_BUSY: type[OSError] = OSError if sys.platform == "win32" else BlockingIOError


class LockUnavailableError(VaultError):
    """This platform has no lock primitive (``fcntl`` on POSIX, ``msvcrt`` on Windows)."""

    def __init__(self, state: Path, module: str) -> None:
        self.state, self.module = state, module
        super().__init__(
            f"{state}: cannot lock or check the daemon lock: this Python has no {module} "
            "module (run hitl-vault on Linux, macOS or another POSIX system, or on Windows)"
        )


def _lock_state(state: Path, exclusive: bool) -> int | None:
    """An fd holding the lock on ``state``, or ``None`` if another holder has it.

    ``exclusive=False`` only asks (a shared lock, which any daemon's excludes).
    Raises :class:`FileNotFoundError` when ``state`` does not exist, and
    :class:`LockUnavailableError` when the platform's lock module is missing.
    """
    if sys.platform == "win32":
        if msvcrt is None:
            raise LockUnavailableError(state, "msvcrt")
    elif fcntl is None:
        raise LockUnavailableError(state, "fcntl")
    if sys.platform == "win32":
        flags = os.O_RDWR | (os.O_CREAT if exclusive else 0) | _SAFE
        fd = os.open(state / WINDOWS_LOCK, flags, 0o600)
    else:  # os.open fds are not inherited, so actions the daemon runs never hold the lock
        fd = os.open(state, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if sys.platform == "win32":
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # no shared locks here: exclusive either way
        else:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
    except _BUSY:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def _unlock_state(fd: int) -> None:
    try:
        if sys.platform == "win32":
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _open_holder(path: Path, flags: int) -> int | None:
    """An fd on the holder note if it is a regular file (created if missing when asked).

    ``None`` when it is missing, or is something else, which is then left as it is.
    """
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):  # never open a FIFO, a device, a folder
            log.warning("%s is not a regular file: left alone (the lock does not need it)", path)
            return None
    except FileNotFoundError:
        if not flags & os.O_CREAT:
            return None
    try:
        fd = os.open(path, flags | _SAFE, 0o600)
    except OSError as e:  # replaced in between by a symlink, a folder, ...; or not ours to read
        log.warning("%s: cannot open the holder note (%s); left alone", path, e.strerror)
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):  # replaced in between by a FIFO or a device
        os.close(fd)
        log.warning("%s is not a regular file: left alone (the lock does not need it)", path)
        return None
    return fd


def _holder(path: Path) -> str:
    """Who the holder note says holds the lock, or ``unknown process``."""
    fd = _open_holder(path, os.O_RDONLY)
    if fd is None:
        return UNKNOWN
    try:
        return os.read(fd, 200).decode("utf-8", "replace").strip() or UNKNOWN
    except OSError:
        return UNKNOWN
    finally:
        os.close(fd)


class DaemonLock:
    """The vault's daemon lock; ``path`` is ``.hitl/daemon.lock``, the holder note.

    The lock itself is on ``path.parent`` (the ``.hitl/`` folder), see the module.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None
        self._legacy: int | bool | None = None

    def acquire(self) -> DaemonLock:
        """Take the lock or raise :class:`DaemonRunningError` naming who holds it."""
        state = self.path.parent
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _lock_state(state, exclusive=True)
        if fd is None:
            raise DaemonRunningError(self.path, _holder(self.path))
        self._fd = fd
        self._legacy = self._lock_legacy()
        if self._legacy is False:
            self.release()
            raise DaemonRunningError(self.path, _holder(self.path))
        self._write_holder()
        return self

    def _lock_legacy(self) -> int | bool | None:
        """Earlier versions locked the holder note itself: a daemon of such a version may
        still run on this vault. Its fd, False when one does, None when it cannot tell."""
        if sys.platform == "win32":
            return None
        note = _open_holder(self.path, os.O_RDONLY | os.O_CREAT)
        if note is None:
            return None
        try:
            fcntl.flock(note, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(note)
            return False
        except OSError:  # a file system without flock on files: the folder's lock stands alone
            os.close(note)
            return None
        return note

    def _write_holder(self) -> None:
        """Say who holds the lock in the holder note, if it is a file we can write."""
        note = _open_holder(self.path, os.O_WRONLY | os.O_CREAT)
        if note is None:
            return
        text = f"pid {os.getpid()} on {RECORDER_HOST} since {format_ts(utcnow())}\n"
        try:
            os.ftruncate(note, 0)
            os.write(note, text.encode())
        except OSError as e:
            log.warning("%s: cannot write the holder note (%s)", self.path, e.strerror)
        finally:
            os.close(note)

    def release(self) -> None:
        legacy, self._legacy = self._legacy, None
        if isinstance(legacy, int) and not isinstance(legacy, bool):
            os.close(legacy)  # closing drops its flock
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _unlock_state(fd)


def daemon_running(path: Path) -> bool:
    """Whether some process (this one included) holds the daemon lock right now.

    ``path`` is the holder note; only its folder is looked at, never the note.
    """
    try:
        fd = _lock_state(path.parent, exclusive=False)
    except FileNotFoundError:
        return False
    if fd is None:
        return True
    _unlock_state(fd)
    return False
