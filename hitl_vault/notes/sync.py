"""Showing the journal in a request's note: status, owned fields, missing history lines,
folder, changing only the lines hitl-vault owns, with a compare-and-swap on the bytes read.

:class:`NoteSync` writes; :class:`~hitl_vault.notes.reconcile.Reconciler`, which reads what a
human did to a note, hands it the judge that journals that first.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path

from ..durable import interrupted_move, move_note, write_note
from ..errors import ChangedUnderfootError, NoteError
from ..identity import PUBLIC_URL
from ..model import (
    APPROVED_FOLDER,
    REJECTED_FOLDER,
    REQUEST_FOLDERS,
    STAGING_DIR,
    STATE_DIR,
    Kind,
    Request,
    Status,
)
from ..params import describe_changes
from ..store import JournalStore
from ..text import one_line
from .callout import VOTES_CALLOUT, callout, callouts_written
from .edit import NOT_COUNTED, edit_note, vote_lines
from .file import Note, read_note
from .render import (
    details_table,
    history_key,
    history_line,
    read_refused_vote,
    render_new_note,
)
from .state import NoteState, is_candidate, note_state, note_votes, owned_fields
from .written import WrittenHere

log = logging.getLogger(__name__)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _other_params(note: Note, request: Request) -> bool:
    """The note shows params the journal did not record (an edit that was refused): its
    listing under Needs attention stays until a human puts them back or changes them."""
    shown = note.meta.get("params")
    try:
        return isinstance(shown, dict) and bool(describe_changes(request.params, shown))
    except (TypeError, ValueError):  # a value JSON cannot hold: not what was recorded
        return True


def _not_counted(
    lines: Mapping[str, tuple[Status | None, str]],
    request: Request,
    shown: set[tuple[str, str]],
) -> dict[str, str]:
    """The vote lines (``lines``: the note's votes) to mark ``# not counted: <why>``: refused
    since the note last showed the history, and still reading as the vote refused."""
    marks: dict[str, str] = {}
    for t in request.history:
        found = read_refused_vote(t)
        if found is None or t.key in shown:
            continue
        name, vote, why = found
        if name in lines and str(lines[name][0]) == vote:
            marks[name] = one_line(why, 160)
    return marks


def _votes_callout(note: Note) -> list[list[str]]:
    """The votes callout hitl-vault wrote under rules that asked for several approvals, as the
    note shows it ([] if none): replaced when the rules no longer do."""
    body = [line.rstrip("\r\n") for line in note.lines[note.fm_end + 1 :]]
    start = next((i for i, line in enumerate(body) if line.startswith(VOTES_CALLOUT)), None)
    if start is None:
        return []
    stop = start + 1
    while stop < len(body) and body[stop].startswith("> "):
        stop += 1
    return [body[start:stop]]


# Journals what a human did to a note before it is written over (the note as read, its
# request as the journal had it): the problem that kept it from counting, or None.
Judge = Callable[[Path, Note, Request, datetime], str | None]
# The ``votes:`` lines a note decided by votes shows, and what its callout says is still
# needed (now first, then earlier texts); (None, []) when one person decides.
ApprovalView = Callable[[Request], tuple[dict[str, str] | None, list[str]]]


class NoteSync:
    """Finds each request's note and makes it show what the journal knows.

    Handed the journal, ``view`` (what a voted note shows) and ``judge`` (what records a
    human's edit before the note is written over).
    """

    def __init__(
        self,
        root: Path,
        journal: JournalStore,
        view: ApprovalView,
        judge: Judge,
        proven: Callable[[Request], frozenset[str] | None] = lambda _: None,
    ) -> None:
        self.root = root
        self.journal = journal
        self._view = view
        self._judge = judge
        self._proven = proven  # the channels ``authenticated:`` counts (the callout says them)
        self.written = WrittenHere()  # what this process wrote to each note
        # A new note's content is written here first: its folder then sees the note appear
        # whole, and the watchers (ours, a sync tool's) no temp file come and go beside it.
        self.staging = root / STATE_DIR / STAGING_DIR

    def rel(self, path: Path) -> str:
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    # --- where notes are -------------------------------------------------------

    def locate(self, request_id: str, known: str | None = None) -> Path | None:
        """The note of a request: its last known path, else ``<folder>/<id>.md`` in any folder."""
        if known:
            path = self.root / known
            if path.is_file() and not path.is_symlink():
                return path
        for folder in REQUEST_FOLDERS:
            path = self.root / folder / f"{request_id}.md"
            if path.is_file() and not path.is_symlink():
                return path
        return None

    def finish_move(self, request: Request, a: Path, b: Path) -> Path:
        """One note under two names (a move cut short by a crash): drop one; return the other.

        The name kept is the one in the request's status folder, if either is;
        both names show the same bytes, so removing one loses nothing.
        """
        keep, drop = (b, a) if b.parent.name == request.status.folder else (a, b)
        drop.unlink(missing_ok=True)
        self.written.forget(drop)
        log.info("%s: finished an interrupted move to %s", self.rel(drop), self.rel(keep))
        return keep

    # --- showing the journal in the note --------------------------------------------

    def sync(self, request_id: str, now: datetime) -> bool:
        """Make the note show the journal; True when it does (or there is nothing to show).

        A missing note is written anew from the journal. A note that cannot be
        parsed is left alone (False). What a human did to the note and the journal
        does not hold yet is journaled first; a status the human typed that was not
        acted on is set back with an ``ignored`` history line. Raises
        :class:`ChangedUnderfootError` when the note changed while we wrote, or moved
        (or a new one appeared) since we looked for it: never a silent False for that.
        """
        request = self.journal.get(request_id)
        if request is None:
            return True
        path = self.locate(request_id, str(request.path) if request.path else None)
        if path is None:
            return self._recreate(request)
        there = self.root / request.status.folder / path.name
        if interrupted_move(path, there):
            path = self.finish_move(request, path, there)
        try:
            note = read_note(path, self.rel(path))
        except NoteError:
            if not os.path.lexists(path):  # moved or deleted since we found it: look again
                raise ChangedUnderfootError(self.rel(path)) from None
            return False
        if note.id != request_id:
            return False
        request, refused = self._journal_first(path, note, request, now)
        self._show(path, note, request, refused, now)
        return True

    def _current(self, request_id: str) -> Request:
        request = self.journal.get(request_id)
        assert request is not None  # requests are never deleted
        return request

    def _journal_first(
        self, path: Path, note: Note, request: Request, now: datetime
    ) -> tuple[Request, str | None]:
        """Journal what the human did to the note before it is written over. The request as
        the journal has it then, and the refusal Needs attention keeps listing (or None)."""
        state, why, moved = self._judged(path, note, request, now)
        request = self._current(request.id)
        if state not in (NoteState.UNKNOWN, NoteState.ILLEGAL):
            return request, None
        ignored = f'ignored status "{" ".join(note.status_text.split())}"'
        if moved:
            ignored = f"ignored the move into {path.parent.name}/"
        if why:  # what the human must fix before deciding again
            where, rid = re.escape(note.where), re.escape(request.id)
            ignored += ": " + re.sub(rf"^{where}( line \d+)?: (request {rid}: )?", "", why)
        self.journal.record_ignored(request.id, now, (one_line(ignored, 400),))
        request = self._current(request.id)
        if request.status is not Status.PENDING:
            return request, None
        back = "moved back" if moved else "set back to pending"
        return request, f"{ignored}; {back} (change the note to decide again)"

    def _judged(
        self, path: Path, note: Note, request: Request, now: datetime
    ) -> tuple[NoteState, str | None, bool]:
        """How the note's status stands once what the human did is journaled: its state,
        why it was refused, and whether it was a move into a decision's folder refused."""
        state, _ = note_state(note, request)
        if state is NoteState.DECISION:
            # A decision not journaled yet (its save is still on its way to us): record it
            # now rather than write over it. One that was refused (an approver rule, a
            # changed owned field) is set back.
            problem = self._judge(path, note, request, now)
            state, _ = note_state(note, self._current(request.id))
            if state is not NoteState.DECISION:
                return state, None, False
            if problem is None:
                raise ChangedUnderfootError(note.where)  # not decided yet: try again later
            return NoteState.ILLEGAL, problem, False
        if state is not NoteState.SAME or request.status is not Status.PENDING:
            return state, None, False
        if path.parent.name in (APPROVED_FOLDER, REJECTED_FOLDER):
            # Moved into a decision's folder, and not acted on: say why before moving it back.
            why = self._judge(path, note, request, now)
            refused = self._current(request.id).status is Status.PENDING and bool(why)
            return (NoteState.ILLEGAL, why, True) if refused else (state, why, False)
        if self.journal.note_sha(request.id) != (note.where, sha256(note.raw)):
            self._judge(path, note, request, now)  # votes or params saved, not journaled yet
        return state, None, False

    def _show(
        self, path: Path, note: Note, request: Request, refused: str | None, now: datetime
    ) -> None:
        """Write the note showing ``request``, moved to its status folder; list ``refused``
        under Needs attention, or take the note off it when nothing there is left to fix."""
        have = {history_key(line) for line in note.lines[note.fm_end + 1 :]}
        try:
            shown_votes: Mapping[str, tuple[Status | None, str]] | None = note_votes(note)
        except NoteError:  # a line that reads as no vote (alice: ok): listed until fixed
            shown_votes = None
        marks = _not_counted(shown_votes or {}, request, have)
        # A refusal stays listed until a human changes the note (inspect clears it then) or
        # the request moves on: while its last entry is the refusal, the note is ours.
        keep = request.status is Status.PENDING and (
            request.history[-1].kind is Kind.IGNORED
            or _other_params(note, request)
            or bool(marks)
            or any(NOT_COUNTED in line for line in vote_lines(note).values())
            or shown_votes is None
        )
        data = self._edited(note, request, have, marks)
        where = note.where
        dest = self.root / request.status.folder / path.name
        if dest != path:
            dest.parent.mkdir(exist_ok=True)
            self.written.wrote(dest, data)
            move_note(path, note.raw, dest, data, where)
            self.written.forget(path)
            self.journal.unflag(where)
        elif data != note.raw:
            self.written.wrote(dest, data)
            write_note(path, data, note.raw, where)
        new_where = self.rel(dest)
        if refused is not None:
            self.journal.flag(new_where, f"{new_where}: {refused}", now, request.id)
        elif not keep:
            self.journal.unflag(new_where)
        self.journal.set_path(request.id, new_where, sha256(data), len(request.history))
        self._unflag_left(request.id, new_where)

    def _edited(
        self, note: Note, request: Request, have: set[tuple[str, str]], marks: dict[str, str]
    ) -> bytes:
        """The note's bytes showing ``request``: owned fields, callout, table, votes, history."""
        missing = [history_line(t) for t in request.history if t.key not in have]
        edits = [t.details[0] for t in request.history if t.kind is Kind.EDITED and t.details]
        pending = request.status is Status.PENDING
        shown = edits[-1] if edits and pending else None
        votes, waits = self._view(request)
        now_waiting = waits[0] if waits and pending else None
        proven = self._proven(request)  # a pending callout said them: found by them too
        inbox = self.journal.setting(PUBLIC_URL)  # where the web inbox is, to name it
        new_callout = callout(
            request.status, request.expires, request.rule, request.reason, shown, now_waiting,
            proven if pending else None, inbox,
        )  # fmt: skip
        olds = [
            written
            for e in (None, *edits)
            for s in Status
            for w in (None, *dict.fromkeys(waits))
            for p in dict.fromkeys((None, proven))
            for written in callouts_written(
                s, request.expires, request.rule, request.reason, e, w, p, inbox
            )
        ] + _votes_callout(note)
        fields = owned_fields(note, request)
        table = details_table(request.params)
        return edit_note(note, fields, missing, (olds, new_callout), table, votes, marks)

    def _unflag_left(self, request_id: str, where: str) -> None:
        """Take off Needs attention what names a note of this request at a path the note
        has left (a writer that lost a race to move it listed it there): resolved."""
        for item in self.journal.attention():
            gone = item.path != where and not (self.root / item.path).exists()
            if item.request_id == request_id and is_candidate(Path(item.path)) and gone:
                self.journal.unflag(item.path)

    def sync_now(self, request_id: str, now: datetime, attempts: int = 5) -> bool:
        """``sync``, retried a few times when the note changes underfoot (API and CLI use).

        Each attempt holds the journal's write lock, so two processes with no daemon (a
        script in ``approval()`` and ``hitl-vault approve``, say) never move one note at
        once; what an attempt journaled stands even when writing the note fails. False,
        as from ``sync``: a note that cannot be read as this request's (its reader lists
        it under Needs attention), except one that does not parse now (half-saved by an
        editor, or broken), which raises :class:`NoteError` naming it, as does a note that
        changed during every attempt, for the caller to list there: it does not show the
        journal yet.
        """
        changed: ChangedUnderfootError | None = None
        for _ in range(attempts):
            with self.journal.batch():
                try:
                    return self.sync(request_id, now) or self._unreadable(request_id)
                except ChangedUnderfootError as e:
                    changed = e
                    continue
                except NoteError as e:
                    failed = e
            raise failed
        where = changed.where if changed is not None else request_id
        raise NoteError(
            where,
            f"changed during each of {attempts} attempts to bring it up to date, so it does "
            "not show what the journal holds yet (the journal has it)",
            "a running daemon or `hitl-vault run --once` brings it up to date once nobody is "
            "editing it",
        ) from changed

    def _unreadable(self, request_id: str) -> bool:
        """False when the request's note is another request's; raises :class:`NoteError` when
        it does not parse (so it is listed until a sync succeeds, never a silent False)."""
        request = self._current(request_id)
        path = self.locate(request_id, str(request.path) if request.path else None)
        if path is None:
            return False
        try:
            read_note(path, self.rel(path))
        except NoteError as e:
            raise NoteError(
                e.where,
                f"does not show that the request is {request.status} yet: it could not be read "
                f"as a note when hitl-vault went to update it, maybe mid-save ({e.problem})",
                "a running daemon or `hitl-vault run --once` brings it up to date once it "
                "reads as a note again",
            ) from None
        return False

    def _recreate(self, request: Request) -> bool:
        path = self.root / request.status.folder / f"{request.id}.md"
        path.parent.mkdir(exist_ok=True)
        ruling_text = f"Matched rule `{request.rule}`."
        votes, waits = self._view(request)
        pending = request.status is Status.PENDING and bool(waits)
        text = render_new_note(
            request,
            ruling_text,
            [n for n, v in (votes or {}).items() if not v],
            waits[0] if pending else None,
            self._proven(request) if request.status is Status.PENDING else None,
            self.journal.setting(PUBLIC_URL),
        )
        data = text.encode("utf-8")
        self.written.wrote(path, data)
        # (one appeared meanwhile: ChangedUnderfootError, and the caller looks again)
        write_note(path, data, None, self.rel(path), staging=self.staging)
        self.journal.set_path(request.id, self.rel(path), sha256(data), len(request.history))
        return True

    def write_new(self, request: Request, text: str) -> Path:
        """Write a brand-new request note (exclusive create)."""
        path = self.root / request.status.folder / f"{request.id}.md"
        path.parent.mkdir(exist_ok=True)
        data = text.encode("utf-8")
        self.written.wrote(path, data)
        for attempt in range(3):
            try:
                write_note(path, data, None, self.rel(path), staging=self.staging)
                break
            except ChangedUnderfootError:
                # One appeared (the caller looks for it); else a daemon starting up took our
                # temp file for a crash's leftover: write it again.
                if os.path.lexists(path) or attempt == 2:
                    raise
        where, digest = self.rel(path), sha256(data)
        # A submitter's create recorded these already (one write fewer per submit).
        if self.journal.note_sha(request.id) != (where, digest):
            self.journal.set_path(request.id, where, digest, len(request.history))
        self.written.wrote_new(request.id)
        return path
