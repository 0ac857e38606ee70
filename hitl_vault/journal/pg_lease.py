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
own, so a renewal never waits behind the journal's connection, busy or lost.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

import psycopg

from ..errors import ServerUnavailableError
from .pg_db import PgDatabase, application_name, connect, typed

# The least time a leader's transaction may stay idle before the server ends its session
# (PgDatabase.limit_idle): a frozen leader holds up its successor's election no longer.
IDLE_AT_LEAST = 2.0
_ELECT = (
    "UPDATE lease SET term = term + 1, holder = %s, taken = now(), "
    "expires = now() + make_interval(secs => %s) WHERE expires <= now() RETURNING term"
)
_RENEW = (
    "UPDATE lease SET expires = now() + make_interval(secs => %s) "
    "WHERE term = %s AND holder = %s AND expires > now() RETURNING term"
)
_RELEASE = "UPDATE lease SET expires = now() WHERE term = %s AND holder = %s RETURNING term"
_STATE = "SELECT term, holder, expires > now() FROM lease"


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
        db.limit_idle(max(2 * seconds, IDLE_AT_LEAST))

    def _run(self, sql: str, args: tuple[Any, ...]) -> Any:
        """One statement on the lease's connection, made again after a loss; it may wait
        for the row at most one lease long."""
        with self._lock:
            try:
                if self._conn is None or self._conn.closed:
                    self._conn = connect(self._db.url)
                    wait = int(self.seconds * 1000)
                    self._conn.execute(f"SET statement_timeout = {wait}")
                return self._conn.execute(sql, args).fetchone()
            except psycopg.Error as e:
                self._drop()
                raise typed(self._db.where, e) from None

    def take(self) -> int | None:
        """Elect this process if the lease has run out: its term, or None (another leads)."""
        row = self._run(_ELECT, (self.holder, self.seconds))
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
