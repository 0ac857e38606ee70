"""The journal's outbox: notifications recorded before they are sent and marked once sent,
so a restart resends nothing that was sent and sends what was not."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

from ..store import Outgoing
from ..times import format_ts, parse_ts
from .handle import Handle


class Outbox:
    """The outbox of both journals (:class:`~hitl_vault.journal.sqlite.Journal`,
    :class:`~hitl_vault.journal.pg.PgJournal`), on the database handle it is handed."""

    def __init__(self, db: Handle) -> None:
        self._db = db
        self._write = db.write

    def cursor(self, name: str) -> int | None:
        """How far the reader ``name`` has got in the entries; None before its first time."""
        row = self._db.read_one("SELECT seq FROM cursors WHERE name = ?", (name,))
        return None if row is None else int(row[0])

    def move_cursor(self, name: str, seq: int) -> None:
        """The reader ``name`` has handled every entry up to ``seq``. Durable with the batch it
        is part of; alone, not fsynced (the reader is handed those entries again)."""
        with self._write(durable=False) as db:
            db.execute(
                "INSERT INTO cursors (name, seq) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                (name, seq),
            )

    def enqueue(
        self,
        items: Iterable[tuple[str, str, str]],
        at: datetime,
        cursor: tuple[str, int] | None = None,
    ) -> int:
        """Record (request id, event, target) notifications due now, each once ever, and move
        the reader ``cursor`` in the same commit; how many were new."""
        new = 0
        items = list(items)
        with self._write(durable=bool(items)) as db:  # a cursor alone can be found again
            for request_id, event, target in items:
                new += db.execute(
                    "INSERT INTO outbox (request_id, event, target, created, due) "
                    "VALUES (?,?,?,?,?) ON CONFLICT DO NOTHING",
                    (request_id, event, target, format_ts(at), format_ts(at)),
                ).rowcount
            if cursor is not None:
                db.execute(
                    "INSERT INTO cursors (name, seq) VALUES (?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET seq = excluded.seq",
                    cursor,
                )
        return new

    def outgoing(self, now: datetime | None = None, limit: int = 100) -> list[Outgoing]:
        """Notifications not sent nor given up (due by ``now``), the oldest due first."""
        query = "SELECT id, request_id, event, target, created, due, attempts, last_error FROM "
        query += "outbox WHERE sent_at IS NULL AND given_up_at IS NULL"
        args: tuple[object, ...] = ()
        if now is not None:
            query += " AND due <= ?"
            args = (format_ts(now),)
        return self._db.rows(
            query + " ORDER BY due, id LIMIT ?",
            (*args, limit),
            lambda r: Outgoing(r[0], r[1], r[2], r[3], parse_ts(r[4]), parse_ts(r[5]), *r[6:8]),
        )

    def sent(self, item_id: int, at: datetime) -> None:
        """The notification was delivered. Not fsynced: a power cut may lose the mark, and the
        message is then sent again (at least once, never lost), but no send waits on a disk."""
        with self._write(durable=False) as db:
            db.execute(
                "UPDATE outbox SET sent_at = ?, attempts = attempts + 1 WHERE id = ?",
                (format_ts(at), item_id),
            )

    def not_sent(self, item_id: int, at: datetime, error: str, retry_at: datetime | None) -> None:
        """A try failed with ``error``; tried again at ``retry_at`` (None: given up)."""
        with self._write(durable=False) as db:
            db.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?, due = ?, "
                "given_up_at = ? WHERE id = ?",
                (
                    error,
                    format_ts(retry_at or at),
                    None if retry_at is not None else format_ts(at),
                    item_id,
                ),
            )

    def sent_count(self, request_id: str | None = None) -> int:
        """How many notifications were delivered (about one request)."""
        query = "SELECT COUNT(*) FROM outbox WHERE sent_at IS NOT NULL"
        args: tuple[str, ...] = ()
        if request_id is not None:
            query, args = query + " AND request_id = ?", (request_id,)
        return int(self._db.read_one(query, args)[0])
