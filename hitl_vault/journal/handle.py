"""The seam the journal's shared collaborators stand on: a small database handle with the
same calls on SQLite and PostgreSQL, so a table's code and its SQL are written once.

The SQL is written once, with ``?`` for each value, as SQLite takes it unchanged (the default
store's statements go to :mod:`sqlite3` as they are written); the PostgreSQL handle turns it
into psycopg's ``%s`` once per statement text. Where the stores really differ (how a
write is locked and who is told of it, the leader's term, which error a duplicate key
raises, what a damaged row is called), the handle holds the difference, not the SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Cursor(Protocol):
    """What a statement run inside a write answers."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Tx(Protocol):
    """The transaction a write hands out: statements run in it commit together."""

    def execute(self, sql: str, args: Any = (), /) -> Cursor: ...


class Handle(Protocol):
    """A journal's database as its shared collaborators use it."""

    def read(self, sql: str, args: Any = ()) -> list[Any]:
        """Every row of one query."""
        ...

    def read_one(self, sql: str, args: Any = ()) -> Any:
        """The first row of one query; None when there is none."""
        ...

    def rows(self, sql: str, args: Any, convert: Callable[[Any], T]) -> list[T]:
        """Each row of one query converted; a row hitl-vault cannot have written is the
        store's damaged-journal error."""
        ...

    def write(self, durable: bool = True) -> AbstractContextManager[Tx]:
        """One atomic write (a savepoint inside :meth:`batch`); ``durable=False`` for what
        can be found again from the notes, whose commit need not wait for a disk."""
        ...

    def batch(self) -> AbstractContextManager[None]:
        """Many writes, one durable commit."""
        ...
