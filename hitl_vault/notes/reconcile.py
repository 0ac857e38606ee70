"""Notes <-> journal: read what a human did to a note, record it, and show the journal in the note.

Two directions, kept apart on purpose:

* :meth:`Reconciler.inspect` reads one file and, when it holds a human's
  decision on a pending request, journals it at once (this is the fast path);
  anything it cannot act on is listed under Needs attention and left alone.
* :meth:`Reconciler.sync` makes a request's note show what the journal knows
  (status, owned fields, missing history lines, folder), changing only the
  lines hitl-vault owns, with a compare-and-swap on the bytes it read.

The daemon calls ``sync`` only once a note has been quiet; the API and CLI,
which act on behalf of the person at the keyboard, call it at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..durable import interrupted_move, read_file
from ..errors import DecisionRefusedError, NoteError, RulesError
from ..identity import name_problem
from ..model import DONE_FOLDER, REJECTED_FOLDER, Request, Status, Transition
from ..params import describe_changes, note_params
from ..policy.verdict import judge_edit
from ..store import JournalStore, LeasedStore
from .decide import Decider
from .file import Note, parse_note, read_note
from .render import history_key
from .state import NoteState, Reading, differs, is_candidate, is_conflict_copy, line_number
from .sync import NoteSync, sha256
from .votes import Votes
from .written import WrittenHere


def _later(move: str, status: Status) -> bool:
    """Whether a history line's move (``approved → executing``) ends past ``status``."""
    try:
        to = Status(move.rsplit(" ", 1)[-1])
    except ValueError:  # not a status word
        return False
    return _STAGE[to] > _STAGE[status]


# An ``executed_at`` key with a value, in the frontmatter.
_EXECUTED_AT = re.compile(r"executed_at:[ \t]*(?![ \t]*(?:#|~|null\b|''|\"\"|$))")
# How far along its life each status is; a final status is as far as it gets.
_STAGE = {s: 3 for s in Status} | {Status.PENDING: 0, Status.APPROVED: 1, Status.EXECUTING: 2}


@dataclass(frozen=True)
class Finding:
    """What looking at one file found."""

    path: Path
    request_id: str | None
    acted: Transition | None = None
    needs_sync: bool = False
    problem: str | None = None
    held: bool = False  # a parse error not flagged yet (see Reconciler.inspect)


