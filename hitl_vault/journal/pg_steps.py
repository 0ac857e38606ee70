"""Recording what happens to requests in the PostgreSQL journal: each step one transaction
that checks where the request is, appended to the hash chain.

Every write that appends an entry first locks the one ``head`` row (``SELECT ... FOR
UPDATE``), then reads where the request is: writers on any host follow one another, so
when two see the same human decision only one records it, and positions are given out in
commit order with no gap (a reader of the feed never skips one that commits later) and the
chain never forks. The lock is taken before anything else in the transaction, so two
writers never wait on each other in a circle.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ..chain import RECORDER_ACTOR, RECORDER_UID, entry_hash
from ..errors import (
    DuplicateError,
    IllegalTransitionError,
    NotRetryableError,
    RequestNotFoundError,
    ServerUnavailableError,
)
from ..model import LEGAL_MOVES, RETRYABLE, Kind, Request, Status, Transition
from ..params import params_sha
from ..store import request_flag, retry_link, settable
from ..times import format_ts
from .pg_db import Conflict, PgDatabase
from .sqlite_db import json_object

# The error a takeover closes another term's claim with (daemon/workers.py INTERRUPTED).
INTERRUPTED_PREFIX = "interrupted"
Tx = Any  # the connection a write hands out (psycopg's; only pg_db names the driver)


@dataclass
class Head:
    """The newest entry's position and hash, as this transaction (which locked them) sees
    them: advanced by each :func:`append`."""

    seq: int
    hash: str


def lock_head(db: Tx) -> Head:
    """Lock the head row for this transaction: the newest entry's position and hash."""
    seq, hash_ = db.execute("SELECT seq, hash FROM head FOR UPDATE").fetchone()
    return Head(int(seq), str(hash_))


def append(
    db: Tx,
    head: Head,
    request_id: str,
    t: Transition,
    sha: str | None,
    credential: str | None = None,
) -> int:
    """Add ``t`` after the newest entry (``head``, locked by this transaction), moving the
    head row in the same statement; its position. ``credential``: the one the step was asked
    or decided with through the service (chain version 3)."""
    fields = (
        request_id,
        format_ts(t.at),
        t.kind,
        t.from_status,
        t.to_status,
        t.by,
        t.reason,
        json.dumps(list(t.details), ensure_ascii=False),
        sha,
    )
    digest = entry_hash(head.hash, fields, RECORDER_UID, RECORDER_ACTOR, credential)
    db.execute(
        "WITH added AS (INSERT INTO entries (seq, request_id, at, kind, from_status, to_status, "
        "by, reason, details, params_sha, prev_hash, hash, uid, actor, credential) VALUES (%s,"
        "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) RETURNING seq, hash) "
        "UPDATE head SET seq = added.seq, hash = added.hash FROM added",
        (head.seq + 1, *fields, head.hash, digest, RECORDER_UID, RECORDER_ACTOR, credential),
    )
    head.seq, head.hash = head.seq + 1, digest
    return head.seq


def _status(db: Tx, request_id: str, where: str = "") -> Status | None:
    row = db.execute(f"SELECT status FROM requests WHERE id = %s {where}", (request_id,)).fetchone()
    return None if row is None else Status(row[0])


