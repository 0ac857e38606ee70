"""What a review of the PostgreSQL journal found: an import into a journal with rows in any
table, a head row moved back past a removed entry, a URL's ``sslpassword``, the claiming
term's sole right to close a claim (a re-run after a takeover claims it anew), and a frozen
daemon's action ended at its timeout all the same (the watchdog)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from hitl_vault import Vault
from hitl_vault.cli.main import cli
from hitl_vault.daemon.workers import INTERRUPTED
from hitl_vault.errors import NotLeaderError, ServerJournalError, UsageError
from hitl_vault.execute.executor import run_command
from hitl_vault.identity import Person
from hitl_vault.journal.pg import PgJournal
from hitl_vault.journal.pg_db import Conflict, typed
from hitl_vault.journal.pg_migrate import import_sqlite
from hitl_vault.journal.pg_url import check_url, shown
from hitl_vault.journal.sqlite import Journal
from hitl_vault.model import Kind, Request, Risk, Status

from .helpers import eventually
from .pgserver import fresh_journal
from .test_pg_lease import _claimed_term, _lead, _new

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def test_import_refuses_a_journal_with_rows_in_any_table_naming_it(
    pg_url: str, tmp_path: Path
) -> None:
    """db import refuses a server journal holding a person already, naming the table."""
    url = fresh_journal(pg_url)
    local = Journal(tmp_path / "journal.db")
    local.save_person(Person("alice"), AT, "admin", "person added")
    local.close()
    with closing(PgJournal(url)) as server:
        server.save_person(Person("bob"), AT, "admin", "person added")
    with pytest.raises(ServerJournalError, match="rows in people already") as caught:
        import_sqlite(url, tmp_path / "journal.db")
    assert "db migrate" in caught.value.fix
    with closing(PgJournal(url)) as server:
        assert [p.name for p in server.people()] == ["bob"]  # nothing changed


def test_cli_import_into_a_journal_with_people_says_so_without_a_traceback(
    pg_url: str, vault_path: Path
) -> None:
    """`db import` into a journal that has a person exits 1 with the table and the fix."""
    url = fresh_journal(pg_url)
    with Vault(vault_path) as vault:
        vault.submit("payment", {"amount": 5})
    with closing(PgJournal(url)) as server:
        server.save_person(Person("bob"), AT, "admin", "person added")
    result = CliRunner().invoke(cli, ["--vault", str(vault_path), "db", "import", "--journal", url])
    assert result.exit_code == 1, result.output
    assert "rows in people already" in result.output and "db migrate" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_verify_reports_the_newest_entry_removed_and_the_head_moved_back(pg_url: str) -> None:
    """verify finds the newest entry deleted when head.seq was decremented to match."""
    url = fresh_journal(pg_url)
    with closing(PgJournal(url)) as store:
        for n in range(3):
            _new(store, n)
        assert store.verify_chain() == []
        with psycopg.connect(url, autocommit=True) as db:
            db.execute("DELETE FROM entries WHERE seq = (SELECT max(seq) FROM entries)")
            db.execute("UPDATE head SET seq = seq - 1")
        problems = store.verify_chain()
    assert problems and "journal entry 2" in problems[0], problems


@pytest.mark.parametrize("key", ["sslpassword", "SSLPassword", "PASSWORD"])
def test_a_url_with_an_sslpassword_is_refused_and_masked(key: str) -> None:
    """sslpassword (any case) is refused like password, and never shown."""
    url = f"postgresql://hitl@db/x?sslmode=require&{key}=s3cret"
    with pytest.raises(UsageError, match="holds a password"):
        check_url(url)
    assert "s3cret" not in shown(url) and f"{key}=***" in shown(url)


@pytest.fixture
def hosts(pg_url: str) -> Iterator[tuple[PgJournal, PgJournal]]:
    """Two stores on one fresh journal: two hosts."""
    url = fresh_journal(pg_url)
    with closing(PgJournal(url)) as a, closing(PgJournal(url)) as b:
        yield a, b


def _claimed_by_a_then_b_leads(a: PgJournal, b: PgJournal) -> tuple[str, int, int]:
    """A request term A claimed, then A's lease ran out and B leads: (id, A's, B's term)."""
    lease_a, ta = _lead(a)  # a quarter of a second: it runs out while B waits for it
    lease_a.close()
    rid = _new(a, 1, Status.APPROVED)
    with a.owner(ta):
        assert a.transition(rid, Status.EXECUTING, at=AT, by="executor", expect={Status.APPROVED})
    with closing(b.lease(60)) as lease_b:  # B's term outlasts the test
        tb = eventually(lease_b.take, timeout=10)
    assert isinstance(tb, int)
    return rid, ta, tb


@pytest.mark.slow
def test_a_rerun_is_claimed_and_journaled_so_the_old_terms_late_outcome_is_refused(
    hosts: tuple[PgJournal, PgJournal],
) -> None:
    """After B re-claims A's claim, A's late outcome is refused and B's re-run's counts."""
    a, b = hosts
    rid, ta, tb = _claimed_by_a_then_b_leads(a, b)
    with b.owner(tb):
        rerun = b.reclaim(rid, AT)
        assert rerun is not None and rerun.kind is Kind.RERUN
        assert b.reclaim(rid, AT) is None  # claimed once
    assert _claimed_term(b, rid) == tb
    with a.owner(ta), pytest.raises(NotLeaderError):
        a.transition(
            rid, Status.FAILED, at=AT, by="executor", expect={Status.EXECUTING},
            fields={"executed_at": AT, "error": "the old run's late outcome"},
        )  # fmt: skip
    with b.owner(tb):
        done = b.transition(
            rid, Status.EXECUTED, at=AT, by="executor", expect={Status.EXECUTING},
            fields={"executed_at": AT},
        )  # fmt: skip
    assert done is not None and b.status_of(rid) is Status.EXECUTED
    assert [e.kind for e in b.entries(rid)][-2:] == ["rerun", "transition"]
    assert b.verify_chain() == []


