"""The leader's lease on a PostgreSQL journal: one term at a time, taken and renewed by the
server's clock, and every write of a term refused inside the database once it is over.

Two stores on one journal stand for two hosts; the lease is a fraction of a second so a
term runs out while the test waits for it (``eventually``, never a fixed sleep).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hitl_vault.cli.template import init_vault
from hitl_vault.errors import DaemonRunningError, NotLeaderError, ServerUnavailableError
from hitl_vault.journal.pg import PgJournal
from hitl_vault.journal.pg_lease import PgLease
from hitl_vault.journal.pg_url import JOURNAL_ENV
from hitl_vault.model import Request, Risk, Status, Transition
from hitl_vault.vault import Vault

from .helpers import eventually
from .pgserver import fresh_journal

LEASE = 0.25  # seconds: short enough to run out while a test waits
AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def hosts(pg_url: str) -> Iterator[tuple[PgJournal, PgJournal]]:
    """Two stores on one fresh journal: two hosts."""
    url = fresh_journal(pg_url)
    with closing(PgJournal(url)) as a, closing(PgJournal(url)) as b:
        yield a, b


def _new(store: PgJournal, n: int, status: Status = Status.PENDING) -> str:
    rid = f"20261206T120000Z-lease-{n:04d}"
    history = (Transition(AT, None, status, "bot", "", ()),)
    request = Request(
        id=rid, status=status, action="payment", summary="s", risk=Risk.LOW, rule="r",
        requested_by="bot", created=AT, expires=None, params={"n": n}, history=history,
    )  # fmt: skip
    store.create(request, None)
    return rid


def _lead(store: PgJournal) -> tuple[PgLease, int]:
    """Take the lease, waiting for another's to run out."""
    lease = store.lease(LEASE)
    term = eventually(lease.take, timeout=10)
    assert isinstance(term, int)
    return lease, term


def _waiting_for_the_lease(store: PgJournal) -> bool:
    """Some election is waiting, on the server, for a lock on the lease row."""
    row = store._db.read_one(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE %s",
        ("%FROM lease WHERE expires%FOR UPDATE%",),
    )
    return bool(row[0])


def _claimed_term(store: PgJournal, rid: str) -> int | None:
    row = store._db.read_one("SELECT claimed_term FROM requests WHERE id = %s", (rid,))
    return None if row is None else row[0]


@pytest.mark.slow
def test_one_term_at_a_time_each_taken_only_once_the_last_ran_out(
    hosts: tuple[PgJournal, PgJournal],
) -> None:
    """A live lease cannot be taken; once it runs out the next host is elected with the
    next term, and the old holder can no longer renew."""
    a, b = hosts
    assert not a.daemon_running()
    lease_a, first = _lead(a)
    lease_b = b.lease(LEASE)
    assert lease_b.take() is None and b.daemon_running()
    assert lease_a.renew(first)
    second = eventually(lease_b.take, timeout=10)
    assert second == first + 1 and lease_b.current() == second
    assert not lease_a.renew(first)
    leader = a.leader()
    assert leader is not None and leader.term == second and leader.live
    lease_b.release(second)
    assert not a.daemon_running()  # handed back: nobody leads until the next election
    assert lease_a.take() == second + 1
    lease_a.close()
    lease_b.close()


@pytest.mark.slow
def test_a_deposed_leaders_writes_are_refused_by_the_database(
    hosts: tuple[PgJournal, PgJournal],
) -> None:
    """Once another term is elected, every write the old term makes is refused and records
    nothing; the same host's writes outside the owner's work (an API's) still land."""
    a, b = hosts
    lease_a, old = _lead(a)
    with a.owner(old):
        _new(a, 1)  # the leader's write, while it leads
    lease_b, new = _lead(b)
    before = a.last_seq()
    with a.owner(old), pytest.raises(NotLeaderError, match=f"term {old} is over"):
        _new(a, 2)
    with a.owner(old), pytest.raises(NotLeaderError), a.batch():
        a.flag("Pending_Approval/x.md", "stale", AT)
    assert a.last_seq() == before and a.get("20261206T120000Z-lease-0002") is None
    assert a.attention() == []
    _new(a, 3)  # not the owner's work: any host records it
    with b.owner(new):
        _new(b, 4)
    assert b.verify_chain() == []
    lease_a.close()
    lease_b.close()