class PgSteps:
    """The writes of :class:`~hitl_vault.journal.pg.PgJournal` on requests and their
    entries, on the database it is handed."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._write = db.write

    def create(
        self,
        request: Request,
        path: str | None,
        source: str | None = None,
        pinned: Mapping[str, Any] | None = None,
        *,
        credential: str | None = None,
        note_sha: str | None = None,
    ) -> None:
        """Record a new request and its history in one transaction, with the Inbox proposal
        it came from and the ``retried as`` entry of the request it retries (``credential``:
        the one it was asked with through the service, kept with its entries).
        :class:`DuplicateError` when the id or the proposal is recorded already."""
        try:
            sha = params_sha(request.params)
            self._create(request, path, source, pinned, sha, credential, note_sha)
        except Conflict as e:
            if e.constraint.startswith("proposals"):
                raise DuplicateError(f"proposal {source}") from None
            raise DuplicateError(f"request {request.id}") from None

    def _create(
        self,
        request: Request,
        path: str | None,
        source: str | None,
        pinned: Mapping[str, Any] | None,
        sha: str,
        credential: str | None = None,
        note_sha: str | None = None,
    ) -> None:
        r = request
        with self._write() as db:
            head = lock_head(db)
            if source is not None:
                db.execute(
                    "INSERT INTO proposals (key, request_id) VALUES (%s, %s)", (source, r.id)
                )
            if r.retry_of is not None:
                self._link_retry(db, head, r)
            params = json.dumps(dict(r.params), ensure_ascii=False)
            db.execute(
                "INSERT INTO requests (id, action, status, summary, risk, rule, requested_by, "
                "created, expires, params, params_sha_created, params_sha_approved, decided_by, "
                "reason, decided_at, path, carried_by_requester, pinned, params_created, context, "
                "escalate_at, retry_of, proposal, credential, session, client, note_sha) "
                f"VALUES ({', '.join(['%s'] * 27)})",
                (r.id, r.action, r.status, r.summary, r.risk, r.rule, r.requested_by,
                 format_ts(r.created), format_ts(r.expires) if r.expires else None, params, sha,
                 sha if r.status is Status.APPROVED else None, r.decided_by, r.reason,
                 format_ts(r.decided_at) if r.decided_at else None, path,
                 int(r.carried_by_requester), json.dumps(dict(pinned)) if pinned else None,
                 params, r.context, format_ts(r.escalate_at) if r.escalate_at else None,
                 r.retry_of,
                 json.dumps(r.pitch.as_json(), ensure_ascii=False) if r.pitch else None,
                 r.credential, r.session, r.client, note_sha),
            )  # fmt: skip
            for t in r.history:
                append(db, head, r.id, t, sha, credential)

    def _link_retry(self, db: Tx, head: Head, request: Request) -> None:
        """The ``retried as`` entry on the request ``request`` retries: at most one retry each,
        and only of a failed or timed-out request."""
        old = request.retry_of
        assert old is not None
        status = _status(db, old)
        if status is None:
            raise RequestNotFoundError(old)
        taken = db.execute("SELECT id FROM requests WHERE retry_of = %s", (old,)).fetchone()
        if taken is not None or status not in RETRYABLE:
            raise NotRetryableError(old, status, taken[0] if taken else None)
        append(db, head, old, retry_link(request, status), None)

    def transition(
        self,
        request_id: str,
        to: Status,
        *,
        at: datetime,
        by: str,
        reason: str = "",
        details: tuple[str, ...] = (),
        expect: Iterable[Status] | None = None,
        fields: Mapping[str, Any] | None = None,
        credential: str | None = None,
    ) -> Transition | None:
        """Move a request to ``to`` if it is still in ``expect`` (default: any legal source):
        the step recorded, or None when it had moved on already (another host got there
        first). :class:`IllegalTransitionError` if the move is illegal from where it is."""
        fields = settable(fields)
        expected = None if expect is None else set(expect)
        claim = to is Status.EXECUTING and expected == {Status.APPROVED}
        outcome = to in (Status.EXECUTED, Status.FAILED) and expected == {Status.EXECUTING}
        term = self._db.owner_term
        if claim and term is not None:  # the leader's claim carries its term
            fields["claimed_term"] = term
        with self._db.write(outcome_of=request_id if outcome else None) as db:
            head = lock_head(db)
            row = db.execute(
                "SELECT status, params FROM requests WHERE id = %s"
                + (" FOR UPDATE SKIP LOCKED" if claim else ""),
                (request_id,),
            ).fetchone()
            if row is None and claim and _status(db, request_id) is not None:
                raise ServerUnavailableError(  # written by another transaction: claimed later
                    self._db.where, f"request {request_id} is being written by another host"
                )
            if row is None:
                raise RequestNotFoundError(request_id)
            ((current, params),) = self._db.converted(
                [row],
                lambda r: (Status(r[0]), json_object(r[1], f"the params of {request_id}")),
            )
            if to is Status.APPROVED and "params" not in fields:  # an approval names its params
                fields["params"] = params
            if expected is not None and current not in expected:
                return None
            if outcome and term is not None and not _closes(db, request_id, term, fields):
                return None  # another term claimed it: only that term records how it went
            if to not in LEGAL_MOVES[current]:
                if expect is None and current.is_final:
                    return None
                raise IllegalTransitionError(request_id, current, to)
            t = Transition(at, current, to, by, reason, details)
            sha = None
            if "params" in fields:
                sha = params_sha(fields["params"])
                fields["params"] = json.dumps(fields["params"], ensure_ascii=False)
                fields["params_sha_approved"] = sha
            for key, value in list(fields.items()):
                if isinstance(value, datetime):
                    fields[key] = format_ts(value)
            assigns = "".join(f", {k} = %s" for k in fields)
            db.execute(
                f"UPDATE requests SET status = %s, note_sha = NULL{assigns} WHERE id = %s",
                (str(to), *fields.values(), request_id),
            )
            append(db, head, request_id, t, sha, credential)
            # What was listed about the request itself (a step refused) is stale now.
            db.execute("DELETE FROM attention WHERE path = %s", (request_flag(request_id),))
            return t

    def record_edit(
        self, request_id: str, params: Mapping[str, Any], *, at: datetime, by: str, changes: str
    ) -> Transition | None:
        """Params edited in a pending note, recorded before anyone decides. None when the
        request is no longer pending."""
        sha = params_sha(params)
        with self._write() as db:
            head = lock_head(db)
            status = _status(db, request_id)
            if status is None:
                raise RequestNotFoundError(request_id)
            if status is not Status.PENDING:
                return None
            t = Transition(at, Status.PENDING, Status.PENDING, by, "", (changes,), kind=Kind.EDITED)
            db.execute(
                "UPDATE requests SET params = %s, note_sha = NULL WHERE id = %s",
                (json.dumps(dict(params), ensure_ascii=False), request_id),
            )
            append(db, head, request_id, t, sha)
            return t

    def record_vote(
        self,
        request_id: str,
        *,
        at: datetime,
        by: str,
        approve: bool,
        reason: str,
        count: str,
        details: tuple[str, ...] = (),
        credential: str | None = None,
    ) -> Transition | None:
        """One person's vote on a pending request; None when it is no longer pending."""
        to = Status.APPROVED if approve else Status.REJECTED
        t = Transition(at, Status.PENDING, to, by, reason, (count, *details), kind=Kind.VOTED)
        return self._pending_entry(request_id, t, credential=credential)

    def record_escalation(self, request_id: str, at: datetime, to: str) -> Transition | None:
        """Nobody decided in time: ``to`` (names) may decide too. None when no longer pending
        (or escalated already)."""
        t = Transition(at, Status.PENDING, Status.PENDING, "hitl-vault", "", (to,), Kind.ESCALATED)
        return self._pending_entry(request_id, t, "AND escalate_at IS NOT NULL")

    def _pending_entry(
        self, request_id: str, t: Transition, where: str = "", credential: str | None = None
    ) -> Transition | None:
        with self._write() as db:
            head = lock_head(db)
            if _status(db, request_id, where) is not Status.PENDING:
                return None
            db.execute(
                "UPDATE requests SET note_sha = NULL, escalate_at = CASE WHEN %s THEN NULL "
                "ELSE escalate_at END WHERE id = %s",
                (t.kind is Kind.ESCALATED, request_id),
            )
            append(db, head, request_id, t, None, credential)
            return t

    def record_ignored(self, request_id: str, at: datetime, details: tuple[str, ...]) -> Transition:
        """Record that a note edit was not acted on (the status it kept, and why)."""
        with self._write() as db:
            head = lock_head(db)
            status = _status(db, request_id)
            if status is None:
                raise RequestNotFoundError(request_id)
            t = Transition(at, status, status, "hitl-vault", "", details, kind=Kind.IGNORED)
            db.execute("UPDATE requests SET note_sha = NULL WHERE id = %s", (request_id,))
            append(db, head, request_id, t, None)
            return t

    def reclaim(self, request_id: str, at: datetime) -> Transition | None:
        """Claim an action an earlier term left executing for this thread's term (a
        compare-and-set of ``claimed_term``), journaled before it runs again; None when it is
        no longer executing."""
        term = self._db.owner_term
        assert term is not None, "only the leader's work re-claims"
        with self._db.write() as db:
            head = lock_head(db)
            row = db.execute(
                "SELECT claimed_term FROM requests WHERE id = %s AND status = %s FOR UPDATE",
                (request_id, str(Status.EXECUTING)),
            ).fetchone()
            if row is None or row[0] == term:
                return None
            details = ("running again, same key",)
            t = Transition(
                at, Status.EXECUTING, Status.EXECUTING, "executor", "", details, kind=Kind.RERUN
            )
            db.execute("UPDATE requests SET claimed_term = %s WHERE id = %s", (term, request_id))
            append(db, head, request_id, t, None)
            return t


def _closes(db: Tx, request_id: str, term: int, fields: Mapping[str, Any]) -> bool:
    """Whether ``term`` may record how the action of ``request_id`` went: it claimed it (or
    no term did), or it is the takeover calling another term's claim interrupted."""
    row = db.execute("SELECT claimed_term FROM requests WHERE id = %s", (request_id,)).fetchone()
    claimed = row[0] if row else None
    return (
        claimed is None
        or claimed == term
        or str(fields.get("error", "")).startswith(INTERRUPTED_PREFIX)
    )