@pytest.mark.slow
def test_a_new_leader_records_no_outcome_of_an_earlier_claim_but_interrupted(
    hosts: tuple[PgJournal, PgJournal],
) -> None:
    """Term B cannot record how term A's claimed action went, only call it interrupted."""
    a, b = hosts
    rid, _, tb = _claimed_by_a_then_b_leads(a, b)
    with b.owner(tb):
        ran = b.transition(
            rid, Status.EXECUTED, at=AT, by="executor", expect={Status.EXECUTING},
            fields={"executed_at": AT},
        )  # fmt: skip
        assert ran is None and b.status_of(rid) is Status.EXECUTING
        closed = b.transition(
            rid, Status.FAILED, at=AT, by="executor", expect={Status.EXECUTING},
            fields={"executed_at": AT, "error": INTERRUPTED},
        )  # fmt: skip
    assert closed is not None and b.status_of(rid) is Status.FAILED


_FROZEN_DAEMON = """
import pathlib, sys
from datetime import UTC, datetime
from hitl_vault.execute import processes
from hitl_vault.execute.executor import run_command
from hitl_vault.model import Request, Risk, Status
processes.KILL_GRACE = 0.2
at = datetime(2026, 12, 6, tzinfo=UTC)
request = Request(
    id="20261206T000000Z-frozen-0001", status=Status.EXECUTING, action="a", summary="s",
    risk=Risk.LOW, rule="r", requested_by="bot", created=at, expires=None, params={},
    history=(),
)
pid_file = sys.argv[1]
run_command(
    ("sh", "-c", f"echo $$ > {pid_file}.tmp; mv {pid_file}.tmp {pid_file}; exec sleep 60"),
    request, cwd=pathlib.Path(pid_file).parent, timeout=0.3, watched=True,
)
"""


def _running(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not reaped by its frozen parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


@pytest.mark.process
@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="the watchdog needs /proc (Linux)")
def test_a_frozen_daemons_action_is_ended_at_its_timeout_by_the_watchdog(tmp_path: Path) -> None:
    """A watched run: program is ended at its deadline even while its daemon is SIGSTOPped."""
    pid_file = tmp_path / "pid"
    daemon = subprocess.Popen([sys.executable, "-c", _FROZEN_DAEMON, str(pid_file)])
    try:
        # Frozen once its program runs and that program's watchdog is started (under load,
        # a freeze between the two would leave no watchdog to test).
        eventually(lambda: pid_file.exists() and _watchdog_of(daemon.pid), timeout=20)
        os.kill(daemon.pid, signal.SIGSTOP)  # frozen: its own timeout can no longer act
        program = int(pid_file.read_text())
        eventually(lambda: not _running(program), timeout=20)
    finally:
        daemon.kill()
        daemon.wait()


def _watchdog_of(parent: int) -> bool:
    """Whether a watchdog that ``parent`` started runs now."""
    for pid in _watchdogs():
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            if int(stat.rpartition(")")[2].split()[1]) == parent:
                return True
    return False


def _watchdogs() -> list[int]:
    """The watchdog processes running now."""
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and b"deadline.py" in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
    return found


@pytest.mark.process
@pytest.mark.skipif(sys.platform != "linux", reason="the watchdog needs /proc (Linux)")
def test_a_watched_run_keeps_its_exit_code_and_output_and_its_watchdog_ends(
    tmp_path: Path,
) -> None:
    """Watched or not, a run's outcome is the same, and no watchdog outlives it."""
    request = Request(
        id="20261206T000000Z-watched-0001", status=Status.EXECUTING, action="a", summary="s",
        risk=Risk.LOW, rule="r", requested_by="bot", created=AT, expires=None, params={},
        history=(),
    )  # fmt: skip
    before = set(_watchdogs())
    for argv in (("sh", "-c", "echo out; echo err >&2; exit 3"), ("sh", "-c", "cat")):
        plain = run_command(argv, request, cwd=tmp_path, timeout=10)
        watched = run_command(argv, request, cwd=tmp_path, timeout=10, watched=True)
        assert (watched.ok, watched.result, watched.error) == (plain.ok, plain.result, plain.error)
    assert set(_watchdogs()) <= before


def test_a_unique_key_clash_becomes_a_typed_error_with_the_fix(pg_url: str) -> None:
    """A driver's unique-key clash is a ServerJournalError naming the key and the fix."""
    url = fresh_journal(pg_url)
    with (
        psycopg.connect(url, autocommit=True) as db,
        pytest.raises(psycopg.IntegrityError) as raised,
    ):
        db.execute("INSERT INTO meta (key, value) VALUES ('schema', '2')")
    error = typed("db", raised.value)
    assert isinstance(error, Conflict) and isinstance(error, ServerJournalError)
    assert error.constraint and error.constraint in str(error) and "retry" in error.fix
