"""How processes on any host hear of each other's writes to the PostgreSQL journal, and the
one-daemon lock there.

Every write of :class:`~.pg_db.PgDatabase` sends ``NOTIFY`` on the vault's channel, which
the server delivers at its commit. :class:`PgWatch` listens on a connection of its own, on
one thread started by the first waiter, and wakes every waiter on each notification, and
after every (re)connection, since notifications sent while it was away are lost: a waker
re-reads from where it got to, so a wake-up is a hint, never the news itself. It also wakes
every waiter every :data:`_POLL` seconds whatever it heard (the fallback: a wake costs a
read), and every :data:`_CHECK` seconds asks its connection for ``SELECT 1``, giving it
up and connecting again unless the answer comes within as long: a connection that goes
silent without closing (a failover, a dropped flow) would otherwise bring no notification,
and no error, ever again.

:class:`PgDaemonLock` is a session advisory lock on a connection of its own: the server
drops it when that connection ends, however its process ends, so there is no stale lock.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql

from ..errors import DaemonRunningError, ServerUnavailableError
from .pg_db import LOCK_CLASS, PgDatabase, connect, deadline

Wake = Callable[[], None]
log = logging.getLogger(__name__)

# How long the listener waits for a notification before it looks whether it should stop,
# and how long it waits before connecting again after losing the server.
_TICK = 0.25
_RETRY = 1.0
# How often every waiter is woken whatever the listener heard, and how often (and within
# how long) the listener's connection must answer, or is given up and made again.
_POLL = 2.0
_CHECK = 2.0


def daemon_key(vault_id: str) -> int:
    """The second key of the vault's daemon lock (the first is LOCK_CLASS): from its id, so
    vaults that share a database never share a lock."""
    return int(vault_id[:7], 16)


class PgWatch:
    """Calls every registered ``wake`` when some process may have written the journal."""

    def __init__(self, url: str, channel: str) -> None:
        self._url = url
        self._channel = channel
        self._lock = threading.Lock()
        self._wakers: dict[int, Wake] = {}
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    def _wake_all(self) -> None:
        for key, wake in list(self._wakers.items()):
            try:
                wake()
            except Exception:
                log.debug("dropped a waker that failed", exc_info=True)
                with self._lock:
                    if self._wakers.get(key) is wake:
                        del self._wakers[key]

    def _listen(self) -> None:
        while not self._stop.is_set():
            conn: psycopg.Connection[Any] | None = None
            try:
                conn = connect(self._url)
                with deadline(conn, _CHECK):
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                self._wake_all()  # whatever was written while no one listened
                polled = checked = time.monotonic()
                while not self._stop.is_set():
                    for _ in conn.notifies(timeout=_TICK, stop_after=1):
                        self._wake_all()
                    now = time.monotonic()
                    if now - checked >= _CHECK:
                        with deadline(conn, _CHECK):
                            conn.execute("SELECT 1")
                        checked = now
                    if now - polled >= _POLL:
                        self._wake_all()
                        polled = now
            except (psycopg.Error, ServerUnavailableError) as e:
                log.debug("lost the journal's notifications (%s); listening again", e)
                self._stop.wait(_RETRY)
            finally:
                if conn is not None:
                    with contextlib.suppress(psycopg.Error):
                        conn.close()

    @contextmanager
    def watching(self, wake: Wake) -> Iterator[None]:
        key = id(wake)
        with self._lock:
            if not self._stop.is_set():
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._listen, name="hitl-vault journal listener", daemon=True
                    )
                    self._thread.start()
                self._wakers[key] = wake
        try:
            yield
        finally:
            with self._lock:
                self._wakers.pop(key, None)

    def close(self) -> None:
        with self._lock:
            self._stop.set()
            thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()


class PgDaemonLock:
    """The lock that lets one daemon at a time act for the vault: held while its connection
    lives."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._key = daemon_key(db.vault_id)
        self._conn: psycopg.Connection[Any] | None = None

    def acquire(self) -> PgDaemonLock:
        conn = connect(self._db.url)
        try:
            got = conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, self._key)
            ).fetchone()
        except psycopg.Error as e:
            conn.close()
            raise ServerUnavailableError(self._db.where, str(e).strip()) from None
        if not got or not got[0]:
            conn.close()
            holder = holder_of(self._db, self._key) or "a process on another connection"
            raise DaemonRunningError(self._db.where, holder)
        self._conn = conn
        return self

    def release(self) -> None:
        """Unlock, then close: the server ends a closed connection's session a moment later,
        and whoever asks meanwhile must not find the lock still held."""
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", (LOCK_CLASS, self._key))
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
            self._conn = None


_HOLDER = (
    "SELECT coalesce(nullif(a.application_name, ''), 'server pid ' || l.pid) "
    "FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid "
    "WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 "
    "AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database()) "
    "AND l.classid = %s::oid AND l.objid = %s::oid"
)


def holder_of(db: PgDatabase, key: int) -> str | None:
    """Who holds the daemon lock ``key`` (its application name), None if no one does."""
    row = db.read_one(_HOLDER, (LOCK_CLASS, key))
    return None if row is None else str(row[0])
