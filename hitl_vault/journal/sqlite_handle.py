"""The SQLite journal's :class:`~.handle.Handle`: its database as the shared collaborators
use it. The SQL goes to SQLite as it is written; a write is ``BEGIN IMMEDIATE``, so it
holds the one writer's lock from its first statement and needs no lock of its own."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime
from typing import Any, TypeVar

from ..errors import JournalDamagedError
from ..store import ServiceEntry
from .handle import Cursor
from .sqlite_db import Database

T = TypeVar("T")
# Appends to the service log inside a write (Access._log).
Log = Callable[[sqlite3.Connection, datetime, str, str, str, tuple[str, ...]], ServiceEntry]
# Every row of each query, all read in one transaction (Access._snapshot).
Snapshot = Callable[..., list[list[Any]]]


class _SqliteTx:
    """The transaction of one write on SQLite's connection."""

    def __init__(self, conn: sqlite3.Connection, log: Log) -> None:
        self._conn = conn
        self._log = log

    def execute(self, sql: str, args: Any = (), /) -> Cursor:
        return self._conn.execute(sql, args)

    def lock_head(self) -> None:
        """Nothing to take: ``BEGIN IMMEDIATE`` holds SQLite's one writer's lock."""

    def share_head(self) -> None:
        """Nothing to take, as for :meth:`lock_head`."""

    def log(
        self, at: datetime, by: str, event: str, subject: str, details: tuple[str, ...]
    ) -> ServiceEntry:
        return self._log(self._conn, at, by, event, subject, details)


class SqliteHandle:
    """The calls of :class:`~.handle.Handle` on a :class:`~.sqlite_db.Database`, logging
    through ``log`` and reading one moment through ``snapshot`` (the store's Access)."""

    conflict: type[Exception] = sqlite3.IntegrityError
    added = "rowid"
    locked = ""

    def __init__(self, db: Database, log: Log, snapshot: Snapshot) -> None:
        self._db = db
        self._log = log
        self.snapshot = snapshot

    def read(self, sql: str, args: Any = ()) -> list[Any]:
        return self._db.read(sql, args)

    def read_one(self, sql: str, args: Any = ()) -> Any:
        return self._db.read_one(sql, args)

    def rows(self, sql: str, args: Any, convert: Callable[[Any], T]) -> list[T]:
        return self._db.rows(sql, args, convert)

    def converted(self, rows: Iterable[Any], convert: Callable[[Any], T]) -> list[T]:
        return self._db.converted(rows, convert)

    def problems(self) -> list[str]:
        """Any damage SQLite finds in the file."""
        damage = [r[0] for r in self._db.read("PRAGMA quick_check")]
        return [f"journal file damaged: {text}" for text in damage[:20] if damage != ["ok"]]

    def damaged(self, problem: str) -> Exception:
        return JournalDamagedError(self._db.path, problem)

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[_SqliteTx]:
        with self._db.write(durable) as conn:
            yield _SqliteTx(conn, self._log)

    def batch(self) -> AbstractContextManager[None]:
        return self._db.batch()
