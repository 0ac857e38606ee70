"""Reading the journal: requests, their histories, what needs attention, the hash chain."""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import RequestNotFoundError
from ..model import Kind, Request, Risk, Status, Transition
from ..store import Attention
from ..times import format_ts, parse_ts
from .chain import Entry, chain_problems

REQUEST_COLUMNS = (
    "id, action, status, summary, risk, rule, requested_by, created, expires, params, "
    "decided_by, reason, decided_at, executed_at, result, error, path, carried_by_requester, "
    "context, escalate_at, retry_of, "
    "(SELECT r.id FROM requests r WHERE r.retry_of = requests.id)"
)


def _transition(
    at: str, kind: str, frm: str | None, to: str, by: str, reason: str, details: str
) -> Transition:
    """A Transition from an ``entries`` row."""
    return Transition(
        parse_ts(at), Status(frm) if frm else None, Status(to), by, reason,
        tuple(json.loads(details)), Kind(kind),
    )  # fmt: skip


class JournalReader:
    """The queries; :class:`~hitl_vault.journal.sqlite.Journal` adds the writes."""

    path: Path
    _db: sqlite3.Connection
    _lock: threading.RLock

    def _request(self, row: tuple[Any, ...], history: tuple[Transition, ...] = ()) -> Request:
        (rid, action, status, summary, risk, rule, by, created, expires, params) = row[:10]
        (decided_by, reason, decided_at, executed_at, result, error, path, requester) = row[10:18]
        context, escalate_at, retry_of, retried_as = row[18:22]
        return Request(
            id=rid,
            status=Status(status),
            action=action,
            summary=summary,
            risk=Risk(risk),
            rule=rule,
            requested_by=by,
            created=parse_ts(created),
            expires=parse_ts(expires) if expires else None,
            params=json.loads(params),
            decided_by=decided_by,
            reason=reason,
            decided_at=parse_ts(decided_at) if decided_at else None,
            executed_at=parse_ts(executed_at) if executed_at else None,
            result=result,
            error=error,
            path=Path(path) if path else None,
            carried_by_requester=bool(requester),
            context=context,
            escalate_at=parse_ts(escalate_at) if escalate_at else None,
            retry_of=retry_of,
            retried_as=retried_as,
            history=history,
        )

    def get(self, request_id: str, *, history: bool = True) -> Request | None:
        """One request (with its history unless ``history=False``), or None."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?",
                (request_id,),
            ).fetchone()
            if row is None:
                return None
            return self._request(row, tuple(self.history(request_id)) if history else ())

    def created_params(self, request_id: str) -> dict[str, Any]:
        """The params as they were asked for, before any edit (for requests journaled before
        they were kept apart, the current ones: such journals recorded no edit while pending)."""
        with self._lock:
            row = self._db.execute(
                "SELECT coalesce(params_created, params) FROM requests WHERE id = ?",
                (request_id,),
            ).fetchone()
        if row is None:
            raise RequestNotFoundError(request_id)
        created: dict[str, Any] = json.loads(row[0])
        return created

    def pinned(self, request_id: str) -> dict[str, Any]:
        """What the submitter's Python rules required: ``approvers`` (names, or absent),
        ``fixed`` (rules that forbid edits), ``rules`` (their names); {} when none spoke."""
        with self._lock:
            row = self._db.execute(
                "SELECT pinned FROM requests WHERE id = ?", (request_id,)
            ).fetchone()
        return dict(json.loads(row[0])) if row and row[0] else {}

    def decision_uid(self, request_id: str) -> int | None:
        """The real user id of the process that recorded the request's decision, if known."""
        with self._lock:
            row = self._db.execute(
                "SELECT uid FROM entries WHERE request_id = ? AND kind = 'transition' "
                "AND to_status IN ('approved', 'rejected', 'cancelled') ORDER BY seq LIMIT 1",
                (request_id,),
            ).fetchone()
        return row[0] if row else None

    def last_change(self, request_id: str) -> tuple[str | None, datetime] | None:
        """Where a request's note was last known to be, and when its last entry was made."""
        with self._lock:
            row = self._db.execute(
                "SELECT r.path, (SELECT at FROM entries WHERE request_id = r.id "
                "ORDER BY seq DESC LIMIT 1) FROM requests r WHERE r.id = ?",
                (request_id,),
            ).fetchone()
        return (row[0], parse_ts(row[1])) if row else None

    def status_of(self, request_id: str) -> Status | None:
        with self._lock:
            row = self._db.execute(
                "SELECT status FROM requests WHERE id = ?", (request_id,)
            ).fetchone()
        return Status(row[0]) if row else None

    def requests(self, status: Status | None = None, limit: int | None = None) -> list[Request]:
        """Requests, newest first (history left out: use :meth:`get` for one)."""
        query = f"SELECT {REQUEST_COLUMNS} FROM requests"
        args: list[Any] = []
        if status is not None:
            query += " WHERE status = ?"
            args.append(str(status))
        query += " ORDER BY created DESC, rowid DESC"  # rowid: the order they were journaled
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        with self._lock:
            return [self._request(row) for row in self._db.execute(query, args).fetchall()]

    def pending_by_expiry(self, limit: int) -> list[Request]:
        """The pending requests that expire first (those that never expire last)."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {REQUEST_COLUMNS} FROM requests WHERE status = 'pending' "
                "ORDER BY expires IS NULL, expires, id LIMIT ?",
                (limit,),
            ).fetchall()
        return [self._request(row) for row in rows]

    def ids(self, status: Status | None = None) -> list[str]:
        with self._lock:
            if status is None:
                rows = self._db.execute("SELECT id FROM requests").fetchall()
            else:
                rows = self._db.execute(
                    "SELECT id FROM requests WHERE status = ?", (str(status),)
                ).fetchall()
        return [r[0] for r in rows]

    def paths(self) -> dict[str, str]:
        """Every request's last known note path (relative to the vault)."""
        with self._lock:
            rows = self._db.execute("SELECT id, path FROM requests WHERE path IS NOT NULL")
            return {rid: path for rid, path in rows.fetchall()}

    def history(self, request_id: str) -> list[Transition]:
        with self._lock:
            rows = self._db.execute(
                "SELECT at, kind, from_status, to_status, by, reason, details FROM entries "
                "WHERE request_id = ? ORDER BY seq",
                (request_id,),
            ).fetchall()
        return [_transition(*row) for row in rows]

    def expiring(self, before: datetime | None = None) -> list[tuple[str, datetime]]:
        """Pending requests with an expiry, soonest first (only those due by ``before``)."""
        query = "SELECT id, expires FROM requests WHERE status = 'pending' AND expires IS NOT NULL"
        args: list[Any] = []
        if before is not None:
            query += " AND expires <= ?"
            args.append(format_ts(before))
        query += " ORDER BY expires"
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [(rid, parse_ts(exp)) for rid, exp in rows]

    def escalating(self, before: datetime) -> list[str]:
        """Pending requests whose escalation is due at ``before``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM requests WHERE status = 'pending' AND escalate_at IS NOT NULL "
                "AND escalate_at <= ? ORDER BY escalate_at",
                (format_ts(before),),
            ).fetchall()
        return [row[0] for row in rows]

    def next_escalation(self) -> datetime | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(escalate_at) FROM requests WHERE status = 'pending'"
            ).fetchone()
        return parse_ts(row[0]) if row and row[0] else None

    def next_expiry(self) -> datetime | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(expires) FROM requests WHERE status = 'pending'"
            ).fetchone()
        return parse_ts(row[0]) if row and row[0] else None

    def counts(self) -> dict[Status, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM requests GROUP BY status")
            found = {Status(s): n for s, n in rows.fetchall()}
        return {s: found.get(s, 0) for s in Status}

    def last_seq(self) -> int:
        """The number of the newest entry (0 when there is none)."""
        with self._lock:
            return int(self._db.execute("SELECT coalesce(max(seq), 0) FROM entries").fetchone()[0])

    def feed(self, seq: int) -> list[tuple[int, str, Transition]]:
        """Every entry after ``seq``, in order: its number, its request, the step it records."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, request_id, at, kind, from_status, to_status, by, reason, details "
                "FROM entries WHERE seq > ? ORDER BY seq",
                (seq,),
            ).fetchall()
        return [(row[0], row[1], _transition(*row[2:])) for row in rows]

    def touches(self, path: Path) -> bool:
        """Whether a change to the file at ``path`` may be a change of this journal."""
        return path.parent == self.path.parent and path.name.startswith(self.path.name)

    def recent_entries(self, limit: int = 20) -> list[tuple[str, Transition, int | None]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT request_id, at, kind, from_status, to_status, by, reason, details, uid "
                "FROM entries ORDER BY seq DESC LIMIT ?",
                (limit,),
            ).fetchall()
        return [(row[0], _transition(*row[1:8]), row[8]) for row in rows]

    def attention(self) -> list[Attention]:
        with self._lock:
            rows = self._db.execute(
                "SELECT path, request_id, message, since FROM attention ORDER BY since, path"
            ).fetchall()
        return [Attention(p, rid, msg, parse_ts(since)) for p, rid, msg, since in rows]

    def entries(self, request_id: str | None = None) -> list[Entry]:
        """A request's entries (every entry, without one), in order, as stored."""
        query = (
            "SELECT seq, request_id, at, kind, from_status, to_status, by, reason, details, "
            "params_sha, prev_hash, hash, uid FROM entries"
        )
        args: tuple[str, ...] = ()
        if request_id is not None:
            query += " WHERE request_id = ?"
            args = (request_id,)
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return [Entry(*row) for row in rows]

    def verify_chain(self) -> list[str]:
        """Every break in the hash chain, and any damage SQLite finds in the file, as
        sentences naming the entry; [] when intact."""
        with self._lock:
            damage = [r[0] for r in self._db.execute("PRAGMA quick_check").fetchall()]
        problems = [f"journal file damaged: {text}" for text in damage[:20] if damage != ["ok"]]
        return problems + chain_problems(self.entries())
