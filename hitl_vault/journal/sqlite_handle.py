"""The SQLite journal's :class:`~.handle.Handle`: its database as the shared collaborators
use it. The SQL goes to SQLite as it is written; a write is ``BEGIN IMMEDIATE``, so it
holds the one writer's lock from its first statement and needs no lock of its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

from .handle import Tx
from .sqlite_db import Database

T = TypeVar("T")


class SqliteHandle:
    """The calls of :class:`~.handle.Handle` on a :class:`~.sqlite_db.Database`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def read(self, sql: str, args: Any = ()) -> list[Any]:
        return self._db.read(sql, args)

    def read_one(self, sql: str, args: Any = ()) -> Any:
        return self._db.read_one(sql, args)

    def rows(self, sql: str, args: Any, convert: Callable[[Any], T]) -> list[T]:
        return self._db.rows(sql, args, convert)

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[Tx]:
        with self._db.write(durable) as db:
            yield db

    def batch(self) -> AbstractContextManager[None]:
        return self._db.batch()
