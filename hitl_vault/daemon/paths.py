"""What a path that may have changed means to the daemon, by what it is.

A request note (a human's decision or edit, journaled at once), an Inbox
proposal (a new request), ``hitl-vault.yaml`` (reloaded once quiet), or a
request folder that appeared (everything in it); the journal's own changes reach
the daemon through the store's ``watch``, not through here. The daemon decides
when to look and in which commit; this module decides what a look does. A look
never queues an action: an approval it journaled reaches the worker queue through
the journal's feed, as one any other process made does.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from ..model import INBOX_FOLDER, REQUEST_FOLDERS, RULES_FILE, STATE_DIR
from ..notes.leftovers import Leftovers
from ..notes.reconcile import Finding
from ..notes.state import is_candidate
from .inbox import Inbox
from .quiet import Content, QuietWriter, refused_flag

if TYPE_CHECKING:
    from ..notes.reconcile import Reconciler
    from ..store import JournalStore

log = logging.getLogger(__name__)


class Looker:
    """Looks at paths for one daemon; remembers what to look at again and what it said."""

    def __init__(
        self,
        root: Path,
        journal: JournalStore,
        notes: Reconciler,
        quiet: QuietWriter,
        inbox: Inbox,
        rules_changed: Callable[[datetime], None],
        rescan_every: timedelta,
    ) -> None:
        self.root = root
        self.journal = journal
        self.notes = notes
        self.quiet = quiet
        self.inbox = inbox
        self._rules_changed = rules_changed
        self.rescan_every = rescan_every
        self.next_rescan: datetime | None = None  # None: at the next step (a start, an overflow)
        self.recheck: dict[Path, datetime] = {}  # half-saved notes: looked at again once quiet
        self._reported: dict[Path, str] = {}  # the problem last logged for each path
        self.leftovers = Leftovers(root, journal)
        self._cleared_once = False

    def is_note(self, path: Path) -> bool:
        try:
            return is_candidate(path.relative_to(self.root))
        except ValueError:
            return False

    def _relative(self, path: Path) -> Path | None:
        """``path`` relative to the vault, unless it is outside it, the vault itself or in
        the journal's folder (None: nothing a look acts on)."""
        try:
            rel = path.relative_to(self.root)
        except ValueError:
            return None
        return None if not rel.parts or rel.parts[0] == STATE_DIR else rel

    def wants(self, path: Path) -> bool:
        """Whether :meth:`look` may do anything with ``path`` (a note, an Inbox file, the rules,
        a request folder): a write of anything else (a temp file of ours, the dashboard, a
        file elsewhere in the vault) is no reason to wake the daemon."""
        rel = self._relative(path)
        if rel is None:
            return False
        if rel.parts[0] == INBOX_FOLDER or rel.as_posix() == RULES_FILE:
            return True
        if len(rel.parts) == 1 and rel.parts[0] in REQUEST_FOLDERS:
            return True
        # A note holding what this process last wrote there (the service's new note, our own
        # rewrite) has no news: the journal recorded those bytes.
        return is_candidate(rel) and not self.notes.written.holds_ours(path)

    def due(self, now: datetime) -> set[Path]:
        """The half-saved notes whose quiet period has passed."""
        return {path for path, at in self.recheck.items() if now >= at}

    def rescan_due(self, now: datetime, *, wanted: bool = False) -> bool:
        """Whether to look at every file again now (``wanted``: events were lost); if so, the
        next rescan is planned from now."""
        if not wanted and self.next_rescan is not None and now < self.next_rescan:
            return False
        self.next_rescan = now + self.rescan_every
        return True

    def next_wake(self, now: datetime) -> datetime | None:
        """The soonest of: a half-saved note quiet at last, the next rescan."""
        times = [*self.recheck.values(), self.next_rescan]
        return min((t for t in times if t is not None), default=None)

    def look(self, path: Path, now: datetime) -> bool:
        """Handle one path that may have changed, by what it is; True if anything happened."""
        rel = self._relative(path)
        if rel is None:
            return False
        if rel.as_posix() == RULES_FILE:  # reloaded once quiet: an editor may be mid-save
            self._rules_changed(now)
            return False
        folder = len(rel.parts) == 1 and rel.parts[0] in (*REQUEST_FOLDERS, INBOX_FOLDER)
        if folder and path.is_dir():  # it appeared or moved in (a git checkout, a sync)
            return any([self.look(child, now) for child in path.iterdir()])  # all it holds
        if rel.parts[0] == INBOX_FOLDER:
            return self._take_proposal(path, rel, now)
        return is_candidate(rel) and self._look_at_note(path, rel, now)

    def settle(self, notes: list[Path], now: datetime) -> tuple[list[Path], bool]:
        """Look at the notes of ``notes`` that need no write: those unchanged since the last
        look, and those holding exactly what the journal recorded for them (a maker's write
        seen from another process: a submit, a CLI decision). The step's batch holds the
        journal, and the service's threads wait for it, so it is opened only for the rest,
        returned for :meth:`look` (a save, a half-saved note); True with them if anything
        was looked at."""
        rest: list[Path] = []
        did = False
        for path in notes:
            try:
                settled = self._settled(path, now)
            except Exception:  # the look in the batch says what is wrong, and retries it
                settled = None
            if settled is None:
                rest.append(path)
            did |= bool(settled)
        return rest, did

    def _settled(self, path: Path, now: datetime) -> bool | None:
        """What :meth:`_look_at_note` would find without writing (None: it may write)."""
        if path in self.recheck or not self.is_note(path):
            return None
        content = self.quiet.new_content(path)
        if content is None:
            return False  # what it held when last looked at or written here
        if content.data is None or not self.notes.matches_journal(path, content.data):
            return None
        self.quiet.touched(path, now)
        return self._found(path, content, Finding(path, path.stem))  # as inspect finds it

    def _take_proposal(self, path: Path, rel: Path, now: datetime) -> bool:
        """An Inbox file: a proposal becomes a request (or is flagged)."""
        for request in self.inbox.take(path, now):  # one approved at once: the feed queues it
            log.info("%s: made from %s", request.id, rel)
        return True  # a request, or a flag: either way the dashboard may change

    def _look_at_note(self, path: Path, rel: Path, now: datetime) -> bool:
        """A request note: journal a human's decision or edit at once; flag what cannot be."""
        recheck = self.recheck.pop(path, None)
        due = recheck is not None and now >= recheck
        content = self.quiet.new_content(path)
        if content is None and not due:
            return False
        log.debug("%s: changed", rel)
        self.quiet.touched(path, now)
        hold = not due and self.quiet.recently_written(path, now)
        data = content.data if content else None
        finding = self.notes.inspect(path, now, hold=hold, data=data)
        if finding is None:
            return False
        if finding.held:  # maybe half-saved: flag it only if it still fails once quiet
            log.debug("%s: does not parse yet; looking again once it is quiet", rel)
            self.recheck[path] = now + self.quiet.period()
            return False
        return self._found(path, content, finding)

    def _found(self, path: Path, content: Content | None, finding: Finding) -> bool:
        """Remember what a look at a note found, and say it (True: it was looked at)."""
        self.quiet.looked_at(path, content.digest if content else None)
        if finding.problem and self._reported.get(path) != finding.problem:
            log.warning("needs attention: %s", finding.problem)
        if finding.problem:
            self._reported[path] = finding.problem
        else:
            self._reported.pop(path, None)
        if finding.request_id and finding.needs_sync:
            self.quiet.want(finding.request_id)
        elif finding.request_id:  # it shows the journal where it belongs: nothing to write
            self.journal.unflag(refused_flag(finding.request_id))
        return True

    def clear_leftovers(self, now: datetime) -> bool:
        """Remove (or list) what writes cut short by a crash left in the request folders; the
        first time, at start, however young (see :mod:`~hitl_vault.notes.leftovers`)."""
        found = self.leftovers.clear(now, starting=not self._cleared_once)
        self._cleared_once = True
        return found

    def scan(self) -> set[Path]:
        """Every file in the Inbox and the request folders (a rescan looks at them all)."""
        found: set[Path] = set()
        for folder in (INBOX_FOLDER, *REQUEST_FOLDERS):
            try:
                found.update(p for p in (self.root / folder).iterdir())
            except FileNotFoundError:
                continue
            except OSError as e:  # a file where the folder should be, no permission
                log.error(
                    "cannot look into %s/: %s (make it a folder hitl-vault may read)",
                    folder,
                    e.strerror or e,
                )
        # A note listed under Needs attention where no file is now: looking clears it.
        flagged = (self.root / a.path for a in self.journal.attention())
        found.update(p for p in flagged if self.is_note(p) and not p.exists())
        self.quiet.forget(found)
        return found

    def check_missing_notes(self, now: datetime) -> bool:
        """A note deleted while nobody watched is written again from the journal."""
        for request_id, rel in self.journal.paths().items():
            if not (self.root / rel).exists():
                self.quiet.want(request_id)
        return True
