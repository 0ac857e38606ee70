"""The PostgreSQL journal's :class:`~.handle.Handle`: its database as the shared
collaborators use it, their SQL (written with ``?``, as SQLite takes it) turned into
psycopg's ``%s`` once per statement text."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, TypeVar

from ..chain import GENESIS
from ..errors import ServerDamagedError
from ..store import ServiceEntry
from .handle import Cursor
from .pg_db import Conflict, PgDatabase
from .pg_steps import Tx as Connection
from .pg_steps import lock_head

T = TypeVar("T")
# Appends to the service log inside a write (PgAccess._log).
Log = Callable[[Connection, datetime, str, str, str, tuple[str, ...]], ServiceEntry]
# A quoted literal ('it''s' included), left as it is but for its '%'.
_LITERAL = re.compile(r"('(?:[^']|'')*')")


@functools.lru_cache(maxsize=512)
def pg_sql(sql: str) -> str:
    """``sql`` with each ``?`` outside a quoted literal made ``%s`` and every ``%`` doubled,
    as psycopg reads them once values are passed."""
    parts = _LITERAL.split(sql)
    return "".join(
        part.replace("%", "%%") if i % 2 else part.replace("%", "%%").replace("?", "%s")
        for i, part in enumerate(parts)
    )


class _PgTx:
    """The transaction of one write, taking the statements as the collaborators write them."""

    def __init__(self, conn: Connection, log: Log) -> None:
        self._conn = conn
        self._log = log

    def execute(self, sql: str, args: Any = (), /) -> Cursor:
        cursor: Cursor = self._conn.execute(pg_sql(sql), args)
        return cursor

    def lock_head(self) -> None:
        lock_head(self._conn)

    def share_head(self) -> None:
        self._conn.execute("SELECT 1 FROM head FOR SHARE")

    def log(
        self, at: datetime, by: str, event: str, subject: str, details: tuple[str, ...]
    ) -> ServiceEntry:
        return self._log(self._conn, at, by, event, subject, details)


class PgHandle:
    """The calls of :class:`~.handle.Handle` on a :class:`~.pg_db.PgDatabase`, logging
    through ``log`` (the store's PgAccess)."""

    conflict: type[Exception] = Conflict
    added = "n"
    locked = " FOR UPDATE"

    def __init__(self, db: PgDatabase, log: Log) -> None:
        self._db = db
        self._log = log

    def read(self, sql: str, args: Any = ()) -> list[Any]:
        return self._db.read(pg_sql(sql), args)

    def read_one(self, sql: str, args: Any = ()) -> Any:
        return self._db.read_one(pg_sql(sql), args)

    def rows(self, sql: str, args: Any, convert: Callable[[Any], T]) -> list[T]:
        return self._db.rows(pg_sql(sql), args, convert)

    def converted(self, rows: Iterable[Any], convert: Callable[[Any], T]) -> list[T]:
        return self._db.converted(rows, convert)

    def snapshot(self, *queries: str) -> list[list[Any]]:
        """Passed as written: psycopg reads a ``%`` as a placeholder only when values are."""
        return self._db.snapshot(*queries)

    def problems(self) -> list[str]:
        """Entries the head row does not account for: the newest ones removed, or some added
        behind its back."""
        head, newest, head_hash, newest_hash = self._db.read_one(
            "SELECT seq, (SELECT coalesce(max(seq), 0) FROM entries), hash, "
            "(SELECT hash FROM entries ORDER BY seq DESC LIMIT 1) FROM head"
        )
        if head == newest and head_hash != (newest_hash or GENESIS):
            return [
                f"journal entry {head}: is not the newest written (the head row names another "
                "hash: entries after it removed, and the head row moved back)"
            ]
        if head > newest:
            which = f"entry {head}" if head == newest + 1 else f"entries {newest + 1}-{head}"
            return [f"journal {which}: missing (removed after it was written)"]
        if newest > head:
            return [
                f"journal entries {head + 1}-{newest}: added outside hitl-vault (the head row "
                f"says {head} entries were written)"
            ]
        return []

    def damaged(self, problem: str) -> Exception:
        return ServerDamagedError(self._db.where, problem)

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[_PgTx]:
        with self._db.write(durable) as conn:
            yield _PgTx(conn, self._log)

    def batch(self) -> AbstractContextManager[None]:
        return self._db.batch()
