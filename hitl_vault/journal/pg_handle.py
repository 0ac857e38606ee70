"""The PostgreSQL journal's :class:`~.handle.Handle`: its database as the shared
collaborators use it, their SQL (written with ``?``, as SQLite takes it) turned into
psycopg's ``%s`` once per statement text."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from .handle import Cursor
from .pg_db import PgDatabase

T = TypeVar("T")
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

    def __init__(self, conn: Any) -> None:
        self._conn = conn

    def execute(self, sql: str, args: Any = (), /) -> Cursor:
        cursor: Cursor = self._conn.execute(pg_sql(sql), args)
        return cursor


class PgHandle:
    """The calls of :class:`~.handle.Handle` on a :class:`~.pg_db.PgDatabase`."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def read(self, sql: str, args: Any = ()) -> list[Any]:
        return self._db.read(pg_sql(sql), args)

    def read_one(self, sql: str, args: Any = ()) -> Any:
        return self._db.read_one(pg_sql(sql), args)

    def rows(self, sql: str, args: Any, convert: Callable[[Any], T]) -> list[T]:
        return self._db.rows(pg_sql(sql), args, convert)

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[_PgTx]:
        with self._db.write(durable) as conn:
            yield _PgTx(conn)

    def batch(self) -> AbstractContextManager[None]:
        return self._db.batch()
