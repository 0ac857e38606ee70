"""The SQLite journal: transitions happen once, the hash chain detects tampering."""

from __future__ import annotations

import sqlite3
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from hitl_vault.errors import IllegalTransitionError, JournalMissingError, RequestNotFoundError
from hitl_vault.journal.sqlite import Journal
from hitl_vault.model import Request, Risk, Status, Transition
from hitl_vault.notes.render import history_line
from hitl_vault.params import params_sha

T0 = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)


def _request(rid: str = "20261122T101500Z-payment-7f3a2c", **kw: object) -> Request:
    fields: dict[str, object] = dict(
        id=rid, status=Status.PENDING, action="payment", summary="s", risk=Risk.HIGH,
        rule="large-payments", requested_by="bot", created=T0, expires=T0 + timedelta(hours=1),
        params={"amount": 1500},
        history=(Transition(T0, None, Status.PENDING, "bot", details=("rule large-payments",)),),
    )  # fmt: skip
    fields.update(kw)
    return Request(**fields)  # type: ignore[arg-type]


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(tmp_path / ".hitl" / "journal.db")
    yield j
    j.close()


def test_state_folder_is_owner_only(tmp_path: Path) -> None:
    """.hitl/ and the database are created readable by the owner alone."""
    j = Journal(tmp_path / ".hitl" / "journal.db")
    j.close()
    assert stat.S_IMODE((tmp_path / ".hitl").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / ".hitl" / "journal.db").stat().st_mode) == 0o600


def test_create_and_get_round_trip(journal: Journal) -> None:
    """A created request reads back with the same fields and its first history entry."""
    journal.create(_request(), "Pending_Approval/x.md")
    got = journal.get("20261122T101500Z-payment-7f3a2c")
    assert got is not None
    assert (got.status, got.params, got.expires, got.path) == (
        Status.PENDING, {"amount": 1500}, T0 + timedelta(hours=1), Path("Pending_Approval/x.md"),
    )  # fmt: skip
    assert [history_line(t) for t in got.history] == [
        "- 2026-11-22T10:15:00Z · created → pending · by bot · rule large-payments"
    ]


