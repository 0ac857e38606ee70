"""Safe reads and durable compare-and-swap writes of files a human may be editing right now.

Every read refuses links, pipes, devices and files over 1 MiB before it reads
a byte, so nothing placed in a vault can hang or flood the reader.

Every write goes through a temp file and fsync, then checks that the file still
holds the bytes we read before it replaces it (``os.replace``, or an exclusive
link for a new file), then fsyncs the folder. If someone saved meanwhile, the
write is abandoned with :class:`ChangedUnderfootError` and their edit stands.
A new file's temp file may be written in a staging folder of the caller's on the same
filesystem (the vault's ``.hitl/new/``): then the folder of the note sees one event, the
note appearing whole, and no temp file comes and goes beside it.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ChangedUnderfootError, NoteError

MAX_NOTE_BYTES = 1024 * 1024
# How the name of each temp file of a write ends (see :class:`Leftover`).
TEMP_SUFFIX = ".hitl-tmp"
# Opening a pipe must not wait for a writer.
_READ_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_NONBLOCK", 0)  # 0: Windows


def too_big(where: str, size: int, limit: int = MAX_NOTE_BYTES) -> NoteError:
    return NoteError(
        where,
        f"is {size:,} bytes, over the {limit // 1024 // 1024} MiB limit for a note",
        "move large content into a separate file and link to it",
    )


def read_file(
    path: Path, where: str, *, limit: int = MAX_NOTE_BYTES, follow_links: bool = False
) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes, never through a link.

    Raises FileNotFoundError when nothing is there, and :class:`NoteError`
    naming ``where`` for a link (unless ``follow_links``), a folder, a pipe or
    device, a file over the limit, or one that cannot be read.
    """
    try:
        fd = os.open(path, _READ_FLAGS | (0 if follow_links else os.O_NOFOLLOW))
    except FileNotFoundError:
        raise
    except OSError as e:
        if not follow_links and os.path.islink(path):
            raise NoteError(
                where,
                "is a symbolic link; hitl-vault never follows links in the vault",
                "put the file itself here, or remove the link",
            ) from None
        raise _unreadable(where, e) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a pipe, socket or device"
            raise NoteError(where, f"is {kind}, not a file", "remove it from this folder")
        if st.st_size > limit:
            raise too_big(where, st.st_size, limit)
        chunks: list[bytes] = []
        left = limit + 1
        while left > 0 and (chunk := os.read(fd, left)):
            chunks.append(chunk)
            left -= len(chunk)
    except OSError as e:  # EIO and the like, from a failing disk or a network folder
        raise _unreadable(where, e) from None
    finally:
        os.close(fd)
    data = b"".join(chunks)
    if len(data) > limit:  # it grew while we read
        raise too_big(where, len(data), limit)
    return data


def _unreadable(where: str, e: OSError) -> NoteError:
    return NoteError(
        where, f"cannot be read ({e.strerror or e})", "make it readable by hitl-vault's user"
    )


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(folder: Path, name: str, data: bytes, mode: int | None) -> Path:
    import secrets  # here: reading (all the agent gate does on an allowed call) needs none

    tmp = folder / f".{name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)  # a new note: owner writes
    try:
        if mode is not None:
            os.fchmod(fd, mode & 0o7777)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    return tmp


def _current(path: Path, where: str, expected: bytes | None) -> bytes | None:
    """What ``path`` holds now, read far enough to compare it with ``expected``."""
    limit = max(MAX_NOTE_BYTES, len(expected) if expected is not None else 0)
    try:
        return read_file(path, where, limit=limit)
    except FileNotFoundError:
        return None


def _holds(path: Path, data: bytes) -> bool:
    """``path`` is a file holding exactly ``data``; not a link, a pipe, a folder or other bytes."""
    try:
        return read_file(path, path.name, limit=len(data)) == data
    except (FileNotFoundError, NoteError):
        return False


# ``.<note>.<random>.hitl-tmp``: new content on its way in; ``.<note>.<random>-<digest>.old
# .hitl-tmp``: the second name of the note being replaced, ``digest`` the start of the
# SHA-256 of the bytes the writer read (older versions wrote none).
_LEFTOVER = re.compile(
    r"\.(?P<name>.+)\.[0-9a-f]{8}(?:-(?P<read>[0-9a-f]{16}))?(?P<old>\.old)?"
    + re.escape(TEMP_SUFFIX)
)


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()[:16]


@dataclass(frozen=True)
class Leftover:
    """A temp file of a write a crash cut short, beside the note it was for.

    ``old``: the second name the note being replaced had during the swap; it may
    hold a human's save made at that moment. ``read``: the start of the SHA-256 of
    the bytes the writer read, when its name says so.
    """

    path: Path
    note: Path
    old: bool
    read: str | None

    @classmethod
    def of(cls, path: Path) -> Leftover | None:
        """The leftover ``path`` names, or None for any other file."""
        found = _LEFTOVER.fullmatch(path.name)
        if found is None:
            return None
        old = found["old"] is not None
        return cls(path, path.with_name(found["name"]), old, found["read"] if old else None)

    def holds_what_was_read(self, data: bytes) -> bool:
        """``data`` (its bytes) is what the interrupted writer read: no one saved into it."""
        return self.read is not None and _digest(data) == self.read


