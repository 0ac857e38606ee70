"""Leadership of a vault whose journal is on PostgreSQL: the lease row and its terms.

One host at a time does the owner's work (writing notes, running actions, timeouts,
notifications); the ``lease`` row says which, by the server's clock (``now()``), so no
host's clock matters. A host takes the lease when it has run out: the term goes up by one
(an election), and the row says until when it holds (``expires``). The holder renews it
well before then, moving ``expires`` only.

``term`` is the row's key, so the two moves lock it differently: a renewal takes ``FOR NO
KEY UPDATE``, which never waits for the owner's own writes (each holds ``FOR KEY SHARE`` on
the row of its term, :meth:`~.pg_db.PgDatabase.owner`), while an election takes ``FOR
UPDATE``, which waits for every owner's write under way; once it commits, every write of
the old term finds no row of its term and is refused. The lease has a connection of its
own, so a renewal never waits behind the journal's connection, busy or lost. Each of its
transactions must end within one and a half leases by this process's clock, or that
connection is given up and the next try opens another: the server's ``statement_timeout``
bounds a wait for a lock, but not a statement lost on a network gone silent, which the
server never saw.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

import psycopg

from ..errors import ServerUnavailableError
from .pg_db import PgDatabase, application_name, connect, deadline, typed

# The least time a leader's transaction may stay idle before the server ends its session
# (PgDatabase.limit_idle): a frozen leader holds up its successor's election no longer.
IDLE_AT_LEAST = 2.0
# How many leases a transaction on the lease's connection may take, by this process's clock,
# before that connection is given up: more than the server's own limit of one lease on a
# statement (a wait for the row), so a wait that the server ends says so itself.
GIVE_UP = 1.5
# Times are the server's clock when the row is written (clock_timestamp()). An election
# first locks a lease that has run out, waiting for the owner's writes under way, and only
# then counts its own lease from the server's clock: never from before that wait.
_RUN_OUT = "SELECT 1 FROM lease WHERE expires <= clock_timestamp() FOR UPDATE"
_ELECT = (
    "UPDATE lease SET term = term + 1, holder = %s, taken = clock_timestamp(), "
    "expires = clock_timestamp() + make_interval(secs => %s) "
    "WHERE expires <= clock_timestamp() RETURNING term"
)
_RENEW = (
    "UPDATE lease SET expires = clock_timestamp() + make_interval(secs => %s) "
    "WHERE term = %s AND holder = %s AND expires > clock_timestamp() RETURNING term"
)
_RELEASE = (
    "UPDATE lease SET expires = clock_timestamp() WHERE term = %s AND holder = %s RETURNING term"
)
_STATE = "SELECT term, holder, expires > clock_timestamp() FROM lease"


@dataclass(frozen=True)
class Leader:
    """Who leads the vault: the term, its holder (host and process), live or run out."""

    term: int
    holder: str
    live: bool


def leader_of(db: PgDatabase) -> Leader | None:
    """The lease as the server has it now (None: no term was ever taken)."""
    row = db.read_one(_STATE)
    if row is None or row[1] == "":
        return None
    return Leader(int(row[0]), str(row[1]), bool(row[2]))


class PgLease:
    """This process's side of the vault's lease: take it, renew it, hand it back."""

    def __init__(self, db: PgDatabase, seconds: float) -> None:
        self.seconds = seconds
        self.holder = application_name()
        self._db = db
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        # By time.monotonic(): when the term taken or renewed last may be over, at the
        # earliest (its lease counted from before the statement that set it was sent).
        self.deadline = 0.0
        db.limit_idle(max(2 * seconds, IDLE_AT_LEAST))

    def _run(self, sql: str, args: tuple[Any, ...], *, first: str | None = None) -> Any:
        """One statement on the lease's connection, made again after a loss (``first``: in
        one transaction after that one, which must find a row); each may wait for the row
        at most one lease long, and the whole :data:`GIVE_UP` leases. Sets :attr:`deadline`
        if it returns a row."""
        with self._lock:
            try:
                conn = self._connection()
                with deadline(conn, GIVE_UP * self.seconds), conn.transaction():
                    if first is not None and conn.execute(first).fetchone() is None:
                        return None
                    sent = time.monotonic()
                    row = conn.execute(sql, args).fetchone()
                if row is not None:
                    self.deadline = sent + self.seconds
                return row
            except psycopg.Error as e:
                self._drop()
                raise typed(self._db.where, e) from None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._db.url)
            with deadline(self._conn, GIVE_UP * self.seconds):
                self._conn.execute(f"SET statement_timeout = {int(self.seconds * 1000)}")
        return self._conn

    def take(self) -> int | None:
        """Elect this process if the lease has run out: its term, or None (another leads).
        The election waits for the owner's writes under way."""
        row = self._run(_ELECT, (self.holder, self.seconds), first=_RUN_OUT)
        return None if row is None else int(row[0])

    def renew(self, term: int) -> bool:
        """Hold ``term`` one lease longer from now; False if it is over (run out or taken)."""
        return self._run(_RENEW, (self.seconds, term, self.holder)) is not None

    def current(self) -> int:
        """The term elected last (live or run out): what a follower says it follows."""
        return int(self._run("SELECT term FROM lease", ())[0])

    def release(self, term: int) -> None:
        """Hand ``term`` back at once (a stop): the next host need not wait for it to run out."""
        with contextlib.suppress(ServerUnavailableError):
            self._run(_RELEASE, (term, self.holder))

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()
