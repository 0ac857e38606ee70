"""Recording what happens to requests in the SQLite journal: each step one transaction that
checks where the request is, appended to the hash chain.

Every move is a single ``BEGIN IMMEDIATE`` transaction that checks the current status,
so when two processes see the same human decision only one records it, and a stale
``status: approved`` brought back by a sync tool finds nothing left to do.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from ..chain import GENESIS, RECORDER_ACTOR, RECORDER_UID, entry_hash
from ..errors import (
    DuplicateError,
    IllegalTransitionError,
    NotRetryableError,
    RequestNotFoundError,
)
from ..model import LEGAL_MOVES, RETRYABLE, Kind, Request, Status, Transition
from ..params import params_sha
from ..store import request_flag, retry_link, settable
from ..times import format_ts
from .sqlite_db import Database, json_object


class Steps:
    """The writes of :class:`~hitl_vault.journal.sqlite.Journal` on requests and their
    entries, on the database it is handed."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._write = db.write

    def _append(
        self,
        db: sqlite3.Connection,
        request_id: str,
        t: Transition,
        sha: str | None,
        credential: str | None = None,
    ) -> None:
        row = db.execute("SELECT hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
        prev = row[0] if row else GENESIS
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
        digest = entry_hash(prev, fields, RECORDER_UID, RECORDER_ACTOR, credential)
        db.execute(
            "INSERT INTO entries (request_id, at, kind, from_status, to_status, by, reason, "
            "details, params_sha, prev_hash, hash, uid, actor, credential) VALUES "
            "(?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (*fields, prev, digest, RECORDER_UID, RECORDER_ACTOR, credential),
        )

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
        """Record a new request and its first history entry (``created → status``).

        ``source`` identifies the Inbox proposal it came from, recorded in the
        same transaction, so a proposal is never turned into two requests.
        ``pinned``: what the submitter's Python rules required (see :meth:`pinned`).
        ``credential``: the one it was asked with through the service, kept with its entries.
        A request with ``retry_of`` gets a ``retried as`` entry on that request in the
        same transaction (:class:`NotRetryableError` if it was retried already).
        Raises :class:`DuplicateError` when the id or the proposal is recorded already.
        """
        sha = params_sha(request.params)
        try:
            self._create(request, path, source, pinned, sha, credential, note_sha)
        except sqlite3.IntegrityError:
            known = source is not None and self._db.read_one(
                "SELECT 1 FROM proposals WHERE key = ?", (source,)
            )
            if known:
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
        with self._write() as db:
            if source is not None:
                db.execute(
                    "INSERT INTO proposals (key, request_id) VALUES (?, ?)", (source, request.id)
                )
            if request.retry_of is not None:
                self._link_retry(db, request)
            db.execute(
                "INSERT INTO requests (id, action, status, summary, risk, rule, requested_by, "
                "created, expires, params, params_sha_created, params_sha_approved, decided_by, "
                "reason, decided_at, path, carried_by_requester, pinned, params_created, context, "
                "escalate_at, retry_of, proposal, credential, session, client, note_sha) "
                f"VALUES ({', '.join('?' * 27)})",
                (
                    request.id,
                    request.action,
                    request.status,
                    request.summary,
                    request.risk,
                    request.rule,
                    request.requested_by,
                    format_ts(request.created),
                    format_ts(request.expires) if request.expires else None,
                    json.dumps(dict(request.params), ensure_ascii=False),
                    sha,
                    sha if request.status is Status.APPROVED else None,
                    request.decided_by,
                    request.reason,
                    format_ts(request.decided_at) if request.decided_at else None,
                    path,
                    int(request.carried_by_requester),
                    json.dumps(dict(pinned)) if pinned else None,
                    json.dumps(dict(request.params), ensure_ascii=False),
                    request.context,
                    format_ts(request.escalate_at) if request.escalate_at else None,
                    request.retry_of,
                    json.dumps(request.pitch.as_json(), ensure_ascii=False)
                    if request.pitch
                    else None,
                    request.credential,
                    request.session,
                    request.client,
                    note_sha,
                ),
            )
            for t in request.history:
                self._append(db, request.id, t, sha, credential)

    def _link_retry(self, db: sqlite3.Connection, request: Request) -> None:
        """The ``retried as`` entry on the request ``request`` retries: at most one retry each,
        and only of a failed or timed-out request."""
        old = request.retry_of
        assert old is not None
        row = db.execute("SELECT status FROM requests WHERE id = ?", (old,)).fetchone()
        if row is None:
            raise RequestNotFoundError(old)
        taken = db.execute("SELECT id FROM requests WHERE retry_of = ?", (old,)).fetchone()
        status = Status(row[0])
        if taken is not None or status not in RETRYABLE:
            raise NotRetryableError(old, status, taken[0] if taken else None)
        t = retry_link(request, status)
        self._append(db, old, t, None)

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
        """Move a request to ``to`` if it is still in ``expect`` (default: any legal source);
        ``credential``: the one it was asked or decided with through the service.

        Returns the recorded transition, or None when the request had already
        moved on (another process got there first). Raises
        :class:`IllegalTransitionError` if the move is illegal from where it is.
        """
        fields = settable(fields)
        with self._write() as db:
            row = db.execute(
                "SELECT status, params FROM requests WHERE id = ?", (request_id,)
            ).fetchone()
            if row is None:
                raise RequestNotFoundError(request_id)
            ((current, params),) = self._db.converted(
                [row],
                lambda r: (Status(r[0]), json_object(r[1], f"the params of {request_id}")),
            )
            if to is Status.APPROVED and "params" not in fields:  # an approval names its params
                fields["params"] = params
            if expect is not None and current not in set(expect):
                return None
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
            assigns = "".join(f", {k} = ?" for k in fields)
            db.execute(
                f"UPDATE requests SET status = ?, note_sha = NULL{assigns} WHERE id = ?",
                (to, *fields.values(), request_id),
            )
            self._append(db, request_id, t, sha, credential)
            # What was listed about the request itself (a step refused) is stale now.
            db.execute("DELETE FROM attention WHERE path = ?", (request_flag(request_id),))
            return t

    def record_edit(
        self, request_id: str, params: Mapping[str, Any], *, at: datetime, by: str, changes: str
    ) -> Transition | None:
        """Params edited in a pending note, recorded before anyone decides: they are what an
        approval then runs. None when the request is no longer pending."""
        sha = params_sha(params)
        with self._write() as db:
            row = db.execute("SELECT status FROM requests WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                raise RequestNotFoundError(request_id)
            if Status(row[0]) is not Status.PENDING:
                return None
            t = Transition(at, Status.PENDING, Status.PENDING, by, "", (changes,), kind=Kind.EDITED)
            db.execute(
                "UPDATE requests SET params = ?, note_sha = NULL WHERE id = ?",
                (json.dumps(dict(params), ensure_ascii=False), request_id),
            )
            self._append(db, request_id, t, sha)
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
        """One person's vote on a pending request (``count``: ``1 of 2``); the status stays
        until :meth:`transition` says otherwise. None when it is no longer pending."""
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
            row = db.execute(
                f"SELECT status FROM requests WHERE id = ? {where}", (request_id,)
            ).fetchone()
            if row is None or Status(row[0]) is not Status.PENDING:
                return None
            db.execute(
                "UPDATE requests SET note_sha = NULL, escalate_at = CASE WHEN ? THEN NULL "
                "ELSE escalate_at END WHERE id = ?",
                (t.kind is Kind.ESCALATED, request_id),
            )
            self._append(db, request_id, t, None, credential)
            return t

    def record_ignored(self, request_id: str, at: datetime, details: tuple[str, ...]) -> Transition:
        """Record that a note edit was not acted on (the status it kept, and why)."""
        with self._write() as db:
            row = db.execute("SELECT status FROM requests WHERE id = ?", (request_id,)).fetchone()
            if row is None:
                raise RequestNotFoundError(request_id)
            status = Status(row[0])
            t = Transition(at, status, status, "hitl-vault", "", details, kind=Kind.IGNORED)
            db.execute("UPDATE requests SET note_sha = NULL WHERE id = ?", (request_id,))
            self._append(db, request_id, t, None)
            return t
