"""The daemon's side of the files: which notes to rewrite, when each is quiet, what it last saw.

A note is rewritten (or moved) only once nobody has touched it for
``defaults.quiet``; notes wait in a heap ordered by when they are next worth a
look, and a few are written per step so that new saves are never kept waiting.
The digests of what the daemon last wrote and last read let it ignore its own
writes' events and the second and third events of one save.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..durable import read_file
from ..errors import ChangedUnderfootError, NoteError
from ..model import REQUEST_FOLDERS

if TYPE_CHECKING:
    from ..notes.reconcile import Reconciler
    from ..store import JournalStore

log = logging.getLogger(__name__)

# Notes rewritten per step at most, so a burst of rewrites never delays a new decision long.
SYNC_STEP = 16
_EARLIEST = datetime.min.replace(tzinfo=UTC)
# A note the system refused to let us write is tried again after this.
RETRY_WRITE = timedelta(seconds=30)


def refused_flag(request_id: str) -> str:
    """Where Needs attention lists a note the system refused to let us write or move. Not the
    note's path: the note itself may be fine (looking at it again must not clear the flag,
    and a move cut short leaves our new content in it); the next write that works does."""
    return f"note {request_id}"


class Content(NamedTuple):
    """What a file held when the daemon looked: a digest, and its bytes if it can be a note."""

    digest: str  # "" when the file is gone
    data: bytes | None  # None: not readable as a note (gone, a link, a pipe, too big...)


class QuietWriter:
    """Rewrites notes once quiet, and remembers what it wrote and read, per file."""

    def __init__(
        self,
        root: Path,
        journal: JournalStore,
        notes: Reconciler,
        quiet: Callable[[], timedelta],
    ) -> None:
        self.root = root
        self.journal = journal
        self.notes = notes
        self.period = quiet  # ``defaults.quiet`` of the rules in force (they may reload)
        self.waiting: set[str] = set()  # requests whose note should show the journal
        # Of those, the ones a look found in need (a save, new rules): the others came from
        # the feed and are skipped if the note shows the journal by the time they are due.
        self._needed: set[str] = set()
        # Of those, when each one's maker (a submitter, a CLI decision), who writes its note
        # too, has had quiet to do so: until then, a note not written yet is not the daemon's.
        self._makers: dict[str, datetime] = {}
        self.refused: dict[str, str] = {}  # the system refused to write these notes: where
        self._next_at: datetime | None = None  # when the next waiting note is worth a look
        self._due: list[tuple[datetime, str]] = []  # a heap of (no sooner than, request id)
        self._touched: dict[str, datetime] = {}  # by file stem: a request's note, anywhere
        self._ours: dict[Path, str] = {}
        self._seen: dict[Path, str] = {}

    @property
    def _quiet(self) -> timedelta:
        return self.period()

    # --- what the files hold ------------------------------------------------------

    def touched(self, path: Path, now: datetime) -> None:
        """Someone (not us) changed ``path`` at ``now``: its quiet period starts again."""
        self._touched[path.stem] = now

    def recently_written(self, path: Path, now: datetime) -> bool:
        try:
            written = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        except OSError:
            return False
        return written > now - self._quiet

    def new_content(self, path: Path) -> Content | None:
        """What the file holds, or None when it is what we last wrote or last looked at.

        An editor's save comes as two or three events: each content is read
        once. What we looked at is forgotten when we rewrite or move the note,
        so an old version that comes back (a git checkout) is looked at again.
        A file that cannot be a note is told apart by its metadata, unread.
        """
        data: bytes | None = None
        try:
            data = read_file(path, path.name)
            digest = hashlib.sha256(data).hexdigest()
        except (OSError, NoteError):
            try:
                st = path.lstat()
            except OSError:
                self._seen.pop(path, None)
                return Content("", None)
            digest = (
                f"stat {st.st_mode:o} {st.st_size} {st.st_mtime_ns} {st.st_ctime_ns} {st.st_ino}"
            )
        if digest in (self._ours.get(path), self._seen.get(path)):
            return None
        self._ours.pop(path, None)
        return Content(digest, data)

    def knows(self, path: Path) -> bool:
        """Whether the daemon wrote or looked at ``path`` before (a note someone may be
        deciding in), rather than a file new to it (a submitter's new note)."""
        return path in self._seen or path in self._ours or self.notes.written.knows(path)

    def looked_at(self, path: Path, digest: str | None) -> None:
        if digest:
            self._seen[path] = digest

    def forget(self, paths: Iterable[Path]) -> None:
        """A rescan: look at these files afresh."""
        for path in paths:
            self._ours.pop(path, None)
            self._seen.pop(path, None)

    # --- writing notes once quiet ---------------------------------------------------

    def want(
        self,
        request_id: str,
        at: datetime | None = None,
        *,
        unless_shown: bool = False,
        heard: datetime | None = None,
    ) -> None:
        """Make the note show the journal once it is quiet (and no sooner than ``at``);
        ``unless_shown``: not if by then it holds the bytes last written for the journal as it
        is (whoever made the entry wrote the note too: a submitter, a CLI decision), and
        ``heard``: when the daemon heard of that entry (its maker has until quiet after that
        to write the note; the entry's own time, kept to the second, is no measure of it)."""
        if not unless_shown:
            self._needed.add(request_id)
        elif heard is not None:
            until = heard + self._quiet
            self._makers[request_id] = max(until, self._makers.get(request_id, until))
        if request_id in self.waiting and at is None:
            return  # its entry in the heap stands; quiet is checked again when it comes up
        self.waiting.add(request_id)
        if at is None:
            # A note someone just saved cannot be quiet before its save is ``quiet`` old:
            # looking any sooner would only cost a journal query and a stat.
            last = self._touched.get(request_id)
            at = _EARLIEST if last is None else last + self._quiet
        heapq.heappush(self._due, (at, request_id))
        self._next_at = self._due[0][0]

    def heard(self, request_id: str, now: datetime, created: bool = False) -> None:
        """An entry someone else made, heard from the feed at ``now``: the note is to show
        the journal, unless it does once its maker has had quiet to write it (:meth:`want`).
        A request's creation (``created``) whose new note this process wrote, whole, after
        journaling it (a submit through the service, or a script's, here) asks nothing: the
        note shows it, and whatever comes next (a save, another entry) asks again."""
        if created and self.notes.written.took_new(request_id):
            return
        self.want(request_id, unless_shown=True, heard=now)

    def next_wake(self, now: datetime) -> datetime | None:
        """When the next waiting note is worth a look (it may still not be quiet then)."""
        return self._next_at

    def quiet_at(self, request_id: str) -> tuple[Path | None, datetime | None]:
        """The request's note, and when it will have been quiet long enough to be rewritten."""
        known = self.journal.last_change(request_id)
        if known is None:
            return None, None
        rel, last_entry = known
        path = self.notes.locate(request_id, rel)
        if path is None:  # written back from the journal once its last change is quiet too
            return None, last_entry + self._quiet
        seen = self._touched.get(path.stem)
        if seen is None:
            try:
                seen = datetime.fromtimestamp(path.stat().st_mtime, UTC)
            except OSError:
                return path, None
        return path, seen + self._quiet

    def write_due(self, now: datetime, busy: bool) -> bool:
        """Write the notes that are due and quiet, a few (one while ``busy``) per step."""
        did = False
        written = 0
        due = self._due
        while due and due[0][0] <= now and written < (1 if busy else SYNC_STEP):
            _, request_id = heapq.heappop(due)
            if request_id not in self.waiting:
                continue  # already written through another entry
            if request_id not in self._needed and self.notes.shows_journal(request_id):
                # Its maker wrote it already (a submitter, a CLI decision): whatever comes
                # next (a save, another entry) asks again. Before any quiet wait, so a
                # burst of submits leaves no wake-up behind for each of their notes.
                self.waiting.discard(request_id)
                self._makers.pop(request_id, None)
                continue  # nothing to read, judge or write
            path, quiet_at = self.quiet_at(request_id)
            if quiet_at is not None and now < quiet_at:
                heapq.heappush(due, (quiet_at, request_id))
                continue
            if request_id not in self._needed:
                maker = self._makers.get(request_id)
                if maker is not None and now < maker:  # its maker may not have written it yet
                    heapq.heappush(due, (maker, request_id))
                    continue
            self.waiting.discard(request_id)
            self._makers.pop(request_id, None)
            self._needed.discard(request_id)
            written += 1
            try:
                done = self.notes.sync(request_id, now)
            except ChangedUnderfootError:
                log.debug("%s: the note changed while being written; trying again", request_id)
                if path is not None:
                    self._touched[path.stem] = now
                self.want(request_id, now + self._quiet)
                continue
            except NoteError as e:  # e.g. a file in the way of a move: the next rescan retries
                if self.journal.flag(e.where, str(e), now, request_id):
                    log.warning("needs attention: %s", e)
                did = True  # the dashboard lists it
                continue
            except OSError as e:  # refused by permissions, a full disk: flagged, retried later
                where = self.notes.rel(path) if path is not None else request_id
                message = (
                    f"{where}: cannot bring the note up to date: {e.strerror or e}"
                    f"{f' ({e.filename})' if e.filename else ''} (check that hitl-vault may "
                    "write this note and its folders; it tries again shortly)"
                )
                if self.journal.flag(refused_flag(request_id), message, now, request_id):
                    log.error("needs attention: %s", message)
                self.refused[request_id] = where
                self.want(request_id, now + RETRY_WRITE)
                did = True
                continue
            except Exception:  # not this note's doing (a held journal, a bug): never forgotten
                self.want(request_id, now + self._quiet)
                raise
            self.refused.pop(request_id, None)
            self.journal.unflag(refused_flag(request_id))  # a flag of an earlier run, too
            if done:
                log.debug("%s: note brought up to date with the journal", request_id)
                self._remember_written(request_id)
            did = True
        self._next_at = due[0][0] if due else None
        return did

    def _remember_written(self, request_id: str) -> None:
        for folder in REQUEST_FOLDERS:
            self._seen.pop(self.root / folder / f"{request_id}.md", None)
        # The digest of the bytes we wrote, as the journal recorded them: reading the
        # file again could pick up a save made a moment later and take it for ours.
        rel, digest = self.journal.note_sha(request_id)
        if rel is None or digest is None:
            return
        path = self.root / rel
        self._ours[path] = digest
        self._touched.pop(path.stem, None)
