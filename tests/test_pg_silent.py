"""The journal on PostgreSQL when a connection goes silent without closing, and when the
journal drops out just as a host is elected.

A database that fails over to another machine, or a NAT or firewall that drops a flow, leaves
a connection open that carries nothing more either way: no error comes, ever. The proxy here
(tests/test_pg_network.py's, over a Unix socket, where TCP keepalives do not reach) silences
every connection open through it while new ones go through.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import closing, suppress

import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from hitl_vault.daemon.leader import Leadership
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import JournalUnavailableError, ServerDamagedError
from hitl_vault.journal import pg_watch
from hitl_vault.journal.pg import PgJournal
from hitl_vault.journal.pg_db import SILENT, connect

from .helpers import eventually
from .pgserver import fresh_journal
from .test_pg_lease import _new
from .test_pg_network import Proxy

LEASE = 0.5  # seconds: the lease of these tests


class Silencer(Proxy):
    """A proxy whose :meth:`silence` makes every connection open through it carry nothing
    more (its sockets stay open, what comes is dropped), while new connections go through."""

    def __init__(self, url: str) -> None:
        self._hush = threading.Event()  # asked to silence the connections open now
        self._silent: set[socket.socket] = set()
        self._ends: set[socket.socket] = set()  # every connection's, to close at the end
        super().__init__(url)

    def silence(self) -> None:
        self._hush.set()

    def _open(self) -> set[socket.socket]:
        ends = self._select.get_map().values()
        return {key.fileobj for key in ends if key.data is not None}  # type: ignore[misc]

    def _hushed(self) -> None:
        """On the proxy's thread, before anything else: silence what is open now."""
        if self._hush.is_set():
            self._silent.update(self._open())
            self._hush.clear()

    def _accept(self) -> None:
        self._hushed()
        super()._accept()
        self._ends.update(self._open())

    def close(self) -> None:
        super().close()
        for end in self._ends:
            end.close()

    def _forward(self, source: socket.socket, sink: socket.socket) -> None:
        self._hushed()
        if source not in self._silent:
            super()._forward(source, sink)
            return
        chunk = b""
        with suppress(OSError):
            chunk = source.recv(65536)  # dropped: the other end never sees it
        if not chunk:  # this end closed it
            self._silent.discard(source)
            self._drop(source)


@pytest.fixture
def silencer(pg_url: str) -> Iterator[tuple[Silencer, str]]:
    """A fresh journal, and a proxy to it: (the proxy, the journal's own URL)."""
    url = fresh_journal(pg_url)
    proxy = Silencer(url)
    try:
        yield proxy, url
    finally:
        proxy.close()


@pytest.mark.slow
def test_the_listener_hears_writes_again_after_its_connection_goes_silent(
    silencer: tuple[Silencer, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener whose connection goes silent finds out at its next check, connects again
    and hears other hosts' writes again (no poll fallback here: every wake is heard)."""
    proxy, url = silencer
    monkeypatch.setattr(pg_watch, "_CHECK", 0.3)
    monkeypatch.setattr(pg_watch, "_POLL", 600.0)
    monkeypatch.setattr(pg_watch, "_RETRY", 0.1)
    wakes: list[float] = []
    with (
        closing(PgJournal(proxy.url)) as ours,
        closing(PgJournal(url)) as theirs,
        ours.watch(lambda: wakes.append(time.monotonic())),
    ):
        eventually(lambda: wakes, timeout=10)  # listening
        _new(theirs, 1)
        eventually(lambda: len(wakes) >= 2, timeout=10)
        proxy.silence()
        silenced = len(wakes)
        _new(theirs, 2)
        eventually(lambda: len(wakes) > silenced, timeout=5)  # connected again
        heard = len(wakes)
        _new(theirs, 3)
        eventually(lambda: len(wakes) > heard, timeout=5)  # and hears the next write


def test_the_listener_wakes_its_waiters_every_poll_whatever_it_heard(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With nothing written, every waiter is still woken every poll (the fallback)."""
    monkeypatch.setattr(pg_watch, "_POLL", 0.1)
    wakes: list[float] = []
    journal = PgJournal(fresh_journal(pg_url))
    with closing(journal), journal.watch(lambda: wakes.append(time.monotonic())):
        eventually(lambda: len(wakes) >= 2, timeout=10)


@pytest.mark.slow
def test_a_lease_whose_connection_goes_silent_is_taken_on_a_new_one(
    silencer: tuple[Silencer, str],
) -> None:
    """A take() on a silent connection gives up within one and a half leases, and the next
    take() connects again and is elected: a follower is never stuck in the election."""
    proxy, _ = silencer
    with closing(PgJournal(proxy.url)) as journal:
        lease = journal.lease(LEASE)
        term = lease.take()
        assert term is not None
        lease.release(term)
        proxy.silence()
        taken: list[int | None] = []

        def follow() -> None:  # a follower's tries, on a thread: without a limit, one hangs
            while not taken:
                with suppress(JournalUnavailableError):
                    taken.append(lease.take())

        started = time.monotonic()
        follower = threading.Thread(target=follow, daemon=True)
        follower.start()
        follower.join(10)
        assert taken == [term + 1]
        assert time.monotonic() - started < 6 * LEASE  # 1.5 leases, and a connection
        lease.close()


def _kill_connection(journal: PgJournal, url: str) -> None:
    """The server ends the journal's connection (a restart, an idle limit, a proxy)."""
    pid = journal._db.read_one("SELECT pg_backend_pid()")[0]
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        eventually(
            lambda: (
                not admin.execute(
                    "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)
                ).fetchall()
            )
        )


def test_a_journal_lost_while_the_daemon_is_made_hands_the_term_back_and_follows(
    pg_url: str,
) -> None:
    """An election followed by a dropped connection while the daemon is made (its first
    statement) hands the term back and follows again; it leads once the journal answers."""
    url = fresh_journal(pg_url)
    with closing(PgJournal(url)) as journal, closing(PgJournal(url)) as onlooker:
        tries: list[tuple[int, bool]] = []  # (the term then, live?) at each try

        def make() -> Daemon:
            leader = onlooker.leader()
            assert leader is not None
            tries.append((leader.term, leader.live))
            journal.wait_for_lock(1.0)  # what Daemon.__init__ does last
            leadership.stop()  # the second try made it: enough
            raise ServerDamagedError("the test", "no daemon to make here")

        leadership = Leadership(journal, make, lease=LEASE, renew=0.1)
        _kill_connection(journal, url)
        with pytest.raises(ServerDamagedError):  # a damaged journal, unlike a lost one, ends it
            leadership.run()
        assert tries == [(1, True), (2, True)]  # term 1 handed back: term 2 at once
        leader = onlooker.leader()
        assert leader is not None and (leader.term, leader.live) == (2, False)


def test_every_connection_asks_tcp_to_give_up_a_silent_server(pg_url: str) -> None:
    """Each connection sets TCP keepalives and a user timeout; a URL's own values win."""
    url = make_conninfo(fresh_journal(pg_url), tcp_user_timeout=3000)
    with closing(connect(url)) as conn:
        asked = conn.info.get_parameters()
    assert asked["tcp_user_timeout"] == "3000"
    assert {key: asked[key] for key in SILENT if key != "tcp_user_timeout"} == {
        key: str(value) for key, value in SILENT.items() if key != "tcp_user_timeout"
    }
