"""Which files are request notes, and how a note relates to the journal: pure functions, no I/O."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from ..errors import NoteError
from ..model import APPROVED_FOLDER, REJECTED_FOLDER, REQUEST_FOLDERS, Kind, Request, Status
from ..times import parse_ts
from .file import Note
from .render import history_key

# What a human may type in `status:` to decide, in any case, with spaces around.
_HUMAN_WORDS = {
    "approve": Status.APPROVED,
    "approved": Status.APPROVED,
    "yes": Status.APPROVED,
    "reject": Status.REJECTED,
    "rejected": Status.REJECTED,
    "no": Status.REJECTED,
}


def read_status_word(word: str) -> Status | None:
    """The status a word in a note's ``status:`` means, or None for a word we never act on.

    Human decision words (``Yes``, `` approve ``) map to their canonical status;
    canonical names of every status are recognised too, so a note that shows an
    older status is understood rather than reported as a typo.
    """
    text = word.strip().lower()
    if text in _HUMAN_WORDS:
        return _HUMAN_WORDS[text]
    try:
        return Status(text)
    except ValueError:
        return None


VOTES_FIX = (
    "under votes:, write approved or rejected after your name, a reason after a comma "
    "if you like (bob: rejected, not this week)"
)


def read_vote(value: Any) -> tuple[Status | None, str]:
    """A ``votes:`` line's value: the decision (None: none yet) and the reason after it.

    ``approved``, ``Yes``, ``rejected, budget frozen``, ``no - not now``; raises ValueError
    for anything else."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None, ""
    if isinstance(value, bool):  # YAML 1.1 reads yes/no as booleans
        return (Status.APPROVED if value else Status.REJECTED), ""
    if not isinstance(value, str):
        raise ValueError(value)
    word, _, reason = value.strip().partition(" ")
    word, comma, rest = word.partition(",")
    status = _HUMAN_WORDS.get(word.strip().lower())
    if status is None:
        raise ValueError(value)
    reason = (rest + " " + reason) if comma else reason
    return status, reason.strip().lstrip(",;:-—–").strip()


def note_votes(note: Note) -> dict[str, tuple[Status | None, str]]:
    """Each name's vote in the note's ``votes:`` map ({} when there is none); NoteError
    naming the line for a map or a vote that cannot be read."""
    raw = note.meta.get("votes")
    if raw is None:
        return {}
    line = line_number(note, "votes")
    if not isinstance(raw, dict):
        raise NoteError(note.where, "votes: is not a map of name: vote lines", VOTES_FIX, line)
    found: dict[str, tuple[Status | None, str]] = {}
    for name, value in raw.items():
        try:
            found[str(name)] = read_vote(value)
        except ValueError:
            problem = f"votes: {name}: {str(value)[:40]!r} is not a vote"
            raise NoteError(note.where, problem, VOTES_FIX, line) from None
    return found


def is_candidate(rel: Path) -> bool:
    """Whether a vault-relative path could be a request note (not a temp file or a folder note)."""
    return (
        len(rel.parts) == 2
        and rel.parts[0] in REQUEST_FOLDERS
        and rel.suffix == ".md"
        and not rel.name.startswith((".", "_"))
    )


def is_conflict_copy(name: str) -> bool:
    return ".sync-conflict-" in name or "conflicted copy" in name.lower()


# Keys written once at creation: a human's change to them is never acted on.
OWNED_AT_CREATION = ("action", "created", "expires", "requested_by", "rule", "risk")


def explanation(ruling_matches: Sequence[Any], rule: str) -> str:
    """The sentence under a new note's details table saying which rules matched."""
    lines = [f"Matched rule `{m.rule}`: {m.explanation}" for m in ruling_matches if m.explanation]
    return "\n".join(lines) if lines else f"No rule matched; `{rule}` decided."


def same_value(note_value: Any, journal_value: Any) -> bool:
    if note_value in (None, "") or journal_value in (None, ""):
        return note_value in (None, "") and journal_value in (None, "")
    if isinstance(note_value, datetime) or isinstance(journal_value, datetime):
        try:
            return bool(parse_ts(note_value) == parse_ts(journal_value))
        except (TypeError, ValueError):
            return False
    return bool(note_value == journal_value)


class NoteState(StrEnum):
    """How a note's status relates to the journal's."""

    SAME = "same"
    DECISION = "decision"  # a human decided a pending request
    # The note shows an earlier step of this request's life, consistently with its own
    # history: hitl-vault has not written it yet, or an old copy came back from git or sync.
    STALE = "stale"
    ILLEGAL = "illegal"  # a move the request cannot make
    UNKNOWN = "unknown"  # not a status word at all


def note_state(note: Note, request: Request) -> tuple[NoteState, Status | None]:
    """How the note's status relates to the journal's, and the status its word means."""
    status = read_status_word(note.status_text)
    if status is None:
        return NoteState.UNKNOWN, None
    if status is request.status:
        return NoteState.SAME, status
    if request.status is Status.PENDING and status in (Status.APPROVED, Status.REJECTED):
        return NoteState.DECISION, status
    have = {history_key(line) for line in note.lines[note.fm_end + 1 :]}
    steps = [t for t in request.history if t.kind is Kind.TRANSITION]
    k = 0
    while k < len(steps) and steps[k].key in have:
        k += 1
    nearby = {steps[i].to_status for i in (k - 1, k) if 0 <= i < len(steps)}
    return (NoteState.STALE if status in nearby else NoteState.ILLEGAL), status


