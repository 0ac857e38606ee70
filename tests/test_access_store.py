"""The SQLite journal's people, credentials and service log beyond the shared contract: a
journal made before them gains their tables, and a row hitl-vault did not write is named."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hitl_vault.errors import JournalDamagedError
from hitl_vault.identity import Credential, Person, Role
from hitl_vault.journal.sqlite import Journal

T0 = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)


def test_a_journal_made_before_people_gains_their_tables_on_open(tmp_path: Path) -> None:
    """Opening a journal without the new tables creates them, keeping what it held."""
    path = tmp_path / ".hitl" / "journal.db"
    Journal(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    for table in ("people", "credentials", "settings", "service_log"):
        db.execute(f"DROP TABLE {table}")
    db.execute("CREATE TABLE IF NOT EXISTS kept (x)")
    db.close()
    journal = Journal(path)
    try:
        assert journal.people() == [] and journal.service_log() == []
        journal.save_person(Person("alice"), T0, "owner", "person added")
        assert journal.person("alice") is not None and journal.verify_chain() == []
    finally:
        journal.close()


def test_a_person_row_hitl_vault_did_not_write_is_damage(tmp_path: Path) -> None:
    """A person whose uids are not a list of numbers reads as JournalDamagedError, not a crash."""
    path = tmp_path / ".hitl" / "journal.db"
    journal = Journal(path)
    try:
        journal.save_person(Person("alice", (1001,)), T0, "owner", "person added")
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("UPDATE people SET uids = '\"root\"'")
        db.close()
        with pytest.raises(JournalDamagedError, match="uids"):
            journal.person("alice")
    finally:
        journal.close()


def test_verify_names_a_row_under_another_key_or_unreadable(tmp_path: Path) -> None:
    """A credential moved to another name's key, or a person unreadable, is named by verify."""
    path = tmp_path / ".hitl" / "journal.db"
    journal = Journal(path)
    try:
        journal.save_person(Person("alice", (1001,)), T0, "owner", "person added")
        journal.add_credential(
            Credential("c1", "bot", Role.AGENT, "ab" * 32, T0, None), T0, "owner"
        )
        assert journal.verify_chain() == []
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("UPDATE credentials SET key = 'alice'")
        db.execute("UPDATE people SET uids = '\"root\"'")
        db.close()
        problems = journal.verify_chain()
        assert [p for p in problems if p.startswith("token c1 (bot): kept under another")]
        assert [p for p in problems if p.startswith("person alice: a row hitl-vault did not")]
    finally:
        journal.close()
