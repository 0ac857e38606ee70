"""The seam the journal's shared collaborators stand on: a small database handle with the
same calls on SQLite and PostgreSQL, so a table's code and its SQL are written once.

The SQL is written once, with ``?`` for each value, as SQLite takes it unchanged (the default
store's statements go to :mod:`sqlite3` as they are written); the PostgreSQL handle turns it
into psycopg's ``%s`` once per statement text. Where the stores really differ (how writers
are kept in one order, who is told of a write, the leader's term, which error a duplicate
key raises, what a damaged row is called, the column that keeps rows in the order they
were added), the handle holds the difference, not the SQL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol, TypeVar

from ..store import ServiceEntry

T = TypeVar("T")
# What converting a row hitl-vault did not write raises (as each database's `converted`).
BAD_ROW = (ValueError, TypeError, KeyError, IndexError)


class Cursor(Protocol):
    """What a statement run inside a write answers."""

    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Tx(Protocol):
    """The transaction a write hands out: what is done in it commits together."""

    def execute(self, sql: str, args: Any = (), /) -> Cursor:
        """Run one statement (``?`` for each value)."""

    def lock_head(self) -> None:
        """Before anything else, take the lock every writer of the journal's entries takes,
        so no two writes ever wait on each other in a circle (PostgreSQL's head row; an
        SQLite write holds its one writer's lock from the start already)."""

    def share_head(self) -> None:
        """Before anything else, wait for a write of the entries under way and hold the next
        one back until this commits (nothing to do on SQLite, for the same reason)."""

    def log(
        self, at: datetime, by: str, event: str, subject: str, details: tuple[str, ...]
    ) -> ServiceEntry:
        """Append an entry to the service log, in this transaction."""


class Handle(Protocol):
    """A journal's database as its shared collaborators use it."""

    # What a write raises when a unique key is taken already.
    conflict: type[Exception]
    # The column that orders a table's rows as they were added.
    added: str
    # What a query inside a write ends with to keep the rows it reads from other writers
    # until it commits (nothing on SQLite, whose write holds the whole database).
    locked: str

    def read(self, sql: str, args: Any = ()) -> list[Any]:
        """Every row of one query."""

    def read_one(self, sql: str, args: Any = ()) -> Any:
        """The first row of one query; None when there is none."""

    def rows(self, sql: str, args: Any, convert: Callable[[Any], T]) -> list[T]:
        """Each row of one query, :meth:`converted`."""

    def converted(self, rows: Iterable[Any], convert: Callable[[Any], T]) -> list[T]:
        """Each of ``rows`` converted; a row hitl-vault cannot have written is the store's
        damaged-journal error."""

    def snapshot(self, *queries: str) -> list[list[Any]]:
        """Every row of each query (none takes values), all read at one moment."""

    def problems(self) -> list[str]:
        """What the database finds wrong in itself, beside the hash chain."""

    def damaged(self, problem: str) -> Exception:
        """The store's damaged-journal error, saying ``problem``."""

    def write(self, durable: bool = True) -> AbstractContextManager[Tx]:
        """One atomic write (a savepoint inside :meth:`batch`); ``durable=False`` for what
        can be found again from the notes, whose commit need not wait for a disk."""

    def batch(self) -> AbstractContextManager[None]:
        """Many writes, one durable commit."""