def test_transition_happens_once(journal: Journal) -> None:
    """Two deciders racing on one pending request: exactly one transition is recorded."""
    journal.create(_request(), None)
    rid = "20261122T101500Z-payment-7f3a2c"
    results: list[Transition | None] = []
    barrier = threading.Barrier(8)

    def decide() -> None:
        barrier.wait()
        results.append(
            journal.transition(rid, Status.APPROVED, at=T0, by="alice", expect={Status.PENDING})
        )

    threads = [threading.Thread(target=decide) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(r is not None for r in results) == 1
    assert len(journal.history(rid)) == 2


def test_two_processes_share_the_journal(tmp_path: Path) -> None:
    """A second connection (another process) sees the first one's commits and cannot redo them."""
    a = Journal(tmp_path / "j.db")
    b = Journal(tmp_path / "j.db")
    a.create(_request(), None)
    rid = "20261122T101500Z-payment-7f3a2c"
    assert a.transition(rid, Status.APPROVED, at=T0, by="x", expect={Status.PENDING}) is not None
    assert b.transition(rid, Status.APPROVED, at=T0, by="y", expect={Status.PENDING}) is None
    assert b.status_of(rid) is Status.APPROVED
    a.close()
    b.close()


def test_illegal_moves_are_refused(journal: Journal) -> None:
    """pending cannot become executed; unknown ids are named."""
    journal.create(_request(), None)
    with pytest.raises(IllegalTransitionError, match="cannot become executed"):
        journal.transition("20261122T101500Z-payment-7f3a2c", Status.EXECUTED, at=T0, by="x")
    with pytest.raises(RequestNotFoundError, match="nope"):
        journal.transition("nope", Status.APPROVED, at=T0, by="x")


def test_approval_records_the_params_hash(journal: Journal) -> None:
    """The params' SHA-256 is kept at creation and at approval; the approved params are stored."""
    journal.create(_request(), None)
    rid = "20261122T101500Z-payment-7f3a2c"
    journal.transition(rid, Status.APPROVED, at=T0, by="alice", fields={"params": {"amount": 1000}})
    row = journal._db.db.execute(
        "SELECT params_sha_created, params_sha_approved FROM requests WHERE id = ?", (rid,)
    ).fetchone()
    assert row == (params_sha({"amount": 1500}), params_sha({"amount": 1000}))
    got = journal.get(rid)
    assert got is not None and got.params == {"amount": 1000}


def test_hash_chain_detects_edits_and_deletions(tmp_path: Path) -> None:
    """Editing or deleting a journal entry breaks the chain, and verify names the entry."""
    j = Journal(tmp_path / "j.db")
    for n in range(3):
        j.create(_request(f"20261122T101500Z-payment-00000{n}"), None)
    assert j.verify_chain() == []
    j.close()
    db = sqlite3.connect(tmp_path / "j.db")
    db.execute("UPDATE entries SET by = 'mallory' WHERE seq = 2")
    db.commit()
    db.close()
    j = Journal(tmp_path / "j.db")
    problems = j.verify_chain()
    assert problems == [
        "journal entry 2 (20261122T101500Z-payment-000001): its content does not match its hash "
        "(it was edited after it was written)"
    ]
    j.close()
    db = sqlite3.connect(tmp_path / "j.db")
    db.execute("DELETE FROM entries WHERE seq = 2")
    db.commit()
    db.close()
    j = Journal(tmp_path / "j.db")
    assert any("entry 3" in p and "removed or inserted" in p for p in j.verify_chain())
    j.close()


def test_expiry_index(journal: Journal) -> None:
    """Pending requests come back soonest first, and only those due by the given time."""
    journal.create(
        _request("20261122T101500Z-payment-00000a", expires=T0 + timedelta(hours=2)), None
    )
    journal.create(
        _request("20261122T101500Z-payment-00000b", expires=T0 + timedelta(hours=1)), None
    )
    assert journal.next_expiry() == T0 + timedelta(hours=1)
    due = journal.expiring(before=T0 + timedelta(minutes=90))
    assert [rid for rid, _ in due] == ["20261122T101500Z-payment-00000b"]


def test_attention_flags(journal: Journal) -> None:
    """A flag is news once, is replaced when its message changes, and goes away when cleared."""
    assert journal.flag("Pending_Approval/a.md", "bad", T0) is True
    assert journal.flag("Pending_Approval/a.md", "bad", T0) is False
    assert journal.flag("Pending_Approval/a.md", "worse", T0) is True
    assert [a.message for a in journal.attention()] == ["worse"]
    journal.unflag("Pending_Approval/a.md")
    assert journal.attention() == []


def test_writes_the_notes_can_restore_leave_every_transition_durable(tmp_path: Path) -> None:
    """Where a note is and its digest commit without an fsync; transitions keep theirs."""
    journal = Journal(tmp_path / ".hitl" / "journal.db")
    try:
        journal.create(_request(), "Pending_Approval/x.md")
        journal.set_path("20261122T101500Z-payment-7f3a2c", "Approved/x.md", "ab" * 32, 1)
        journal.flag("Inbox/bad.md", "bad", T0)
        full = 2
        assert journal._db.db.execute("PRAGMA synchronous").fetchone()[0] == full
        other = Journal(tmp_path / ".hitl" / "journal.db")
        try:  # committed and visible to other processes all the same
            assert other.note_sha("20261122T101500Z-payment-7f3a2c") == ("Approved/x.md", "ab" * 32)
        finally:
            other.close()
    finally:
        journal.close()


def test_a_failing_waker_never_stops_the_journal_watcher(journal: Journal) -> None:
    """A waker that raises (a wait whose event loop closed meanwhile) is dropped; the other
    wakers are still called, on this change and the next: the watcher's thread lives on."""
    failed: list[str] = []
    woken = threading.Event()

    def closed_loop() -> None:
        failed.append("called")
        raise RuntimeError("Event loop is closed")

    def wake() -> None:
        woken.set()

    with journal.watch(closed_loop), journal.watch(wake):
        journal.create(_request("20261122T101500Z-payment-000001"), None)
        assert woken.wait(10)
        woken.clear()
        journal.create(_request("20261122T101500Z-payment-000002"), None)
        assert woken.wait(10)
    assert failed == ["called"]


def test_a_closed_journal_starts_no_watcher(tmp_path: Path) -> None:
    """Watching a journal after close() starts no thread that nothing would stop."""
    journal = Journal(tmp_path / ".hitl" / "journal.db")
    journal.close()
    before = set(threading.enumerate())
    with journal.watch(lambda: None):
        assert set(threading.enumerate()) - before == set()


def test_a_journal_open_twice_in_one_process_still_sees_its_file_go(tmp_path: Path) -> None:
    """Two journals on one file in one process share what watches the file: closing the
    first leaves the second able to tell that the file was deleted under it."""
    path = tmp_path / ".hitl" / "journal.db"
    first, second = Journal(path), Journal(path)
    try:
        first.create(_request(), None)
        first.close()
        assert second.status_of(_request().id) is Status.PENDING
        path.unlink()
        with pytest.raises(JournalMissingError, match="deleted or replaced"):
            second.create(_request("20261122T101500Z-payment-000003"), None)
    finally:
        second.close()


@pytest.mark.process
def test_a_second_journal_on_the_file_keeps_the_first_ones_sqlite_locks(tmp_path: Path) -> None:
    """Opening and closing a second journal on the same file in one process leaves the first
    one's SQLite locks in place: another process still cannot take the file out of WAL mode
    (closing any fd on a file drops every POSIX lock the process holds on it)."""
    path = tmp_path / ".hitl" / "journal.db"
    first = Journal(path)
    try:
        first.counts()
        Journal(path).close()
        probe = (
            "import sqlite3, sys\n"
            "db = sqlite3.connect(sys.argv[1], timeout=0)\n"
            "print(db.execute('PRAGMA journal_mode=DELETE').fetchone()[0])\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", probe, str(path)], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 1 and "database is locked" in done.stderr, done
    finally:
        first.close()


def test_a_journal_found_gone_stays_gone_after_it_is_closed(tmp_path: Path) -> None:
    """Once a journal was found deleted, asking it again (a thread still at work while the
    daemon closes it) says the same, never a closed-connection error or a second copy."""
    path = tmp_path / ".hitl" / "journal.db"
    journal = Journal(path)
    path.unlink()
    with pytest.raises(JournalMissingError) as first:
        journal.create(_request(), None)
    journal.close()
    with pytest.raises(JournalMissingError) as again:
        journal.feed(0)
    assert str(again.value) == str(first.value)
    assert len(list(path.parent.glob("journal.db.rescued-*"))) == 1


def test_opening_waits_out_another_connections_lock(tmp_path: Path) -> None:
    """A process opening the journal while another holds its write lock waits for it (within
    the open's bound) instead of failing "locked" at once."""
    path = tmp_path / ".hitl" / "journal.db"
    Journal(path).close()
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    released = threading.Timer(0.5, holder.execute, ("COMMIT",))
    released.start()
    try:
        journal = Journal(path)  # set-up writes the schema: it needs the lock the holder has
        journal.close()
    finally:
        released.join()
        holder.close()


def _vm_steps(journal: Journal, ask: Callable[[], object]) -> int:
    """How many steps of SQLite's virtual machine answering ``ask`` took (in hundreds)."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0  # go on

    db = journal._db.db
    db.set_progress_handler(count, 100)
    try:
        ask()
    finally:
        db.set_progress_handler(None, 100)
    return steps[0]


def test_the_daemons_questions_of_each_step_cost_the_same_however_many_requests_wait(
    journal: Journal,
) -> None:
    """Every step of the daemon asks when the next request expires and escalates, and which
    are due: with 2,000 requests pending, each is answered from an index as with 5, never by
    reading every pending request."""
    later = T0 + timedelta(hours=5)

    def pending(count: int, start: int) -> None:
        with journal.batch():
            for i in range(start, start + count):
                journal.create(
                    _request(f"20261122T101500Z-payment-{i:06x}", escalate_at=later), None
                )

    questions: list[Callable[[], object]] = [
        journal.next_expiry,
        journal.next_escalation,
        lambda: journal.expiring(before=T0),
        lambda: journal.escalating(before=T0),
    ]
    pending(5, 0)
    few = [_vm_steps(journal, ask) for ask in questions]
    pending(2000, 5)
    many = [_vm_steps(journal, ask) for ask in questions]
    assert journal.next_escalation() == later  # (the questions see them all)
    assert all(m <= f + 5 for f, m in zip(few, many, strict=True)), (few, many)
