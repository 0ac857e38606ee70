"""The "always" allows in the PostgreSQL journal: a table of their own, each change in one
transaction with its service-log entry."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime

from ..errors import DuplicateError
from ..policy.always import Allow
from ..store import ServiceEntry
from ..times import format_ts
from .allow_rows import allow_details
from .pg_db import Conflict, PgDatabase
from .pg_steps import Tx, lock_head
from .sqlite_allows import _allow

_ALLOW = (
    "SELECT name, action, params, by, created, until, request_id, prefix, session, cwd, server "
    "FROM allows"
)
Log = Callable[[Tx, datetime, str, str, str, tuple[str, ...]], ServiceEntry]


class PgAllowTable:
    """The allows of :class:`~hitl_vault.journal.pg.PgJournal`, on the database it is
    handed, logged through ``log`` (the service log, in the same transaction)."""

    def __init__(self, db: PgDatabase, log: Log) -> None:
        self._db = db
        self._log = log

    def allows(self, now: datetime | None = None) -> list[Allow]:
        kept = self._db.rows(_ALLOW + " WHERE revoked IS NULL ORDER BY created, n", (), _allow)
        return [a for a in kept if now is None or a.until > now]

    def add_allow(self, allow: Allow, by: str) -> None:
        a = allow
        try:
            with self._db.write() as db:
                lock_head(db)  # first: writers never wait on each other in a circle
                db.execute(
                    "INSERT INTO allows (name, action, params, by, created, until, request_id, "
                    "prefix, session, cwd, server) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (a.name, a.action, json.dumps(dict(a.params), ensure_ascii=False), a.by,
                     format_ts(a.created), format_ts(a.until), a.request_id, int(a.prefix),
                     a.session, a.cwd, a.server),
                )  # fmt: skip
                self._log(db, a.created, by, "allow added", a.name, allow_details(a))
        except Conflict:
            raise DuplicateError(f"allow {a.name}") from None

    def revoke_allow(self, name: str, at: datetime, by: str) -> bool:
        with self._db.write() as db:
            lock_head(db)  # first: writers never wait on each other in a circle
            done = db.execute(
                "UPDATE allows SET revoked = %s WHERE name = %s AND revoked IS NULL",
                (format_ts(at), name),
            ).rowcount
            if done:
                self._log(db, at, by, "allow revoked", name, ())
        return bool(done)
