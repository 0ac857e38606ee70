"""Reading the journal, SQLite's or PostgreSQL's: requests, their histories, what needs
attention, the chain."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from ..chain import Entry, chain_problems
from ..errors import RequestNotFoundError
from ..identity import same_name
from ..model import Kind, Request, Risk, Status, Transition, Waiting
from ..policy.pitch import Pitch
from ..store import Attention
from ..times import format_ts, parse_ts
from .handle import Handle
from .sqlite_db import json_object

REQUEST_COLUMNS = (
    "id, action, status, summary, risk, rule, requested_by, created, expires, params, "
    "decided_by, reason, decided_at, executed_at, result, error, path, carried_by_requester, "
    "context, escalate_at, retry_of, "
    "(SELECT r.id FROM requests r WHERE r.retry_of = requests.id), proposal, "
    "credential, session, client"
)
STEP = "at, kind, from_status, to_status, by, reason, details"


def transition(row: Any) -> Transition:
    """A Transition from the ``STEP`` columns of an ``entries`` row."""
    at, kind, frm, to, by, reason, details = row
    return Transition(
        parse_ts(at),
        Status(frm) if frm else None,
        Status(to),
        by,
        reason,
        tuple(json.loads(details)),
        Kind(kind),
    )


def request(row: Any, history: tuple[Transition, ...]) -> Request:
    """A Request from a row of ``REQUEST_COLUMNS``."""
    (rid, action, status, summary, risk, rule, by, created, expires, params) = row[:10]
    (decided_by, reason, decided_at, executed_at, result, error, path, requester) = row[10:18]
    context, escalate_at, retry_of, retried_as, proposal = row[18:23]
    credential, session, client = row[23:26]
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
        params=json_object(params, f"the params of {rid}"),
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
        pitch=Pitch.from_json(json_object(proposal, f"the proposal of {rid}"))
        if proposal
        else None,
        credential=credential,
        session=session,
        client=client,
        history=history,
    )


class Reader:
    """The queries of both journals, on the database handle it is handed. A row that is not
    what hitl-vault writes (a status no one writes, JSON that is not) raises the store's
    damaged-journal error naming it: damage, never a traceback."""

    def __init__(self, db: Handle) -> None:
        self._db = db

    def _requests(self, rows: list[Any], history: bool = False) -> list[Request]:
        return self._db.converted(
            rows, lambda row: request(row, tuple(self.history(row[0])) if history else ())
        )

    def _steps(self, rows: list[Any]) -> list[Transition]:
        return self._db.converted(rows, transition)

    def get(self, request_id: str, *, history: bool = True) -> Request | None:
        rows = self._db.read(f"SELECT {REQUEST_COLUMNS} FROM requests WHERE id = ?", (request_id,))
        return self._requests(rows, history)[0] if rows else None

    def created_params(self, request_id: str) -> dict[str, Any]:
        """The params as they were asked for, before any edit (for requests journaled before
        they were kept apart, the current ones: such journals recorded no edit while pending)."""
        rows = self._db.rows(
            "SELECT coalesce(params_created, params) FROM requests WHERE id = ?",
            (request_id,),
            lambda row: json_object(row[0], f"the params {request_id} was asked with"),
        )
        if not rows:
            raise RequestNotFoundError(request_id)
        return rows[0]

    def pinned(self, request_id: str) -> dict[str, Any]:
        rows = self._db.rows(
            "SELECT pinned FROM requests WHERE id = ?",
            (request_id,),
            lambda row: json_object(row[0], f"what {request_id} pinned") if row[0] else {},
        )
        return rows[0] if rows else {}

    def decision_uid(self, request_id: str) -> int | None:
        row = self._db.read_one(
            "SELECT uid FROM entries WHERE request_id = ? AND kind = 'transition' "
            "AND to_status IN ('approved', 'rejected', 'cancelled') ORDER BY seq LIMIT 1",
            (request_id,),
        )
        return row[0] if row else None

    def last_change(self, request_id: str) -> tuple[str | None, datetime] | None:
        rows = self._db.rows(
            "SELECT r.path, (SELECT at FROM entries WHERE request_id = r.id "
            "ORDER BY seq DESC LIMIT 1) FROM requests r WHERE r.id = ?",
            (request_id,),
            lambda row: (row[0], parse_ts(row[1])),
        )
        return rows[0] if rows else None

    def status_of(self, request_id: str) -> Status | None:
        rows = self._db.rows(
            "SELECT status FROM requests WHERE id = ?", (request_id,), lambda row: Status(row[0])
        )
        return rows[0] if rows else None

    def requests(
        self, status: Status | None = None, limit: int | None = None, agent: str | None = None
    ) -> list[Request]:
        query = f"SELECT {REQUEST_COLUMNS} FROM requests"
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            where.append("status = ?")
            args.append(str(status))
        if agent is not None:  # asked with one of the tokens of that name (names as compared)
            where.append("credential IN (SELECT id FROM credentials WHERE key = ?)")
            args.append(same_name(agent))
        if where:
            query += " WHERE " + " AND ".join(where)
        query += f" ORDER BY created DESC, {self._db.added} DESC"  # as they were journaled
        if limit is not None:
            query += " LIMIT ?"
            args.append(limit)
        return self._requests(self._db.read(query, args))

    def pending_by_expiry(self, limit: int) -> list[Waiting]:
        return self._db.rows(
            "SELECT id, path, summary, action, risk, expires FROM requests "
            "WHERE status = 'pending' ORDER BY expires IS NULL, expires, id LIMIT ?",
            (limit,),
            lambda r: Waiting(r[0], r[1], r[2], r[3], r[4], parse_ts(r[5]) if r[5] else None),
        )

    def ids(self, status: Status | None = None) -> list[str]:
        if status is None:
            rows = self._db.read("SELECT id FROM requests")
        else:
            rows = self._db.read("SELECT id FROM requests WHERE status = ?", (str(status),))
        return [r[0] for r in rows]

    def paths(self) -> dict[str, str]:
        rows = self._db.read("SELECT id, path FROM requests WHERE path IS NOT NULL")
        return {rid: path for rid, path in rows}

    def history(self, request_id: str) -> list[Transition]:
        rows = self._db.read(
            f"SELECT {STEP} FROM entries WHERE request_id = ? ORDER BY seq", (request_id,)
        )
        return self._steps(rows)

    def expiring(self, before: datetime | None = None) -> list[tuple[str, datetime]]:
        query = "SELECT id, expires FROM requests WHERE status = 'pending' AND expires IS NOT NULL"
        args: list[Any] = []
        if before is not None:
            query += " AND expires <= ?"
            args.append(format_ts(before))
        return self._db.rows(query + " ORDER BY expires", args, lambda r: (r[0], parse_ts(r[1])))

    def escalating(self, before: datetime) -> list[str]:
        rows = self._db.read(
            "SELECT id FROM requests WHERE status = 'pending' AND escalate_at IS NOT NULL "
            "AND escalate_at <= ? ORDER BY escalate_at",
            (format_ts(before),),
        )
        return [row[0] for row in rows]

    def next_escalation(self) -> datetime | None:
        row = self._db.read_one("SELECT MIN(escalate_at) FROM requests WHERE status = 'pending'")
        return parse_ts(row[0]) if row and row[0] else None

    def next_expiry(self) -> datetime | None:
        row = self._db.read_one("SELECT MIN(expires) FROM requests WHERE status = 'pending'")
        return parse_ts(row[0]) if row and row[0] else None

    def counts(self) -> dict[Status, int]:
        found = dict(
            self._db.rows(
                "SELECT status, COUNT(*) FROM requests GROUP BY status",
                (),
                lambda row: (Status(row[0]), row[1]),
            )
        )
        return {s: found.get(s, 0) for s in Status}

    def last_seq(self) -> int:
        return int(self._db.read_one("SELECT coalesce(max(seq), 0) FROM entries")[0])

    def feed(self, seq: int) -> list[tuple[int, str, Transition]]:
        rows = self._db.read(
            f"SELECT seq, request_id, {STEP} FROM entries WHERE seq > ? ORDER BY seq", (seq,)
        )
        steps = self._steps([row[2:] for row in rows])
        return [(row[0], row[1], t) for row, t in zip(rows, steps, strict=True)]

    def recent_entries(
        self, limit: int = 20
    ) -> list[tuple[str, Transition, int | None, str | None]]:
        rows = self._db.read(
            f"SELECT request_id, {STEP}, uid, actor FROM entries ORDER BY seq DESC LIMIT ?",
            (limit,),
        )
        steps = self._steps([row[1:8] for row in rows])
        return [(row[0], t, row[8], row[9]) for row, t in zip(rows, steps, strict=True)]

    def attention(self) -> list[Attention]:
        return self._db.rows(
            "SELECT path, request_id, message, since FROM attention ORDER BY since, path",
            (),
            lambda r: Attention(r[0], r[1], r[2], parse_ts(r[3])),
        )

    def entries(self, request_id: str | None = None) -> list[Entry]:
        query = (
            "SELECT seq, request_id, at, kind, from_status, to_status, by, reason, details, "
            "params_sha, prev_hash, hash, uid, actor, credential FROM entries"
        )
        args: tuple[str, ...] = ()
        if request_id is not None:
            query += " WHERE request_id = ?"
            args = (request_id,)
        return [Entry(*row) for row in self._db.read(query + " ORDER BY seq", args)]

    def verify_chain(self) -> list[str]:
        """Every break in the hash chain, after what the database finds wrong in itself."""
        return self._db.problems() + chain_problems(self.entries())
