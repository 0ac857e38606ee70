"""The journal's outbox: notifications recorded before they are sent and marked once sent,
so a restart resends nothing that was sent and sends what was not."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime

from ..store import Outgoing
from ..times import format_ts, parse_ts


class Outbox:
    """Mixed into :class:`~hitl_vault.journal.sqlite.Journal`, which provides the connection."""

    _db: sqlite3.Connection
    _lock: threading.RLock
    _write: Callable[..., AbstractContextManager[sqlite3.Connection]]

    def cursor(self, name: str) -> int | None:
        """How far the reader ``name`` has got in the entries; None before its first time."""
        with self._lock:
            row = self._db.execute("SELECT seq FROM cursors WHERE name = ?", (name,)).fetchone()
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
                    "INSERT OR IGNORE INTO outbox (request_id, event, target, created, due) "
                    "VALUES (?,?,?,?,?)",
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
        with self._lock:
            rows = self._db.execute(query + " ORDER BY due, id LIMIT ?", (*args, limit)).fetchall()
        return [
            Outgoing(i, rid, ev, target, parse_ts(created), parse_ts(due), n, error)
            for i, rid, ev, target, created, due, n, error in rows
        ]

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
        with self._lock:
            return int(self._db.execute(query, args).fetchone()[0])