@pytest.mark.slow
def test_an_election_waits_for_the_owners_write_under_way_and_a_renewal_does_not(
    hosts: tuple[PgJournal, PgJournal],
) -> None:
    """An owner's batch open when its lease runs out still commits: the election waits for
    it (and renewing inside it never waits); the next write of the old term is refused."""
    a, b = hosts
    lease_a, old = _lead(a)
    elected: list[int | None] = []
    lease_b = b.lease(LEASE)

    def elect() -> None:  # each try waits for the row at most one lease long
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with contextlib.suppress(ServerUnavailableError):
                if (term := lease_b.take()) is not None:
                    elected.append(term)
                    return

    with a.owner(old), a.batch():
        assert lease_a.renew(old)  # the batch holds the row: a renewal passes it by
        _new(a, 1)
        voter = threading.Thread(target=elect)
        voter.start()
        # The lease runs out meanwhile; the election is blocked on this batch's write.
        eventually(lambda: b._db.read_one("SELECT expires < now() FROM lease")[0], timeout=10)
        eventually(lambda: _waiting_for_the_lease(b), timeout=10)
        assert voter.is_alive() and not elected
        _new(a, 2)
    voter.join(10)
    assert elected == [old + 1]
    assert a.get("20261206T120000Z-lease-0002") is not None  # committed before the election
    with a.owner(old), pytest.raises(NotLeaderError):
        _new(a, 3)
    lease_a.close()
    lease_b.close()


@pytest.mark.slow
def test_a_claim_carries_its_term_and_only_that_term_records_its_outcome(
    hosts: tuple[PgJournal, PgJournal],
) -> None:
    """approved → executing records the leader's term; after a takeover the old term may
    still record its own claim's outcome until the new term closes it, and nothing else."""
    a, b = hosts
    lease_a, old = _lead(a)
    done, closed = _new(a, 1, Status.APPROVED), _new(a, 2, Status.APPROVED)
    with a.owner(old):
        for rid in (done, closed):
            t = a.transition(rid, Status.EXECUTING, at=AT, by="executor", expect={Status.APPROVED})
            assert t is not None
    assert _claimed_term(a, done) == old
    lease_b, new = _lead(b)
    with b.owner(new):  # the new leader closes one claim of the old term as interrupted
        assert b.transition(
            closed, Status.FAILED, at=AT, by="executor", expect={Status.EXECUTING},
            fields={"error": "interrupted"},
        ) is not None  # fmt: skip
    with a.owner(old):
        assert a.transition(
            done, Status.EXECUTED, at=AT, by="executor", expect={Status.EXECUTING},
            fields={"result": "ok"},
        ) is not None  # fmt: skip
        with pytest.raises(NotLeaderError):  # closed already: no longer its claim
            a.transition(closed, Status.EXECUTED, at=AT, by="executor", expect={Status.EXECUTING})
    assert a.status_of(done) is Status.EXECUTED and a.status_of(closed) is Status.FAILED
    assert a.verify_chain() == []
    lease_a.close()
    lease_b.close()


@pytest.mark.slow
def test_run_once_leads_one_term_or_refuses_while_another_host_leads(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hitl-vault run --once`` on a shared journal acts only in a term of its own: refused
    while another host leads, and it hands its term back when done."""
    url = fresh_journal(pg_url)
    monkeypatch.setenv(JOURNAL_ENV, url)
    root = tmp_path / "vault"
    init_vault(root)
    with closing(PgJournal(url)) as other, Vault(root) as vault:
        lease = other.lease(30)
        term = lease.take()
        assert term is not None
        with pytest.raises(DaemonRunningError, match=f"leads in term {term}"):
            vault.run(once=True)
        lease.release(term)
        vault.run(once=True)
        leader = other.leader()
        assert leader is not None and leader.term == term + 1 and not leader.live
        lease.close()


def test_db_migrate_brings_a_schema_1_journal_to_the_lease(pg_url: str) -> None:
    """A journal made by the first version (no lease) is upgraded by ``db migrate``: the
    lease row is there, nobody leads yet, and its requests keep their rows."""
    import psycopg

    from hitl_vault.journal import pg_migrate

    url = fresh_journal(pg_url)
    with psycopg.connect(url, autocommit=True) as conn:  # back to what schema 1 had
        conn.execute("DROP TABLE lease")
        conn.execute("ALTER TABLE requests DROP COLUMN claimed_term")
        conn.execute("ALTER TABLE entries DROP COLUMN actor")
        conn.execute("ALTER TABLE entries DROP COLUMN credential")
        conn.execute("DROP INDEX requests_status_escalate")
        conn.execute("UPDATE meta SET value = '1' WHERE key = 'schema'")
    done = pg_migrate.migrate(url)
    assert (done.before, done.after) == (1, 5)
    with closing(PgJournal(url)) as store:
        assert store.leader() is None and not store.daemon_running()
        _new(store, 1)
        assert _claimed_term(store, "20261206T120000Z-lease-0001") is None
