"""The PostgreSQL journal's connection: opened on first use and again after a loss, its
errors made ours, its writes atomic.

Every statement runs inside :meth:`PgDatabase.read` or :meth:`PgDatabase.write`, so no
``psycopg`` error leaves the journal modules: a server that cannot be reached, a lock held
too long or a connection lost is :class:`ServerUnavailableError` (try again), data the
server calls damaged, or tables that are not what hitl-vault made, is
:class:`ServerDamagedError`; a unique key already taken is :class:`Conflict`, left to the
statement that expects one. A misuse (a bad statement) is a bug and stays what it is.

The connection is one per store, shared by its threads under a lock, as the SQLite one is.
It runs in autocommit mode: a read sees what is committed now, a write is one transaction
(a savepoint inside :meth:`PgDatabase.batch`).

A thread inside :meth:`PgDatabase.owner` writes as the vault's leader of one term (the
lease, :mod:`~.pg_lease`): each of its writes first takes ``FOR KEY SHARE`` on the lease
row of that term, still live, and is refused (:class:`NotLeaderError`) if there is none.
So a deposed or frozen leader cannot write once its successor is elected, and an election
waits for the owner's writes under way.
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import psycopg
from psycopg import errors as pgerrors
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ..errors import NotLeaderError, ServerDamagedError, ServerJournalError, ServerUnavailableError
from .pg_url import shown

T = TypeVar("T")
# The schema this code reads and writes (pg_schema.sql; `hitl-vault db migrate` makes it).
SCHEMA_VERSION = 5
# What converting a row hitl-vault did not write raises (see PgDatabase.converted).
BAD_ROW = (ValueError, TypeError, KeyError, IndexError)
# How long opening a connection may take before the server counts as unreachable.
CONNECT_TIMEOUT = 10
# How a TCP connection that goes silent without closing (the database failed over to
# another machine, a NAT or firewall dropped the flow) is given up: probed after 5 s idle,
# every 2 s, dropped after 3 probes unanswered, or once data sent stays unacknowledged for
# 10 s (about the default lease). A URL that names any of them keeps its own. A Unix
# socket has none of this: the listener and the lease watch their connections themselves.
SILENT = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
# The first key of every advisory lock hitl-vault takes ("hvlt"); the second says which.
LOCK_CLASS = 0x68766C74


class Conflict(ServerJournalError):
    """A unique key was taken already: ``constraint`` names which (the statement decides,
    and the stores catch it where a clash is expected; one that escapes says what to do)."""

    def __init__(self, constraint: str, where: str = "the server's journal") -> None:
        self.constraint = constraint
        problem = f"a row with this key ({constraint or 'a unique key'}) is there already"
        fix = "another host may have written it first: look with `hitl-vault show`, and retry"
        super().__init__(where, problem, fix)


def application_name() -> str:
    """How this process shows in ``pg_stat_activity`` (and in "a daemon runs: who")."""
    return f"hitl-vault {socket.gethostname()} pid {os.getpid()}"[:63]


def connect(url: str, *, autocommit: bool = True) -> psycopg.Connection[Any]:
    """A new connection to ``url`` (unavailable, with the server's reason, if none can be
    made: down, refused by pg_hba.conf, no password found)."""
    try:
        named = conninfo_to_dict(url)
        given = {key: value for key, value in SILENT.items() if key not in named}
        return psycopg.connect(
            make_conninfo(url, **given),
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT,
            application_name=application_name(),
        )
    except psycopg.Error as e:
        raise ServerUnavailableError(shown(url), _said(e)) from None


@contextmanager
def deadline(conn: psycopg.Connection[Any], seconds: float) -> Iterator[None]:
    """What runs inside must end within ``seconds``, or ``conn`` is cut from this side: its
    socket is shut down, so a wait for an answer that will not come (a silent network) ends
    in an error, :class:`psycopg.OperationalError`. A cancel would not do: it asks the
    server, which never saw the statement."""
    lock = threading.Lock()
    done = False

    def cut() -> None:
        with lock:
            if done or conn.closed:
                return
            with contextlib.suppress(OSError, psycopg.Error):
                end = socket.socket(fileno=os.dup(conn.pgconn.socket))
                with end:
                    end.shutdown(socket.SHUT_RDWR)

    timer = threading.Timer(seconds, cut)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        with lock:
            done = True
        timer.cancel()


def _said(e: BaseException) -> str:
    """What the server or libpq said, on one line."""
    return " ".join(str(e).split()) or type(e).__name__


def typed(where: str, e: psycopg.Error) -> Exception:
    """Our error for a driver error (``e`` itself when it is a bug: a misuse)."""
    if isinstance(e, psycopg.IntegrityError):
        return Conflict(e.diag.constraint_name or "", where)
    if isinstance(e, pgerrors.DataCorrupted | pgerrors.IndexCorrupted):
        return ServerDamagedError(where, _said(e))
    if isinstance(e, pgerrors.UndefinedTable | pgerrors.UndefinedColumn):
        return ServerDamagedError(where, f"its tables are not what hitl-vault made: {_said(e)}")
    if isinstance(e, psycopg.OperationalError | pgerrors.InsufficientPrivilege):
        return ServerUnavailableError(where, _said(e))
    if isinstance(e, psycopg.InterfaceError | psycopg.InternalError):
        return ServerUnavailableError(where, _said(e))
    return e


def schema_version(conn: psycopg.Connection[Any]) -> int:
    """The version of the journal's tables in the connection's schema (0: none yet)."""
    if conn.execute("SELECT to_regclass('meta')").fetchone() == (None,):
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    return int(row[0]) if row else 0


def check_schema(version: int, where: str) -> None:
    """Refuse tables of another version than this code's, saying what to do."""
    if version == SCHEMA_VERSION:
        return
    if version == 0:
        problem, fix = "holds no journal yet", "run `hitl-vault db migrate` once, from one host"
    elif version < SCHEMA_VERSION:
        problem = f"holds a journal of schema {version}, older than this hitl-vault's"
        fix = "stop every host, then run `hitl-vault db migrate` once"
    else:
        problem = f"holds a journal of schema {version}, newer than this hitl-vault knows"
        fix = "upgrade hitl-vault on this host to the version the other hosts run"
    raise ServerJournalError(where, problem, fix)


