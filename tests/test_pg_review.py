"""What a review of the PostgreSQL journal found: an import into a journal with rows in any
table, a head row moved back past a removed entry, a URL's ``sslpassword``, and the claiming
term's sole right to close a claim (a re-run after a takeover claims it anew)."""

from __future__ import annotations

from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from hitl_vault import Vault
from hitl_vault.cli.main import cli
from hitl_vault.errors import ServerJournalError, UsageError
from hitl_vault.identity import Person
from hitl_vault.journal.pg import PgJournal
from hitl_vault.journal.pg_migrate import import_sqlite
from hitl_vault.journal.pg_url import check_url, shown
from hitl_vault.journal.sqlite import Journal

from .pgserver import fresh_journal
from .test_pg_lease import _new

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