# Statuses whose params are those approved: the note shows exactly them.
_RAN_AS_APPROVED = frozenset({Status.APPROVED, Status.EXECUTING, Status.EXECUTED, Status.FAILED})


def _same_params(shown: Any, request: Request) -> bool:
    return isinstance(shown, dict) and json.dumps(shown, sort_keys=True, default=str) == json.dumps(
        dict(request.params), sort_keys=True
    )


def owned_fields(note: Note, request: Request) -> dict[str, Any]:
    wanted: dict[str, Any] = {"status": str(request.status)}
    for key in OWNED_AT_CREATION:
        wanted[key] = getattr(request, key)
    for key in ("decided_at", "executed_at", "result", "error"):
        if getattr(request, key) is not None:
            wanted[key] = getattr(request, key)
    for key in ("decided_by", "reason"):
        if getattr(request, key) and not note.meta.get(key):
            wanted[key] = getattr(request, key)
    if request.status in _RAN_AS_APPROVED and not _same_params(note.meta.get("params"), request):
        wanted["params"] = dict(request.params)  # approved with other params (``approve -p``)
    fields = {}
    for key, value in wanted.items():
        current = note.meta.get(key)
        if key == "status":
            if note.status_text != value:
                fields[key] = value
        elif key == "params" or not same_value(current, value):
            fields[key] = value
    return fields


def votes_differ(note: Note, request: Request) -> list[str]:
    """The names whose recorded vote the note's ``votes:`` map does not show, once the
    request is decided (while pending, the lines are the voters' to write)."""
    if request.status is Status.PENDING:
        return []
    try:
        shown = note_votes(note)
    except NoteError:
        shown = {}
    return [t.by for t in request.votes() if shown.get(t.by, (None, ""))[0] is not t.to_status]


def differs(note: Note, folder: str, request: Request) -> bool:
    if note.status_text != str(request.status) or folder != request.status.folder:
        return True
    if votes_differ(note, request):
        return True
    have = {history_key(line) for line in note.lines[note.fm_end + 1 :]}
    return any(t.key not in have for t in request.history)


def line_number(note: Note, key: str) -> int | None:
    index = note.key_line(key)
    return index + 1 if index is not None else None


# The folders a note moved into decides it, as a status typed there would.
_FOLDER_DECISION = {APPROVED_FOLDER: Status.APPROVED, REJECTED_FOLDER: Status.REJECTED}


@dataclass(frozen=True)
class Reading:
    """A note read against its request: what the human's save says, and what is wrong
    with it, for the code that journals it."""

    note: Note
    request: Request
    folder: str  # the folder the note is in
    state: NoteState
    status: Status | None  # what the note's status word means

    @classmethod
    def of(cls, note: Note, request: Request, folder: str) -> Reading:
        state, status = note_state(note, request)
        return cls(note, request, folder, state, status)

    @property
    def pending(self) -> bool:
        return self.request.status is Status.PENDING

    def tampered(self) -> list[str]:
        """The keys written once at creation that the note shows changed."""
        return [
            key
            for key in OWNED_AT_CREATION
            if not same_value(self.note.meta.get(key), getattr(self.request, key))
        ]

    def decision(self) -> tuple[Status | None, str | None]:
        """The decision the note makes (its status, or the folder it was moved into) and
        the problem that keeps it, or the note, from counting (one of them is None)."""
        decided, moved_wrong = self._by_folder()
        problem = self._status_problem() or self._tampered_problem() or moved_wrong
        return (None, problem) if problem else (decided, None)

    def _tampered_problem(self) -> str | None:
        tampered = self.tampered()
        if not tampered:
            return None
        them = "it" if len(tampered) == 1 else "them"
        return (
            f"{self.note.where}: {', '.join(tampered)} changed; only hitl-vault sets {them} "
            "(it will be set back; edit params, status, reason or decided_by instead)"
        )

    def _by_folder(self) -> tuple[Status | None, str | None]:
        decided = self.status if self.state is NoteState.DECISION else None
        by_folder = _FOLDER_DECISION.get(self.folder)
        if not self.pending or by_folder is None:
            return decided, None
        if decided is None and self.state is NoteState.SAME:
            return by_folder, None
        if decided is not None and decided is not by_folder:
            return None, (
                f"{self.note.where}: says {decided} but was moved into {self.folder}/; "
                "make the status and the folder agree"
            )
        return decided, None

    def _status_problem(self) -> str | None:
        note = self.note
        if self.state is NoteState.UNKNOWN:
            return str(
                NoteError(
                    note.where,
                    f'unknown status "{note.status_text}"',
                    "use approved or rejected",
                    line_number(note, "status"),
                )
            )
        if self.state is NoteState.ILLEGAL:
            return (
                f"{note.where}: status {note.status_text!r} ignored: the request is "
                f"{self.request.status} and cannot become {self.status} (it will be set back)"
            )
        return None