class Reconciler:
    """Keeps the notes of one vault and its journal telling the same story.

    Composes the :class:`Decider` it is handed (the rules and the journal), the
    :class:`Votes` written in notes and the :class:`NoteSync` that shows the journal in a
    note; reading a human's save (:meth:`inspect`) is its own job.
    """

    def __init__(self, root: Path, journal: JournalStore, decider: Decider) -> None:
        self.root = root
        self.journal = journal
        self._decider = decider
        self._votes = Votes(journal, decider)
        self._sync = NoteSync(
            root, journal, self._votes.approval_view, self.record_decision, self._votes.proven
        )
        # True while another process writes every note (this one follows the leader of a
        # shared journal): new notes and updates are left to it. On a shared journal a CLI
        # or a library leaves them while a lease is live (a leader writes them from the
        # journal); ``serve`` and ``run`` say instead whether this process follows.
        self.leave_notes: Callable[[], bool] = (
            journal.daemon_running if isinstance(journal, LeasedStore) else lambda: False
        )

    def record_decision(
        self, path: Path, note: Note, request: Request, now: datetime
    ) -> str | None:
        """Journal what a note shows before it is written over; the problem that kept it
        from counting, or None."""
        return self._judge(path, note, request, now).problem

    # --- the notes, for the engine and the daemon --------------------------------

    def rel(self, path: Path) -> str:
        """``path`` relative to the vault, as Needs attention and the journal name it."""
        return self._sync.rel(path)

    @property
    def written(self) -> WrittenHere:
        """What this process wrote last to each note (its own writes' events are no news)."""
        return self._sync.written

    def locate(self, request_id: str, known: str | None = None) -> Path | None:
        """The note of a request (see :meth:`NoteSync.locate`)."""
        return self._sync.locate(request_id, known)

    def sync(self, request_id: str, now: datetime) -> bool:
        """Make the note show the journal (see :meth:`NoteSync.sync`)."""
        return self._sync.sync(request_id, now)

    def sync_now(self, request_id: str, now: datetime, attempts: int = 5) -> bool:
        """``sync``, retried when the note changes underfoot (API and CLI use); False, with
        nothing written, while the notes are left to another process."""
        if self.leave_notes():
            return False
        return self._sync.sync_now(request_id, now, attempts)

    def write_new(self, request: Request, text: str) -> Path | None:
        """Write a brand-new request note (exclusive create); None, with nothing written,
        while the notes are left to another process (which writes it from the journal)."""
        if self.leave_notes():
            return None
        return self._sync.write_new(request, text)

    def settle(self, request_id: str, now: datetime) -> Transition | None:
        """Decide a pending request its recorded votes decide under the rules in force."""
        return self._decider.settle(request_id, now)

    def note_first(self, request: Request, now: datetime) -> bool:
        """Journal what a pending request's note says that the journal does not hold yet (a
        save made before what is about to be recorded); whether it recorded anything.

        A note that does not parse right now is neither read nor flagged (``hold``): an
        editor may be between truncating it and writing it. The decision goes on; the note
        is brought up to date by the next sync, and a reader that finds it still broken
        once quiet lists it under Needs attention."""
        if request.status is not Status.PENDING or request.path is None:
            return False
        finding = self.inspect(request.path, now, hold=True)
        return finding is not None and finding.acted is not None

    def params_shown(self, request: Request) -> dict[str, Any]:
        """The params a pending request's note shows (a human may have edited them there),
        else those recorded."""
        params = dict(request.params)
        if request.path is None or request.status is not Status.PENDING:
            return params
        try:
            note = read_note(request.path, self.rel(request.path))
        except NoteError:
            return params
        if isinstance(note.meta.get("params"), dict):
            line = line_number(note, "params")
            params = note_params(note.meta["params"], note.where, line)
        return params

    def later_in_note(self, request: Request) -> str | None:
        """What in the note shows the request further on than the journal does, or None.

        A journal restored from a backup older than the vault forgets that an action
        ran; the note remembers: a history line hitl-vault wrote for a later step, an
        ``executed_at``, or the note in ``Done/`` or ``Rejected/``. Such a request
        must never run again.
        """
        path = self.locate(request.id, str(request.path) if request.path else None)
        if path is None:
            return None
        where = self.rel(path)
        folder = path.parent.name
        if folder in (DONE_FOLDER, REJECTED_FOLDER) and folder != request.status.folder:
            return f"{where} is in {folder}/, but the journal says {request.status}"
        try:  # read as text, not parsed: fast, and a note with broken YAML still tells
            lines = read_file(path, where).decode("utf-8", "replace").splitlines()
        except (OSError, NoteError):
            return None
        end = next((i for i, line in enumerate(lines[1:], 1) if line.strip() == "---"), 0)
        ran = any(_EXECUTED_AT.match(line) for line in lines[1:end])
        if ran and request.executed_at is None:
            return f"{where} has executed_at, but the journal says {request.status}"
        known = {t.key for t in request.history}
        for line in lines[end + 1 :]:
            at, move = history_key(line)
            if at and (at, move) not in known and _later(move, request.status):
                return f"{where} has the history line {line.strip()!r}, unknown to the journal"
        return None

    # --- reading a human's edit -----------------------------------------------------

    def inspect(
        self, path: Path, now: datetime, *, hold: bool = False, data: bytes | None = None
    ) -> Finding | None:
        """Look at one file; journal a human's decision at once; flag what cannot be acted on.

        Returns None for files that are not request notes at all (temp files,
        folder notes, files elsewhere in the vault). With ``hold``, a file that
        does not parse is reported (``held``) but not flagged yet: an editor may
        be between truncating it and writing it; look again once it is quiet.
        ``data``: the file's bytes, when the caller has just read them.
        """
        rel_path = Path(self.rel(path))
        if not is_candidate(rel_path):
            return None
        where = rel_path.as_posix()
        if is_conflict_copy(path.name):
            if not path.exists():
                self.journal.unflag(where)
                return None
            return self._flag(
                path,
                None,
                f"{where}: a sync-conflict copy; hitl-vault never acts on it "
                "(compare it with the note of the same id, keep what you need, delete it)",
                now,
            )
        if data is None and not path.exists() and not path.is_symlink():
            self.journal.unflag(where)
            return None
        if self._unchanged(path, where, data):
            return Finding(path, path.stem)
        try:
            note = read_note(path, where) if data is None else parse_note(data, where)
        except NoteError as e:
            if hold:
                return Finding(path, None, problem=str(e), held=True)
            return self._flag(path, None, str(e), now)
        rid = note.id
        request = self.journal.get(rid) if rid else None
        if request is None or rid is None:
            shown = f'"{rid}"' if rid else "no id"
            return self._flag(
                path,
                None,
                f"{where}: {shown} is not a request hitl-vault created (proposals belong in "
                "Inbox/; move it there without an id, or delete it)",
                now,
            )
        known = self.locate(rid, str(request.path) if request.path else None)
        if known is not None and interrupted_move(known, path):
            known = self._sync.finish_move(request, known, path)
            if known != path:
                self.journal.unflag(where)
                return None
        if known is not None and known != path:
            return self._flag(
                path,
                rid,
                f"{where}: a second note for request {rid} (the first is {self.rel(known)}); "
                "delete this copy",
                now,
            )
        if request.path is None or str(request.path) != where:
            self.journal.set_path(rid, where)
        return self._judge(path, note, request, now)

    def shows_journal(self, request_id: str) -> bool:
        """The request's note holds the bytes last written for the journal as it is now
        (their digest is kept only then, and each later entry clears it)."""
        where, digest = self.journal.note_sha(request_id)
        if where is None or digest is None:
            return False
        return self._unchanged(self.root / where, where, None, digest)

    def matches_journal(self, path: Path, data: bytes) -> bool:
        """``data``, just read from the note ``path``, is what the journal last recorded it
        holds (its maker's write): there is nothing in it to journal."""
        return not is_conflict_copy(path.name) and self._unchanged(path, self.rel(path), data)

    def _unchanged(
        self, path: Path, where: str, data: bytes | None, digest: str | None = None
    ) -> bool:
        """The note still holds the bytes it had when it last matched the journal (whose
        digest of them the caller may have read already)."""
        if digest is None:
            known, digest = self.journal.note_sha(path.stem)
            if digest is None or known != where:
                return False
        if data is None:
            try:
                data = read_file(path, where)
            except (OSError, NoteError):
                return False
        return sha256(data) == digest

    def _flag(self, path: Path, rid: str | None, message: str, now: datetime) -> Finding:
        self.journal.flag(self.rel(path), message, now, rid)
        return Finding(path, rid, problem=message)

    def _judge(self, path: Path, note: Note, request: Request, now: datetime) -> Finding:
        """Journal what the note says (a decision, an edit of the params, votes) and list
        what cannot count under Needs attention."""
        reading = Reading.of(note, request, path.parent.name)
        decided, problem = reading.decision()
        acted: Transition | None = None
        if decided is not None:
            acted, problem = self._record_decision(note, request, decided, now)
        elif problem is None and reading.pending:
            acted, problem = self._record_pending(reading, now)
        where = note.where
        if problem:
            self.journal.flag(where, problem, now, request.id)
        else:
            self.journal.unflag(where)
        needs_sync = acted is not None or differs(note, path.parent.name, request)
        if not (needs_sync or problem):
            self.journal.set_path(request.id, where, sha256(note.raw), len(request.history))
        return Finding(path, request.id, acted, needs_sync or problem is not None, problem)

    def _record_decision(
        self, note: Note, request: Request, decided: Status, now: datetime
    ) -> tuple[Transition | None, str | None]:
        """The status (or folder) a human decided with, journaled; or why it was not."""
        where = note.where
        by, reason = note.meta.get("decided_by"), note.meta.get("reason")
        try:
            params = (  # a rejection runs nothing: whatever params say, it stands
                note_params(note.meta.get("params"), where, line_number(note, "params"))
                if decided is Status.APPROVED
                else None
            )
            acted = self._decider.decide(
                request,
                decided,
                by=str(by).strip() if by is not None else "",
                reason=str(reason).strip() if reason is not None else "",
                params=params,
                now=now,
                typed=True,
            )
        except NoteError as e:
            return None, str(e)
        except DecisionRefusedError as e:
            return None, f"{where}: {e}"
        except RulesError as e:  # fail closed: it stays pending (set back once quiet)
            return None, f"{where}: {decided} not recorded, the request stays pending: {e}"
        return acted, None

    def _record_pending(
        self, reading: Reading, now: datetime
    ) -> tuple[Transition | None, str | None]:
        """A pending note with no decision: its params (an edit), then its votes, journaled."""
        note, request = reading.note, reading.request
        try:  # say so now, not only once someone approves
            params = note_params(note.meta.get("params"), note.where, line_number(note, "params"))
        except NoteError as e:
            return None, f"{e} before approving"
        if reading.state is not NoteState.SAME:
            return None, None
        try:
            acted, problem = self._record_edit(note, request, params, now)
        except RulesError as e:  # fail closed: the edit is not recorded
            return None, self._decider.rule_failed(request, "params edit", e, now, note.where)
        if problem is None and "votes" in note.meta:
            voted, problem = self._votes.record(note, request, params, now)
            acted = voted or acted
        return acted, problem

    def _record_edit(
        self, note: Note, request: Request, params: dict[str, Any], now: datetime
    ) -> tuple[Transition | None, str | None]:
        """Params edited in a pending note with no decision: record them, so the note shows
        them before anyone approves and an approval runs exactly them. A rule with
        ``editable: false`` refuses the edit instead (the problem is returned)."""
        changes = describe_changes(request.params, params)
        if not changes:
            return None, None
        if request.votes():
            names = ", ".join(sorted({t.by for t in request.votes()}))
            return None, (
                f"{note.where}: params edited ({changes}) after {names} voted for them as they "
                "were; put them back (or reject it and ask again with the new params)"
            )
        fixed = judge_edit(
            self._decider.policy(),
            request,
            params,
            created=self.journal.created_params(request.id),
            pinned=self.journal.pinned(request.id),
            functions=self._decider.functions,
        )
        if fixed:
            return None, (
                f"{note.where}: params edited ({changes}) but rule {fixed} does not allow "
                "edits (editable: false); put them back as they were asked for"
            )
        by = note.meta.get("decided_by")
        named = str(by).strip() if by is not None else ""
        # Who edited, as the note says: a name breaking the rule (``alice via api``) is none.
        who = named if named and name_problem(named) is None else "unknown"
        t = self.journal.record_edit(request.id, params, at=now, by=who, changes=changes)
        return t, None
