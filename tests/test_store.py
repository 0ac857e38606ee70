"""The journal behind its interface: ``Vault(path, journal=...)`` uses the store it is given."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from hitl_vault import Status, Vault
from hitl_vault.errors import DuplicateError, JournalUnavailableError
from hitl_vault.journal.sqlite import Journal
from hitl_vault.store import JournalStore


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
