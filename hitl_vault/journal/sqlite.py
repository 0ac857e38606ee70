"""The journal: what has happened, durably, in SQLite under ``.hitl/``.

The journal, not any note, decides what has already happened. Every move is a
single ``BEGIN IMMEDIATE`` transaction that checks the current status, so when
two processes see the same human decision only one records it, and a stale
``status: approved`` brought back by a sync tool finds nothing left to do.
Entries form a SHA-256 hash chain, so an edited or deleted entry is detected.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import (
    DuplicateError,
    IllegalTransitionError,
    JournalDamagedError,
    JournalUnavailableError,
    NotRetryableError,
    RequestNotFoundError,
)
from ..model import LEGAL_MOVES, RETRYABLE, Kind, Request, Status, Transition
from ..params import params_sha
from ..store import request_flag
from ..times import format_ts
from .chain import GENESIS, entry_hash
from .replay import replay
from .sqlite_book import Bookkeeping
from .sqlite_outbox import Outbox
from .sqlite_read import JournalReader

SCHEMA = resources.files("hitl_vault.journal").joinpath("schema.sql").read_text(encoding="utf-8")

# Who records an entry: the real user id of this process, whatever name it claims.
_UID: int | None = os.getuid() if hasattr(os, "getuid") else None
# Columns added since the first release: a journal made before them gets them on open.
_ADDED_COLUMNS = (
    ("entries", "uid", "INTEGER"),
    ("requests", "pinned", "TEXT"),
    ("requests", "params_created", "TEXT"),
    ("requests", "context", "TEXT"),
    ("requests", "escalate_at", "TEXT"),
    ("requests", "retry_of", "TEXT"),
)
# Fields a transition may set on the request row.
_SETTABLE = frozenset(
    {"decided_by", "reason", "decided_at", "executed_at", "result", "error", "params"}
)


class _Connection(sqlite3.Connection):
    """A connection whose statements raise our typed errors, so no ``sqlite3`` error leaves
    the journal modules: :class:`JournalDamagedError` for a damaged file,
    :class:`JournalUnavailableError` for a lock held too long, a full disk, an I/O error.
    (An ``IntegrityError`` is left to the statement that expects one.)"""

    journal_path = Path()

    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        try:
            return super().execute(sql, parameters)
        except sqlite3.OperationalError as e:
            raise JournalUnavailableError(self.journal_path, str(e)) from e
        except sqlite3.DatabaseError as e:
            if type(e) is sqlite3.DatabaseError:  # not a lock, a full disk or a bad query
                raise JournalDamagedError(self.journal_path, str(e)) from None
            raise


class Journal(Bookkeeping, Outbox, JournalReader):
    """One SQLite database in WAL mode with durable (``synchronous=FULL``) commits.

    Safe to share between threads of one process; any number of processes may
    open the same journal.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        if not path.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self._lock = threading.RLock()
        self._batching = False
        try:
            self._db = sqlite3.connect(
                path,
                isolation_level=None,
                check_same_thread=False,
                timeout=30.0,
                factory=_Connection,
            )
        except sqlite3.OperationalError as e:  # cannot open it: a folder in its place, say
            raise JournalUnavailableError(path, str(e)) from e
        self._db.journal_path = path
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._write() as db:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            for table, column, kind in _ADDED_COLUMNS:
                have = {row[1] for row in db.execute(f"PRAGMA table_info({table})").fetchall()}
                if column not in have:  # a journal made before this column
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            # After the columns: a journal made before retry_of has no such column above.
            db.execute("CREATE INDEX IF NOT EXISTS requests_retry_of ON requests (retry_of)")

    @property
    def batching(self) -> bool:
        """Inside :meth:`batch`, before its commit."""
        return self._batching

    def wait_for_lock(self, seconds: float) -> None:
        """How long a write waits for another process's write before it fails (30 s at first)."""
        with self._lock:
            self._db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def _write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic write: a transaction, or a savepoint inside :meth:`batch`.

        ``durable=False`` is for what can be found again from the notes (where a
        note is, its digest, a flag): the commit skips its fsync and becomes
        durable with the next durable one. A power cut may lose it, never reorder it.
        """
        with self._lock:
            begin, commit, undo = (
                ("SAVEPOINT w", "RELEASE w", "ROLLBACK TO w; RELEASE w")
                if self._batching
                else ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
            )
            relaxed = not durable and not self._batching
            if relaxed:
                self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute(begin)
                try:
                    yield self._db
                except BaseException:
                    for statement in undo.split("; "):
                        self._db.execute(statement)
                    raise
                try:
                    self._db.execute(commit)
                except BaseException:  # a failed COMMIT may leave the transaction open
                    if not self._batching:  # (a savepoint's batch undoes itself, whole)
                        with contextlib.suppress(sqlite3.Error, JournalUnavailableError):
                            self._db.execute("ROLLBACK")
                    raise
            finally:
                if relaxed:
                    self._db.execute("PRAGMA synchronous=FULL")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many writes, one durable commit: for a burst of decisions seen at once.

        Each write inside stays atomic on its own (a savepoint); none is durable,
        or visible to other processes, until the batch ends. Other threads wait.
        """
        with self._lock:
            if self._batching:
                yield
                return
            self._db.execute("BEGIN IMMEDIATE")
            self._batching = True
            try:
                yield
            except BaseException:
                self._batching = False
                self._db.execute("ROLLBACK")
                raise
            self._batching = False
            try:
                self._db.execute("COMMIT")
            except BaseException:  # a failed COMMIT may leave the transaction open
                with contextlib.suppress(sqlite3.Error, JournalUnavailableError):
                    self._db.execute("ROLLBACK")
                raise

    # --- writing -------------------------------------------------------------

    def _append(
        self, db: sqlite3.Connection, request_id: str, t: Transition, sha: str | None
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
        db.execute(
            "INSERT INTO entries (request_id, at, kind, from_status, to_status, by, reason, "
            "details, params_sha, prev_hash, hash, uid) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            (*fields, prev, entry_hash(prev, fields, _UID), _UID),
        )

    def create(
        self,
        request: Request,
        path: str | None,
        source: str | None = None,
        pinned: Mapping[str, Any] | None = None,
    ) -> None:
        """Record a new request and its first history entry (``created → status``).

        ``source`` identifies the Inbox proposal it came from, recorded in the
        same transaction, so a proposal is never turned into two requests.
        ``pinned``: what the submitter's Python rules required (see :meth:`pinned`).
        A request with ``retry_of`` gets a ``retried as`` entry on that request in the
        same transaction (:class:`NotRetryableError` if it was retried already).
        Raises :class:`DuplicateError` when the id or the proposal is recorded already.
        """
        sha = params_sha(request.params)
        try:
            self._create(request, path, source, pinned, sha)
        except sqlite3.IntegrityError:
            if source is not None and self.proposal(source) is not None:
                raise DuplicateError(f"proposal {source}") from None
            raise DuplicateError(f"request {request.id}") from None

    def _create(
        self,
        request: Request,
        path: str | None,
        source: str | None,
        pinned: Mapping[str, Any] | None,
        sha: str,
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
                "escalate_at, retry_of) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
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
                ),
            )
            for t in request.history:
                self._append(db, request.id, t, sha)

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
        link = next((t for t in request.history if t.kind is Kind.LINKED), None)
        by = link.by if link is not None else request.requested_by
        at = link.at if link is not None else request.created
        t = Transition(at, status, status, by, "", (f"retried as {request.id}",), Kind.LINKED)
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
    ) -> Transition | None:
        """Move a request to ``to`` if it is still in ``expect`` (default: any legal source).

        Returns the recorded transition, or None when the request had already
        moved on (another process got there first). Raises
        :class:`IllegalTransitionError` if the move is illegal from where it is.
        """
        fields = dict(fields or {})
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} in a transition")
        with self._write() as db:
            row = db.execute(
                "SELECT status, params FROM requests WHERE id = ?", (request_id,)
            ).fetchone()
            if row is None:
                raise RequestNotFoundError(request_id)
            current = Status(row[0])
            if to is Status.APPROVED and "params" not in fields:  # an approval names its params
                fields["params"] = json.loads(row[1])
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
            self._append(db, request_id, t, sha)
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
        self, request_id: str, *, at: datetime, by: str, approve: bool, reason: str, count: str
    ) -> Transition | None:
        """One person's vote on a pending request (``count``: ``1 of 2``); the status stays
        until :meth:`transition` says otherwise. None when it is no longer pending."""
        to = Status.APPROVED if approve else Status.REJECTED
        t = Transition(at, Status.PENDING, to, by, reason, (count,), kind=Kind.VOTED)
        return self._pending_entry(request_id, t)

    def record_escalation(self, request_id: str, at: datetime, to: str) -> Transition | None:
        """Nobody decided in time: ``to`` (names) may decide too. None when no longer pending
        (or escalated already)."""
        t = Transition(at, Status.PENDING, Status.PENDING, "hitl-vault", "", (to,), Kind.ESCALATED)
        return self._pending_entry(request_id, t, "AND escalate_at IS NOT NULL")

    def _pending_entry(self, request_id: str, t: Transition, where: str = "") -> Transition | None:
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
            self._append(db, request_id, t, None)
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

    def unproven(
        self, request_id: str, params: Mapping[str, Any], status: Status = Status.APPROVED
    ) -> str | None:
        """Why the entries do not prove that ``params`` were approved and the request is at
        ``status`` now; None when they do. Checked right before an action runs."""
        proof = replay(self.entries(request_id))
        row = self.status_of(request_id)
        if proof.problems:
            return "; ".join(proof.problems[:3])
        if proof.status is not status or row is not status:
            return f"the journal's row says {row} but its entries end at {proof.status}"
        if not proof.approved:
            return "its entries hold no approval"
        if proof.params_sha != params_sha(params):
            return "the params to run are not the params that were approved"
        return None

    # --- reading -------------------------------------------------------------