def write_note(
    path: Path, data: bytes, expected: bytes | None, where: str, *, staging: Path | None = None
) -> None:
    """Write ``data`` to ``path`` if it still holds ``expected`` (None: if it does not exist).

    Raises :class:`ChangedUnderfootError` and leaves the file alone otherwise. The note
    being replaced keeps a second name while we compare and swap: a save made in place
    between the compare and the swap lands in it, and is put back (their save stands).
    ``staging``: for a new file, a folder on the same filesystem to write its temp file in
    (made if missing, its parent not); beside the note when it cannot be used.
    """
    try:
        mode = path.stat().st_mode if expected is not None else None
    except FileNotFoundError:
        raise ChangedUnderfootError(where) from None
    staged = _staged(staging, path.name, data) if staging and expected is None else None
    tmp = staged or _write_temp(path.parent, path.name, data, mode)
    try:
        if expected is None:
            if _current(path, where, expected) is not None:
                raise ChangedUnderfootError(where)
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ChangedUnderfootError(where) from None
            except FileNotFoundError:  # our temp file, taken for a crash's leftover
                raise ChangedUnderfootError(where) from None
            except OSError as e:
                if staged is None or e.errno != errno.EXDEV:
                    raise
                staged.unlink(missing_ok=True)  # another filesystem after all: beside it
                return write_note(path, data, expected, where)
        else:
            _swap(path, tmp, data, expected, where)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def _staged(staging: Path, name: str, data: bytes) -> Path | None:
    """A temp file holding ``data`` in ``staging``, or None where it cannot be written."""
    try:
        staging.mkdir(mode=0o700, exist_ok=True)
        return _write_temp(staging, name, data, None)
    except OSError:  # no such parent, no permission, a file of that name: beside the note
        return None


def _swap(path: Path, tmp: Path, data: bytes, expected: bytes, where: str) -> None:
    """Replace ``path`` by ``tmp`` if it holds ``expected``, keeping a human's save that
    lands meanwhile: ``old`` names the file replaced, so a save written into it in place
    after the compare shows there, and it is put back in place of ours."""
    import secrets

    name = f".{path.name}.{secrets.token_hex(4)}-{_digest(expected)}.old{TEMP_SUFFIX}"
    old = path.with_name(name)  # its name says what we read (see Leftover)
    try:
        os.link(path, old)
    except FileNotFoundError:
        raise ChangedUnderfootError(where) from None
    try:
        if _current(old, where, expected) != expected or not _same_file(path, old):
            raise ChangedUnderfootError(where)  # saved since we read it (in place or renamed)
        try:
            os.replace(tmp, path)
        except FileNotFoundError:  # our temp file, taken for a crash's leftover: nothing done
            raise ChangedUnderfootError(where) from None
        if _current(old, where, expected) != expected:  # saved in place as we swapped
            if _holds(path, data):
                # (gone: taken for a crash's leftover; ours stays, and is read again)
                with contextlib.suppress(FileNotFoundError):
                    os.replace(old, path)
            raise ChangedUnderfootError(where)
    finally:
        old.unlink(missing_ok=True)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def move_note(src: Path, expected: bytes, dest: Path, data: bytes, where: str) -> None:
    """Move a note to ``dest`` with new content, only if ``src`` still holds ``expected``.

    The new content is written in place first (compare-and-swap), then the note
    gets its second name with a hard link and loses the first. A crash between
    the two leaves one file under two names (see :func:`interrupted_move`), never
    two notes that differ. If someone saves the note between the steps, the new
    name is dropped again and :class:`ChangedUnderfootError` raised: their save
    stays where they made it.
    """
    if os.path.lexists(dest):  # a dangling link, too, is in the way
        if _holds(dest, data):  # the same move, just made by another process
            if _holds(src, expected):
                src.unlink(missing_ok=True)
                _fsync_dir(src.parent)
            return
        if _same_file(src, dest) or not _holds(src, expected):
            # Another process moved (or is moving) the note since we read it: read it again.
            raise ChangedUnderfootError(where)
        if _stays(dest):  # (a move another process undoes leaves it there for a moment)
            raise NoteError(
                where,
                f"cannot move it: {dest.parent.name}/{dest.name} already exists",
                "remove or rename the other file with this name",
            )
    if data != expected:
        write_note(src, data, expected, where)
    try:
        ours = src.stat()
    except FileNotFoundError:  # moved by another process that wrote the same bytes at once
        raise ChangedUnderfootError(where) from None
    try:
        os.link(src, dest)
    except FileExistsError:
        raise ChangedUnderfootError(where) from None
    except FileNotFoundError:
        raise ChangedUnderfootError(where) from None
    _fsync_dir(dest.parent)
    try:
        now = src.stat()
    except FileNotFoundError:
        now = None
    if now is None or (now.st_ino, now.st_dev) != (ours.st_ino, ours.st_dev):
        # Saved by rename (a new file) between our steps: their file is the note.
        dest.unlink(missing_ok=True)
        _fsync_dir(dest.parent)
        raise ChangedUnderfootError(where)
    src.unlink(missing_ok=True)
    _fsync_dir(src.parent)


def _stays(path: Path, tries: int = 5, pause: float = 0.02) -> bool:
    """``path`` is still there after a few short pauses."""
    for _ in range(tries):
        if not os.path.lexists(path):
            return False
        time.sleep(pause)
    return os.path.lexists(path)


def interrupted_move(a: Path, b: Path) -> bool:
    """``a`` and ``b`` are one file under two names: a :func:`move_note` cut short."""
    try:
        return a != b and os.path.samefile(a, b)
    except OSError:
        return False
