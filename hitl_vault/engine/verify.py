"""``hitl-vault verify``: the journal file, its hash chain, each request's entries replayed,
and every note against the journal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..chain import actor_host, recorded_by
from ..errors import NoteError
from ..identity import SERVICE_UID, false_proof, service_uid, service_uid_on
from ..journal.replay import replay
from ..model import Request, Status
from ..notes.file import Note, read_note
from ..notes.render import history_key, history_line, history_lines_written
from ..notes.state import read_status_word, same_value, votes_differ
from ..params import params_sha

if TYPE_CHECKING:
    from ..notes.reconcile import Reconciler
    from ..store import JournalStore

# Fields the note must show as the journal has them, once the request was decided
# (``reason`` stays the human's: a rule that refuses an approval gives its own in the journal).
_DECIDED = ("decided_by", "params")
_ALWAYS = ("decided_at", "executed_at", "result", "error")


def verify_vault(journal: JournalStore, notes: Reconciler) -> list[str]:
    """Every disagreement between the journal's chain, its entries and the notes."""
    problems = journal.verify_chain()
    for summary in journal.requests():
        request = journal.get(summary.id)
        assert request is not None
        problems += _replayed(journal, request)
        problems += _false_proofs(journal, request)
        path = notes.locate(request.id, str(request.path) if request.path else None)
        if path is None:
            problems.append(
                f"request {request.id}: its note is missing "
                "(`hitl-vault run --once` writes it again from the journal)"
            )
            continue
        where = notes.rel(path)
        try:
            note = read_note(path, where)
        except NoteError as e:
            problems.append(str(e))
            continue
        problems += _note_problems(where, note, request)
    return problems


def _replayed(journal: JournalStore, request: Request) -> list[str]:
    """The request's row held against a replay of its own entries."""
    proof = replay(journal.entries(request.id))
    found = [f"request {request.id}: {p}" for p in proof.problems]
    if proof.status is not request.status:
        found.append(
            f"request {request.id}: the journal's row says {request.status} but its entries "
            f"end at {proof.status} (the row was changed outside hitl-vault)"
        )
    if proof.params_sha != params_sha(request.params):
        found.append(
            f"request {request.id}: its params are not those its entries recorded "
            "(the row was changed outside hitl-vault)"
        )
    return found


def _false_proofs(journal: JournalStore, request: Request) -> list[str]:
    """Each decision or vote whose details claim a proof (``via api``) that no service
    process recorded: written by a process of another user, or on a host where no service
    runs, it counts as a claimed name only."""
    entries = journal.entries(request.id)
    if len(entries) != len(request.history):
        return []  # _replayed has said what is wrong with them
    found: list[str] = []
    for entry, step in zip(entries, request.history, strict=True):
        via = false_proof(journal, step, entry.uid, entry.actor)
        if via is None:
            continue
        who = recorded_by(entry.uid, entry.actor, entry.credential)
        host = actor_host(entry.actor)
        kept = SERVICE_UID if host is None else service_uid_on(host)
        service = service_uid(journal.setting(kept))
        on = "" if host is None else f" on {host}"
        service_is = (
            f"no service uid is kept{on} (hitl-vault serve keeps it)"
            if service is None
            else f"the service runs as uid {service}{on}"
        )
        found.append(
            f"request {request.id}: journal entry {entry.seq} claims a decision by {step.by} "
            f"via {via}, but {who} recorded it and {service_is}: it was not proven, and the "
            "rules count it as a claimed name only"
        )
    return found


def _note_problems(where: str, note: Note, request: Request) -> list[str]:
    problems: list[str] = []
    shown = read_status_word(note.status_text)
    if shown is not request.status:
        problems.append(
            f"{where}: status says {note.status_text!r} but the journal says "
            f"{request.status} (`hitl-vault run --once` brings the note up to date)"
        )
    # Decided by a human (not timed out or cancelled, where the note's names stay the human's).
    decided = request.status not in (Status.PENDING, Status.TIMED_OUT, Status.CANCELLED)
    for key in (*_ALWAYS, *(_DECIDED if decided else ())):
        journaled: Any = getattr(request, key)
        if key == "params" and request.status is Status.REJECTED:
            continue  # a refusal never ran anything: the note may keep an edit
        if key == "decided_by" and not journaled:
            continue  # decided by a rule: the note's decided_by is whatever the human typed
        if key in note.meta and not same_value(note.meta[key], journaled):
            problems.append(f"{where}: {key} differs from the journal's")
    problems += [
        f"{where}: votes: does not show {name}'s vote as the journal recorded it"
        for name in votes_differ(note, request)
    ]
    noted: dict[tuple[str, str], list[str]] = {}  # one time and move may stand twice
    for line in note.lines[note.fm_end + 1 :]:
        if history_key(line)[0]:
            noted.setdefault(history_key(line), []).append(line.strip())
    for t in request.history:
        lines = noted.get(t.key, [])
        if not lines:
            problems.append(f"{where}: history lacks journal entry {history_line(t)[2:]!r}")
            continue
        for written in history_lines_written(t):
            if written in lines:
                lines.remove(written)
                break
        else:
            problems.append(f"{where}: history line {lines.pop(0)!r} differs from the journal's")
    for lines in noted.values():
        problems += [f"{where}: history line {line!r} is not in the journal" for line in lines]
    return problems
