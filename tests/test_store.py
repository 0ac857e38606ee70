"""The journal behind its interface: ``Vault(path, journal=...)`` uses the store it is given."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from hitl_vault import Status, Vault
from hitl_vault.engine.waiting import Waiting
from hitl_vault.errors import DuplicateError, JournalUnavailableError
from hitl_vault.journal.sqlite import Journal
from hitl_vault.store import JournalStore
from hitl_vault.testing import MemoryJournal
from hitl_vault.times import utcnow

from .helpers import VaultHelper, eventually, set_status


class Recording:
    """A JournalStore that hands every call to a real journal and remembers its name."""

    def __init__(self, inner: Journal) -> None:
        self.inner = inner
        self.calls: list[str] = []

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.inner, name)
        if callable(value):
            self.calls.append(name)
        return value


def test_a_vault_works_through_the_journal_it_is_given(tmp_path: Path, vault_path: Path) -> None:
    """Submit, approve, verify: all of it goes through the store passed in, nowhere else."""
    store = Recording(Journal(tmp_path / "elsewhere.db"))
    typed: JournalStore = store  # duck-typed, as a user's would be
    with Vault(vault_path, journal=typed) as vault:
        req = vault.submit("payment", {"amount": 900})
        vault.approve(req.id, by="alice")
        assert vault.get(req.id).status is Status.APPROVED
        assert vault.verify() == []
    assert {"create", "transition", "get"} <= set(store.calls)
    assert not (vault_path / ".hitl" / "journal.db").exists()  # the default one: never made


def test_the_journal_raises_its_own_errors_not_sqlite3s(tmp_path: Path) -> None:
    """A duplicate id and a lock held too long come out as hitl-vault's typed errors."""
    import sqlite3

    from hitl_vault.model import Request, Risk, Transition
    from hitl_vault.times import utcnow

    journal = Journal(tmp_path / "j.db")
    now = utcnow()
    request = Request(
        "20261130T000000Z-payment-abcdef", Status.PENDING, "payment", "", Risk.LOW, "r",
        "me", now, None, {}, history=(Transition(now, None, Status.PENDING, "me"),),
    )  # fmt: skip
    journal.create(request, None)
    with pytest.raises(DuplicateError, match="request 20261130T000000Z-payment-abcdef"):
        journal.create(request, None)
    other = sqlite3.connect(tmp_path / "j.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing, for longer than we wait
    try:
        journal.wait_for_lock(0.05)
        with pytest.raises(JournalUnavailableError, match="database is locked"):
            journal.transition(request.id, Status.APPROVED, at=now, by="alice")
    finally:
        other.execute("ROLLBACK")
        other.close()
        journal.close()


@pytest.mark.process
def test_a_vault_runs_on_a_memory_journal(vault_path: Path, helper: VaultHelper) -> None:
    """submit, approve, reject, cancel, wait_sync and run(once=True) work on a MemoryJournal,
    with the notes in a real folder and no journal file made."""
    helper.record_runs()
    journal = MemoryJournal()
    with Vault(vault_path, journal=journal) as vault:
        paid = vault.submit("payment", {"amount": 900})
        assert paid.status is Status.PENDING and paid.path is not None and paid.path.exists()
        assert vault.approve(paid.id, by="alice").status is Status.APPROVED
        refused = vault.submit("payment", {"amount": 901})
        assert vault.reject(refused.id, by="alice", reason="no").status is Status.REJECTED
        assert helper.note_path(refused.id).parent.name == "Rejected"
        withdrawn = vault.submit("payment", {"amount": 902})
        assert vault.cancel(withdrawn.id).status is Status.CANCELLED

        in_note = vault.submit("payment", {"amount": 903})  # decided by editing its note
        assert in_note.path is not None
        set_status(in_note.path, "rejected", decided_by="bob")
        assert vault.wait_sync(in_note.id, timeout=30).status is Status.REJECTED

        elsewhere = vault.submit("payment", {"amount": 904})  # decided by another thread
        decider = threading.Thread(
            target=lambda: (
                eventually(lambda: journal._m.wakers),  # the waiter listens to the journal
                vault.approve(elsewhere.id, by="carol"),
            )
        )
        decider.start()
        try:
            assert vault.wait_sync(elsewhere.id, timeout=30).status is Status.APPROVED
        finally:
            decider.join(30)

        vault.run(once=True)
        assert sorted(helper.runs()) == sorted([paid.id, elsewhere.id])
        for request_id in (paid.id, elsewhere.id):
            assert vault.get(request_id).status is Status.EXECUTED
            assert helper.note_path(request_id).parent.name == "Done"
        assert vault.verify() == []
        assert not journal.daemon_running()  # run() gave the lock back
    assert not (vault_path / ".hitl" / "journal.db").exists()


def test_closing_one_vault_leaves_the_waits_of_another_on_the_same_memory_journal(
    vault_path: Path,
) -> None:
    """Two Vaults given one MemoryJournal: closing one leaves the other's wakers listening."""
    journal = MemoryJournal()
    woken = threading.Event()
    leaving = Vault(vault_path, journal=journal)
    with Vault(vault_path, journal=journal) as staying, journal.watch(woken.set):
        leaving.close()
        staying.submit("payment", {"amount": 900})
        assert woken.wait(10)


def test_a_failing_waker_never_fails_a_memory_journal_write(vault_path: Path) -> None:
    """A waker that raises after a write is dropped: the write stands and the others wake."""
    journal = MemoryJournal()
    woken = threading.Event()

    def closed_loop() -> None:
        raise RuntimeError("Event loop is closed")

    with Vault(vault_path, journal=journal) as vault:
        with journal.watch(closed_loop), journal.watch(woken.set):
            request = vault.submit("payment", {"amount": 900})
            assert woken.wait(10)
        assert vault.get(request.id).status is Status.PENDING


def test_a_wait_woken_after_it_ended_raises_nothing(vault_path: Path) -> None:
    """The store may call a wait's waker just after the wait ended and closed its event loop:
    that call does nothing, rather than raise into the store's thread."""
    wakers: list[Callable[[], None]] = []

    @contextmanager
    def journal_watch(wake: Callable[[], None]) -> Iterator[None]:
        wakers.append(wake)
        yield

    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 900})
        vault.approve(request.id, by="alice")
        waiting = Waiting(vault_path, vault.get, utcnow, journal_watch)
        try:
            assert waiting.wait_sync(request.id, timeout=10).status is Status.APPROVED
        finally:
            waiting.close()
    (wake,) = wakers
    wake()  # its loop is closed now


def test_a_store_says_whether_its_writes_show_as_files(tmp_path: Path) -> None:
    """The SQLite journal's writes change files in .hitl/ (a daemon watching the vault takes
    those events as its word); the in-memory store has no files."""
    journal = Journal(tmp_path / ".hitl" / "journal.db")
    try:
        assert journal.files() == tmp_path / ".hitl"
    finally:
        journal.close()
    assert MemoryJournal().files() is None
