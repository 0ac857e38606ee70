"""Reading the PostgreSQL journal: requests, their histories, what needs attention, the chain.

The same queries as the SQLite journal's (:mod:`.sqlite_read`, whose row conversions this
shares), in PostgreSQL's words; ``n`` keeps the order requests were journaled in."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..chain import GENESIS, Entry, chain_problems
from ..errors import RequestNotFoundError
from ..identity import same_name
from ..model import Request, Status, Transition
from ..store import Attention
from ..times import format_ts, parse_ts
from .pg_db import PgDatabase
from .sqlite_db import json_object
from .sqlite_read import REQUEST_COLUMNS as _SQLITE_COLUMNS
from .sqlite_read import _request, _transition

REQUEST_COLUMNS = _SQLITE_COLUMNS  # the same columns, the same conversion
_STEP = "at, kind, from_status, to_status, by, reason, details"


class PgReader:
    """The queries of :class:`~hitl_vault.journal.pg.PgJournal`, on the database it is
    handed. A row that is not what hitl-vault writes (a status no one writes, JSON that
    is not) raises :class:`ServerDamagedError` naming it: damage, never a traceback."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def _requests(self, rows: list[Any], history: bool = False) -> list[Request]:
        return self._db.converted(
            rows, lambda row: _request(row, tuple(self.history(row[0])) if history else ())
        )

    def _steps(self, rows: list[Any]) -> list[Transition]:
        return self._db.converted(rows, _transition)

    def get(self, request_id: str, *, history: bool = True) -> Request | None:
        """The request, with its history read in the same query (one round trip, and the
        two seen as of one moment)."""
        if not history:
            rows = self._db.read(
                f"SELECT {REQUEST_COLUMNS} FROM requests WHERE id = %s", (request_id,)
            )
            return self._requests(rows)[0] if rows else None
        rows = self._db.read(
            f"SELECT {REQUEST_COLUMNS}, (SELECT coalesce(json_agg(json_build_array({_STEP}) "
            "ORDER BY seq), '[]') FROM entries WHERE request_id = requests.id) "
            "FROM requests WHERE id = %s",
            (request_id,),
        )
        found = self._db.converted(
            rows, lambda row: _request(row[:-1], tuple(_transition(step) for step in row[-1]))
        )
        return found[0] if found else None

    def created_params(self, request_id: str) -> dict[str, Any]:
        """The params as they were asked for, before any edit (for requests journaled before
        they were kept apart, the current ones: such journals recorded no edit while pending)."""
        rows = self._db.rows(
            "SELECT coalesce(params_created, params) FROM requests WHERE id = %s",
            (request_id,),
            lambda row: json_object(row[0], f"the params {request_id} was asked with"),
        )
        if not rows:
            raise RequestNotFoundError(request_id)
        return rows[0]

    def pinned(self, request_id: str) -> dict[str, Any]:
        rows = self._db.rows(
            "SELECT pinned FROM requests WHERE id = %s",
            (request_id,),
            lambda row: json_object(row[0], f"what {request_id} pinned") if row[0] else {},
        )
        return rows[0] if rows else {}

    def decision_uid(self, request_id: str) -> int | None:
        row = self._db.read_one(
            "SELECT uid FROM entries WHERE request_id = %s AND kind = 'transition' "
            "AND to_status IN ('approved', 'rejected', 'cancelled') ORDER BY seq LIMIT 1",
            (request_id,),
        )
        return row[0] if row else None

    def last_change(self, request_id: str) -> tuple[str | None, datetime] | None:
        rows = self._db.rows(
            "SELECT r.path, (SELECT at FROM entries WHERE request_id = r.id "
            "ORDER BY seq DESC LIMIT 1) FROM requests r WHERE r.id = %s",
            (request_id,),
            lambda row: (row[0], parse_ts(row[1])),
        )
        return rows[0] if rows else None

    def status_of(self, request_id: str) -> Status | None:
        rows = self._db.rows(
            "SELECT status FROM requests WHERE id = %s", (request_id,), lambda row: Status(row[0])
        )
        return rows[0] if rows else None

    def requests(
        self, status: Status | None = None, limit: int | None = None, agent: str | None = None
    ) -> list[Request]:
        query = f"SELECT {REQUEST_COLUMNS} FROM requests"
        where: list[str] = []
        args: list[Any] = []
        if status is not None:
            where.append("status = %s")
            args.append(str(status))
        if agent is not None:  # asked with one of the tokens of that name (names as compared)
            where.append("credential IN (SELECT id FROM credentials WHERE key = %s)")
            args.append(same_name(agent))
        if where:
            query += " WHERE " + " AND ".join(where)
        query += " ORDER BY created DESC, n DESC"  # n: the order they were journaled
        if limit is not None:
            query += " LIMIT %s"
            args.append(limit)
        return self._requests(self._db.read(query, args))

    def pending_by_expiry(self, limit: int) -> list[Request]:
        rows = self._db.read(
            f"SELECT {REQUEST_COLUMNS} FROM requests WHERE status = 'pending' "
            "ORDER BY expires IS NULL, expires, requests.id LIMIT %s",
            (limit,),
        )
        return self._requests(rows)

    def ids(self, status: Status | None = None) -> list[str]:
        if status is None:
            rows = self._db.read("SELECT id FROM requests")
        else:
            rows = self._db.read("SELECT id FROM requests WHERE status = %s", (str(status),))
        return [r[0] for r in rows]

    def paths(self) -> dict[str, str]:
        rows = self._db.read("SELECT id, path FROM requests WHERE path IS NOT NULL")
        return {rid: path for rid, path in rows}

    def history(self, request_id: str) -> list[Transition]:
        rows = self._db.read(
            f"SELECT {_STEP} FROM entries WHERE request_id = %s ORDER BY seq", (request_id,)
        )
        return self._steps(rows)

    def expiring(self, before: datetime | None = None) -> list[tuple[str, datetime]]:
        query = "SELECT id, expires FROM requests WHERE status = 'pending' AND expires IS NOT NULL"
        args: list[Any] = []
        if before is not None:
            query += " AND expires <= %s"
            args.append(format_ts(before))
        return self._db.rows(query + " ORDER BY expires", args, lambda r: (r[0], parse_ts(r[1])))

    def escalating(self, before: datetime) -> list[str]:
        rows = self._db.read(
            "SELECT id FROM requests WHERE status = 'pending' AND escalate_at IS NOT NULL "
            "AND escalate_at <= %s ORDER BY escalate_at",
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
            f"SELECT seq, request_id, {_STEP} FROM entries WHERE seq > %s ORDER BY seq", (seq,)
        )
        steps = self._steps([row[2:] for row in rows])
        return [(row[0], row[1], t) for row, t in zip(rows, steps, strict=True)]

    def recent_entries(
        self, limit: int = 20
    ) -> list[tuple[str, Transition, int | None, str | None]]:
        rows = self._db.read(
            f"SELECT request_id, {_STEP}, uid, actor FROM entries ORDER BY seq DESC LIMIT %s",
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
            query += " WHERE request_id = %s"
            args = (request_id,)
        return [Entry(*row) for row in self._db.read(query + " ORDER BY seq", args)]

    def verify_chain(self) -> list[str]:
        """Every break in the hash chain, and entries the head row does not account for: the
        newest ones removed, or some added behind its back."""
        problems = chain_problems(self.entries())
        head, newest, head_hash, newest_hash = self._db.read_one(
            "SELECT seq, (SELECT coalesce(max(seq), 0) FROM entries), hash, "
            "(SELECT hash FROM entries ORDER BY seq DESC LIMIT 1) FROM head"
        )
        if head == newest and head_hash != (newest_hash or GENESIS):
            problems.append(
                f"journal entry {head}: is not the newest written (the head row names another "
                "hash: entries after it removed, and the head row moved back)"
            )
        elif head > newest:
            which = f"entry {head}" if head == newest + 1 else f"entries {newest + 1}-{head}"
            problems.append(f"journal {which}: missing (removed after it was written)")
        elif newest > head:
            problems.append(
                f"journal entries {head + 1}-{newest}: added outside hitl-vault (the head row "
                f"says {head} entries were written)"
            )
        return problems
