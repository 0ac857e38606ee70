"""What a request's own journal entries prove, replayed as a state machine: pure, no I/O.

The ``requests`` row is a summary that any SQL ``UPDATE`` can change; the
entries are a hash chain (:mod:`hitl_vault.chain`). Nothing runs unless the
entries themselves show a legal path ending in an approval that covered exactly
the params about to run, and ``verify`` holds every row against its replay.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..chain import Entry
from ..model import LEGAL_MOVES, Status
from ..params import params_sha


@dataclass(frozen=True)
class Replay:
    """Where the entries leave a request, and what its params hash must be there."""

    status: Status | None  # None: no entries at all
    params_sha: str | None  # the params hash its last params-setting entry recorded
    approved: bool  # an entry moved it to approved (by a human, the API or an allow rule)
    problems: tuple[str, ...]


def replay(entries: Sequence[Entry]) -> Replay:
    """Replay one request's entries in order; every step that does not follow is a problem."""
    status: Status | None = None
    sha: str | None = None
    approved = False
    problems: list[str] = []
    for e in entries:
        where = f"journal entry {e.seq}"
        if not e.intact():
            problems.append(f"{where}: its content does not match its hash (it was edited)")
        try:
            to = Status(e.to_status)
            frm = Status(e.from_status) if e.from_status else None
        except ValueError:
            problems.append(f"{where}: unknown status {e.to_status!r}")
            continue
        if e.kind in ("ignored", "linked", "rerun"):  # a note on the way; the status stays
            if to is not status:
                problems.append(f"{where}: keeps {to}, but the request was {status}")
            continue
        if e.kind in ("voted", "escalated"):  # a vote, or more people may vote: still pending
            if status is not Status.PENDING:
                problems.append(f"{where}: {e.kind} while the request was {status}")
            continue
        if e.kind == "edited":  # params edited in a pending note, recorded before a decision
            if status is not Status.PENDING or to is not Status.PENDING:
                problems.append(f"{where}: params edited while the request was {status}")
            sha = e.params_sha
            continue
        if frm is not status:
            was = status or "not yet created"
            problems.append(f"{where}: moves {frm or 'created'} → {to}, but it was {was}")
        elif status is not None and to not in LEGAL_MOVES[status]:
            problems.append(f"{where}: {status} → {to} is not a legal move")
        if status is None or to is Status.APPROVED:
            if e.params_sha is None:
                problems.append(f"{where}: records no params hash")
            sha = e.params_sha
        approved |= to is Status.APPROVED
        status = to
    return Replay(status, sha, approved, tuple(problems))


def unproven(
    entries: Sequence[Entry], row: Status | None, params: Mapping[str, Any], status: Status
) -> str | None:
    """Why a request's ``entries`` do not prove that ``params`` were approved and that it is
    at ``status`` now (its row says ``row``); None when they do. Every store answers
    :meth:`~hitl_vault.store.JournalStore.unproven` with this, right before an action runs."""
    proof = replay(entries)
    if proof.problems:
        return "; ".join(proof.problems[:3])
    if proof.status is not status or row is not status:
        return f"the journal's row says {row} but its entries end at {proof.status}"
    if not proof.approved:
        return "its entries hold no approval"
    if proof.params_sha != params_sha(params):
        return "the params to run are not the params that were approved"
    return None
