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
from collections.abc import Callable, Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..durable import interrupted_move, read_file
from ..errors import DecisionRefusedError, NotAnApproverError, NoteError, RulesError
from ..layout import APPROVED_FOLDER, DONE_FOLDER, REJECTED_FOLDER
from ..model import Request, Status, Transition
from ..params import describe_changes, note_params
from ..policy.rules import Policy, RuleFunction
from ..policy.verdict import (
    Verdict,
    judge,
    judge_edit,
)
from ..store import JournalStore, request_flag
from ..text import one_line
from .file import Note, parse_note, read_note
from .render import history_key
from .state import (
    OWNED_AT_CREATION,
    NoteState,
    differs,
    is_candidate,
    is_conflict_copy,
    line_number,
    note_state,
    same_value,
)
from .sync import NoteSync, sha256
from .votes import Voting

_FOLDER_DECISION = {APPROVED_FOLDER: Status.APPROVED, REJECTED_FOLDER: Status.REJECTED}


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


class Reconciler(Voting, NoteSync):
    """Keeps the notes of one vault and its journal telling the same story."""

    def __init__(
        self,
        root: Path,
        journal: JournalStore,
        policy: Callable[[], Policy],
        functions: Sequence[RuleFunction],
    ) -> None:
        super().__init__(root, journal)
        self._policy = policy
        self._functions = functions

    def record_decision(
        self, path: Path, note: Note, request: Request, now: datetime
    ) -> str | None:
        return self._judge(path, note, request, now).problem

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
            known = self._finish_move(request, known, path)
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

    def _unchanged(self, path: Path, where: str, data: bytes | None) -> bool:
        """The note still holds the bytes it had when it last matched the journal."""
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
        where = note.where
        state, word_status = note_state(note, request)
        folder = path.parent.name
        tampered = [
            key
            for key in OWNED_AT_CREATION
            if not same_value(note.meta.get(key), getattr(request, key))
        ]
        problem: str | None = None
        acted: Transition | None = None
        decided = word_status if state is NoteState.DECISION else None
        if request.status is Status.PENDING and folder in _FOLDER_DECISION:
            by_folder = _FOLDER_DECISION[folder]
            if decided is None and state is NoteState.SAME:
                decided = by_folder
            elif decided is not None and decided is not by_folder:
                problem = (
                    f"{where}: says {decided} but was moved into {folder}/; "
                    "make the status and the folder agree"
                )
                decided = None
        if state is NoteState.UNKNOWN:
            problem = str(
                NoteError(
                    where,
                    f'unknown status "{note.status_text}"',
                    "use approved or rejected",
                    line_number(note, "status"),
                )
            )
        elif state is NoteState.ILLEGAL:
            problem = (
                f"{where}: status {note.status_text!r} ignored: the request is "
                f"{request.status} and cannot become {word_status} (it will be set back)"
            )
        elif tampered:
            problem = (
                f"{where}: {', '.join(tampered)} changed; only hitl-vault sets "
                f"{'it' if len(tampered) == 1 else 'them'} (it will be set back; edit params, "
                "status, reason or decided_by instead)"
            )
            decided = None
        if decided is not None and problem is None:
            by = note.meta.get("decided_by")
            reason = note.meta.get("reason")
            try:
                acted = self.decide(
                    request,
                    decided,
                    by=str(by).strip() if by is not None else "",
                    reason=str(reason).strip() if reason is not None else "",
                    params=(  # a rejection runs nothing: whatever params say, it stands
                        note_params(note.meta.get("params"), where, line_number(note, "params"))
                        if decided is Status.APPROVED
                        else None
                    ),
                    now=now,
                    typed=True,
                )
            except NoteError as e:
                problem = str(e)
            except DecisionRefusedError as e:
                problem = f"{where}: {e}"
            except RulesError as e:  # fail closed: it stays pending (set back once quiet)
                problem = f"{where}: {decided} not recorded, the request stays pending: {e}"
        elif problem is None and request.status is Status.PENDING:
            try:  # say so now, not only once someone approves
                params = note_params(note.meta.get("params"), where, line_number(note, "params"))
            except NoteError as e:
                problem = f"{e} before approving"
            else:
                if state is NoteState.SAME:
                    try:
                        acted, problem = self._record_edit(note, request, params, now)
                    except RulesError as e:  # fail closed: the edit is not recorded
                        problem = self.rule_failed(request, "params edit", e, now, where)
                if state is NoteState.SAME and problem is None and "votes" in note.meta:
                    voted, problem = self._record_votes(note, request, params, now)
                    acted = voted or acted
        if problem:
            self.journal.flag(where, problem, now, request.id)
        else:
            self.journal.unflag(where)
        needs_sync = acted is not None or differs(note, folder, request)
        if not (needs_sync or problem):
            self.journal.set_path(request.id, where, sha256(note.raw), len(request.history))
        return Finding(path, request.id, acted, needs_sync or problem is not None, problem)

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
            self._policy(), request, params, created=self.journal.created_params(request.id),
            pinned=self.journal.pinned(request.id), functions=self._functions,
        )  # fmt: skip
        if fixed:
            return None, (
                f"{note.where}: params edited ({changes}) but rule {fixed} does not allow "
                "edits (editable: false); put them back as they were asked for"
            )
        by = note.meta.get("decided_by")
        who = str(by).strip() if by is not None and str(by).strip() else "unknown"
        t = self.journal.record_edit(request.id, params, at=now, by=who, changes=changes)
        return t, None

    def rule_failed(
        self, request: Request, what: str, error: RulesError, now: datetime, where: str = ""
    ) -> str:
        """A Python rule raised while judging ``what`` (a decision, an edit) of a pending
        request: nothing is recorded but that. It is listed under Needs attention (at
        ``where``, else as the request) and, the first time, in its history. The message."""
        message = f"{what} not recorded, the request stays pending: {error}"
        shown = f"{where}: {message}" if where else f"request {request.id}: {message}"
        if self.journal.flag(where or request_flag(request.id), shown, now, request.id):
            self.journal.record_ignored(request.id, now, (one_line(message, 400),))
        return shown

    def decide(
        self,
        request: Request,
        to: Status,
        *,
        by: str,
        reason: str,
        params: Mapping[str, Any] | None,
        now: datetime,
        typed: bool = False,
    ) -> Transition | None:
        """Judge a human's approval or rejection of a pending request (:func:`judge`) and
        journal the verdict: a vote, then the decision when the votes make one. Raises
        :class:`DecisionRefusedError` when ``by``'s decision does not count; None when the
        request was no longer pending. ``typed``: a status typed in the note (or its folder),
        which a request decided by votes refuses."""
        verdict = self._verdict(request, to, by, reason, params, now, typed)
        # The vote and the decision it completes are written together, judged on the votes
        # the journal holds inside the same transaction: two people voting at the same
        # moment are counted one after the other, never both as "1 of 2". (Inside the daemon's
        # batch, that is its transaction.)
        batching = self.journal.batching  # then ``request`` was read in this transaction
        with nullcontext() if batching else self.journal.batch():
            fresh = None if batching else self.journal.get(request.id)
            if fresh is not None and len(fresh.history) != len(request.history):
                request = fresh  # something was recorded meanwhile: judge again
                verdict = self._verdict(request, to, by, reason, params, now, typed)
            if verdict.vote is None or verdict.count is None:
                return self._transition(request, verdict, by, now)
            v, c = verdict.vote, verdict.count
            done = sum(len(a) for a in c.approvals)
            need = sum(s.quorum for s in c.plan.stages)
            t = self.journal.record_vote(
                request.id, at=now, by=v.name, approve=v.approve, reason=v.reason,
                count=f"{done} of {need}" if v.approve else "rejects it",
            )  # fmt: skip
            if t is None or verdict.to is Status.PENDING:
                return t
            return self._transition(request, verdict, by, now)

    def _verdict(
        self,
        request: Request,
        to: Status,
        by: str,
        reason: str,
        params: Mapping[str, Any] | None,
        now: datetime,
        typed: bool = False,
    ) -> Verdict:
        """:func:`judge`; raises :class:`DecisionRefusedError` when ``by``'s does not count."""
        verdict = judge(
            self._policy(), request, to, by=by, reason=reason, params=params, now=now,
            created=self.journal.created_params(request.id),
            pinned=self.journal.pinned(request.id), functions=self._functions, typed=typed,
        )  # fmt: skip
        if verdict.refused is not None:
            r = verdict.refused
            if r.problem:
                raise DecisionRefusedError(request.id, r.by, r.problem)
            raise NotAnApproverError(request.id, r.by, r.approvers, r.rule)
        return verdict

    def _transition(
        self, request: Request, verdict: Verdict, by: str, now: datetime
    ) -> Transition | None:
        if verdict.to is Status.TIMED_OUT:
            return self.journal.transition(
                request.id, Status.TIMED_OUT, at=now, by="hitl-vault", expect={Status.PENDING},
                details=verdict.details,
            )  # fmt: skip
        return self.journal.transition(
            request.id,
            verdict.to,
            at=now,
            by=str(verdict.fields.get("decided_by") or by or "unknown"),
            reason=verdict.reason,
            details=verdict.details,
            expect={Status.PENDING},
            fields=dict(verdict.fields),
        )
