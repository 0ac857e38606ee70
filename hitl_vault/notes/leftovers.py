"""Temp files a killed writer left beside the notes: removed when they hold nothing of
anyone's, listed under Needs attention when they may hold a human's save.

:func:`~hitl_vault.durable.write_note` writes new content to ``.<note>.<x>.hitl-tmp``
(a new note's in ``.hitl/new/``, others' beside the note) and, while it swaps, keeps a
second name ``.<note>.<x>-<digest>.old.hitl-tmp`` on the note it replaces. A process
killed in between leaves them behind, beside a note where sync tools and git see them.
New content is hitl-vault's own (the journal writes it again), so such a file goes. A
second name goes when it is the note itself, or holds what the writer read or what the
journal last recorded for the note; any other (it may hold a save that could not be put
back) is listed, never deleted.

A live writer in another process has the same files for a millisecond: they are looked
at only once older than ``age``, except at a daemon's start, which holds the daemon lock
and the journal's write lock (which the API's and CLI's updates of a note hold) while it
looks. A writer of a new note holds neither; if its temp file is taken, it writes again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from ..durable import Leftover, interrupted_move, read_file
from ..errors import NoteError
from ..model import REQUEST_FOLDERS, STAGING_DIR, STATE_DIR
from ..store import JournalStore
from .sync import sha256

log = logging.getLogger(__name__)

# A temp file this old is no live writer's (a write takes about a millisecond).
LEFTOVER_AGE = timedelta(minutes=1)


class Leftovers:
    """Clears what interrupted writes left in one vault's request folders."""

    def __init__(
        self,
        root: Path,
        journal: JournalStore,
        age: timedelta = LEFTOVER_AGE,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = root
        self.journal = journal
        self.age = age
        self._wall_clock = wall_clock  # file times are the system clock's, never a test's

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    def clear(self, now: datetime, *, starting: bool = False) -> bool:
        """Remove or list each leftover (``starting``: however young); True if any was found.

        A listing whose file is gone is taken off Needs attention. The journal's write
        lock is taken only when there is something to look at.
        """
        found = [lo for lo in self._found() if starting or self._old_enough(lo)]
        listed = [a.path for a in self.journal.attention() if Leftover.of(self.root / a.path)]
        if not (found or listed):
            return False
        with self.journal.batch() if starting else contextlib.nullcontext():
            for leftover in found:
                self._clear(leftover, now)
            for where in listed:
                if not os.path.lexists(self.root / where):
                    self.journal.unflag(where)
        return bool(found)

    def _found(self) -> list[Leftover]:
        found: list[Leftover] = []
        for folder in (*REQUEST_FOLDERS, f"{STATE_DIR}/{STAGING_DIR}"):
            try:
                paths = list((self.root / folder).iterdir())
            except OSError:  # no such folder (the rescan says so when it is not a folder)
                continue
            found += [lo for lo in map(Leftover.of, paths) if lo is not None]
        return found

    def _old_enough(self, leftover: Leftover) -> bool:
        """No live writer's: written (new content) or linked (a second name) ``age`` ago."""
        try:
            st = os.lstat(leftover.path)
        except FileNotFoundError:
            return False
        stamp = st.st_ctime if leftover.old else st.st_mtime  # a link changes only the ctime
        return self._wall_clock() - stamp >= self.age.total_seconds()

    def _clear(self, leftover: Leftover, now: datetime) -> None:
        where = self._rel(leftover.path)
        if leftover.old:
            try:
                data: bytes | None = read_file(leftover.path, where)
            except FileNotFoundError:
                return
            except NoteError:  # a link, a folder: not ours to judge
                data = None
            if data is None or not self._nothing_new(leftover, data):
                self._list(leftover, where, now)
                return
        leftover.path.unlink(missing_ok=True)
        self.journal.unflag(where)
        log.info("%s: removed, left by a write of the note that was cut short", where)

    def _nothing_new(self, leftover: Leftover, data: bytes) -> bool:
        """The second name holds nothing a human saved that is not elsewhere: it is the
        note itself, or holds what the writer read or what the journal last recorded."""
        known, digest = self.journal.note_sha(leftover.note.stem)
        notes = [leftover.note, *([self.root / known] if known else [])]
        if any(interrupted_move(leftover.path, note) for note in notes):
            return True
        return leftover.holds_what_was_read(data) or sha256(data) == digest

    def _list(self, leftover: Leftover, where: str, now: datetime) -> None:
        request_id = leftover.note.stem
        known, _ = self.journal.note_sha(request_id)
        note = known or self._rel(leftover.note)
        message = (
            f"{where}: a copy of the note {note} that hitl-vault was replacing when it was "
            "stopped; it holds neither what hitl-vault read there nor what it wrote, so it may "
            "hold a save made at that moment (compare it with the note, copy into the note "
            "what you want to keep, then delete this file)"
        )
        if self.journal.flag(where, message, now, request_id if known else None):
            log.warning("needs attention: %s", message)