class PgDatabase:
    """One PostgreSQL database holding one vault's journal: the connection, its lock, and
    the vault's id (``meta``). Any number of processes on any number of hosts may open it."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.where = shown(url)
        self.lock = threading.RLock()
        self.batching = False
        self._conn: psycopg.Connection[Any] | None = None
        self._lock_timeout = 30.0
        self._idle_limit: float | None = None  # see limit_idle
        self._owner = threading.local()  # .term: the leader's term this thread writes as
        self._batch_owned = False  # the batch open now holds its thread's term's lease
        try:
            self.vault_id = self._vault()
        except BaseException:
            self.close()
            raise
        self.channel = f"hitl_vault_{self.vault_id}"

    def _vault(self) -> str:
        """The vault's id, once the tables are found to be this code's."""
        with self.lock, self._errors():
            conn = self._connection()
            check_schema(schema_version(conn), self.where)
            row = conn.execute("SELECT value FROM meta WHERE key = 'vault'").fetchone()
        if row is None:
            raise ServerDamagedError(self.where, "its journal names no vault (meta has no row)")
        return str(row[0])

    def _connection(self) -> psycopg.Connection[Any]:
        """The connection, made again if it was lost (never inside a batch: that is lost)."""
        if self._conn is None or self._conn.closed:
            if self.batching:
                raise ServerUnavailableError(self.where, "the connection was lost in a batch")
            self._conn = connect(self.url)
            self._conn.execute(f"SET lock_timeout = {int(self._lock_timeout * 1000)}")
            if self._idle_limit is not None:
                self._limit_idle(self._conn)
        return self._conn

    def limit_idle(self, seconds: float) -> None:
        """End this connection's session when a transaction stays idle for ``seconds``: a
        leader frozen inside a write would otherwise hold its lease row, and with it the
        election of its successor, for as long as it stays frozen."""
        with self.lock, self._errors():
            self._idle_limit = seconds
            if self._conn is not None and not self._conn.closed:
                self._limit_idle(self._conn)

    def _limit_idle(self, conn: psycopg.Connection[Any]) -> None:
        assert self._idle_limit is not None
        conn.execute(f"SET idle_in_transaction_session_timeout = {int(self._idle_limit * 1000)}")

    @contextmanager
    def owner(self, term: int) -> Iterator[None]:
        """While inside, this thread's writes are the leader's of ``term``: each is refused
        inside the database once that term is over (see the module's note)."""
        before = getattr(self._owner, "term", None)
        self._owner.term = term
        try:
            yield
        finally:
            self._owner.term = before

    @property
    def owner_term(self) -> int | None:
        """The leader's term this thread writes as (None: not the leader's work)."""
        term: int | None = getattr(self._owner, "term", None)
        return term

    def _holds_lease(self, conn: psycopg.Connection[Any], term: int) -> bool:
        """Lock the lease row of ``term`` for this transaction if that term still leads."""
        row = conn.execute(
            "SELECT 1 FROM lease WHERE term = %s AND expires > clock_timestamp() FOR KEY SHARE",
            (term,),
        ).fetchone()
        return row is not None

    def _check_owner(self, conn: psycopg.Connection[Any], outcome_of: str | None) -> None:
        """Refuse a write of this thread's term once that term is over, except the outcome
        of a request that term claimed (``outcome_of``) and nobody closed since."""
        term = self.owner_term
        if term is None or (self.batching and self._batch_owned):
            return
        if self._holds_lease(conn, term):
            return
        if outcome_of is not None:
            claimed = conn.execute(
                "SELECT 1 FROM requests WHERE id = %s AND claimed_term = %s AND status = %s",
                (outcome_of, term, "executing"),
            ).fetchone()
            if claimed is not None:
                return
        raise NotLeaderError(self.where, term)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except psycopg.Error as e:
            raise typed(self.where, e) from None

    @contextmanager
    def _committing(self, commits: bool) -> Iterator[list[bool]]:
        """:meth:`_errors` around a transaction; ``commits``: it is the outermost, so a
        connection lost once its body ended (``ended`` holds True) was lost at the commit,
        which the server may have made: the error says so."""
        ended: list[bool] = []
        try:
            yield ended
        except psycopg.Error as e:
            error = typed(self.where, e)
            if commits and ended and isinstance(error, ServerUnavailableError):
                error = ServerUnavailableError(self.where, _said(e), at_commit=True)
            raise error from None

    def read(self, sql: str, args: Any = ()) -> list[Any]:
        """Every row of one query, under the lock."""
        with self.lock, self._errors():
            return self._connection().execute(sql, args).fetchall()

    def read_one(self, sql: str, args: Any = ()) -> Any:
        """The first row of one query (None when there is none), under the lock."""
        with self.lock, self._errors():
            return self._connection().execute(sql, args).fetchone()

    def rows(self, sql: str, args: Any, convert: Callable[[Any], T]) -> list[T]:
        """Each row of one query, :meth:`converted`."""
        return self.converted(self.read(sql, args), convert)

    def converted(self, rows: Iterable[Any], convert: Callable[[Any], T]) -> list[T]:
        """Each of ``rows`` converted; a row hitl-vault cannot have written is
        :class:`ServerDamagedError`, naming the problem."""
        try:
            return [convert(row) for row in rows]
        except BAD_ROW as e:
            raise ServerDamagedError(self.where, f"a row hitl-vault did not write: {e}") from None

    def snapshot(self, *queries: str) -> list[list[Any]]:
        """Every row of each query, all read in one repeatable-read transaction."""
        with self.lock, self._errors():
            conn = self._connection()
            if self.batching:
                return [conn.execute(q).fetchall() for q in queries]
            with conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
                return [conn.execute(q).fetchall() for q in queries]

    def wait_for_lock(self, seconds: float) -> None:
        with self.lock, self._errors():
            self._lock_timeout = seconds
            if self._conn is not None and not self._conn.closed:
                self._conn.execute(f"SET lock_timeout = {int(seconds * 1000)}")

    def close(self) -> None:
        with self.lock:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
            self._conn = None

    @contextmanager
    def write(
        self, durable: bool = True, outcome_of: str | None = None
    ) -> Iterator[psycopg.Connection[Any]]:
        """One atomic write: a transaction, or a savepoint inside :meth:`batch`; the hosts
        that listen are told at its commit. ``durable=False`` is for what can be found again
        from the notes (where a note is, a flag): its commit does not wait for the server's
        disk (``synchronous_commit = off``), and it becomes durable with the next one.
        Inside :meth:`owner`, refused unless the term still leads (``outcome_of``: or it
        records how that request's action went, and this term claimed it)."""
        with self.lock, self._committing(not self.batching) as ended:
            conn = self._connection()
            with conn.transaction():
                self._check_owner(conn, outcome_of)
                if not self.batching:
                    if durable:
                        conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
                    else:  # both in one round trip
                        conn.execute(
                            "SELECT set_config('synchronous_commit', 'off', true), "
                            "pg_notify(%s, '')",
                            (self.channel,),
                        )
                yield conn
                ended.append(True)

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many writes, one durable commit: each stays atomic on its own (a savepoint), none
        is visible to other processes until the batch ends. Other threads wait."""
        with self.lock:
            if self.batching:
                yield
                return
            with self._committing(True) as ended:
                conn = self._connection()
                with conn.transaction():
                    conn.execute("SELECT pg_notify(%s, '')", (self.channel,))
                    term = self.owner_term
                    self._batch_owned = term is not None and self._holds_lease(conn, term)
                    self.batching = True
                    try:
                        yield
                    finally:
                        self.batching = False
                        self._batch_owned = False
                    ended.append(True)
