"""A host on a PostgreSQL journal: choosing it, ``db migrate`` and ``db import``, the vault
recorded in ``.hitl/``, schemas of other versions, and the driver's errors made ours."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from hitl_vault import Vault
from hitl_vault.cli.main import cli
from hitl_vault.errors import ServerDamagedError, ServerJournalError, ServerUnavailableError
from hitl_vault.journal.pg import PgJournal
from hitl_vault.journal.pg_host import RECORD_FILE, open_journal
from hitl_vault.journal.pg_url import JOURNAL_ENV
from hitl_vault.model import Status

from .pgserver import fresh_journal


def _run(*args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return result.exit_code, result.output


def _sql(url: str, statement: str) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(statement.encode())


def test_a_url_with_a_password_is_refused_with_the_reason(vault_path: Path) -> None:
    """--journal with a password exits 2 naming the option and where the password goes,
    never showing it; the same from the environment."""
    code, out = _run("--vault", str(vault_path), "run", "--once", "--journal",
                     "postgresql://ops:secret@db.example/hitl")  # fmt: skip
    assert code == 2 and "--journal: the URL holds a password" in out and "pgpass" in out
    assert "secret" not in out
    code, out = _run("db", "migrate", env={JOURNAL_ENV: "postgresql://db/x?password=secret"})
    assert code == 2 and f"{JOURNAL_ENV}: the URL holds a password" in out


def test_a_host_on_the_server_records_there_and_names_its_vault(
    pg_url: str, vault_path: Path
) -> None:
    """db migrate again has nothing to do; a vault on the server records its requests there,
    .hitl/ names the server's vault, and no local journal is made."""
    url = fresh_journal(pg_url)
    code, out = _run("db", "migrate", "--journal", url)
    assert code == 0 and "schema 5 (up to date)" in out, out
    with Vault(vault_path, journal=open_journal(vault_path, url)) as vault:
        request = vault.submit("payment", {"amount": 5000})
    with closing(PgJournal(url)) as store:
        assert store.status_of(request.id) is Status.PENDING
        assert store.vault_id in (vault_path / ".hitl" / RECORD_FILE).read_text()
    assert not (vault_path / ".hitl" / "journal.db").exists()


def test_a_recorded_vault_refuses_another_database_and_a_local_journal(
    pg_url: str, vault_path: Path
) -> None:
    """Once .hitl/ names a server's vault: another vault's database is refused, naming both,
    and a command without the server refuses to open a local SQLite journal."""
    first, other = fresh_journal(pg_url), fresh_journal(pg_url)
    open_journal(vault_path, first).close()
    with pytest.raises(ServerJournalError, match="names vault"):
        open_journal(vault_path, other)
    code, out = _run("--vault", str(vault_path), "list", env={JOURNAL_ENV: ""})
    assert code == 1 and "this vault's journal is on a server" in out and JOURNAL_ENV in out
    assert not (vault_path / ".hitl" / "journal.db").exists()
    code, out = _run("--vault", str(vault_path), "list", env={JOURNAL_ENV: first})
    assert code == 0, out


def test_an_unmigrated_or_newer_schema_is_refused_with_the_fix(pg_url: str) -> None:
    """A database with no journal says to run db migrate; one of a newer schema is refused by
    the store and by db migrate, which changes nothing."""
    url = fresh_journal(pg_url)
    bare = url.rsplit("%3D", 1)[0] + "%3Dnowhere_at_all"
    with pytest.raises(ServerJournalError, match="db migrate"):
        PgJournal(bare)
    _sql(url, "UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(ServerJournalError, match="newer than this hitl-vault"):
        PgJournal(url)
    code, out = _run("db", "migrate", "--journal", url)
    assert code == 1 and "newer than this hitl-vault" in out and "nothing was changed" in out


def test_a_server_that_cannot_be_reached_is_unavailable(tmp_path: Path) -> None:
    """No server at the socket: ServerUnavailableError (try again), never a driver error."""
    url = f"postgresql://hitl@/postgres?host={tmp_path}&connect_timeout=2"
    with pytest.raises(ServerUnavailableError, match="cannot be used just now"):
        PgJournal(url)


def test_a_lost_connection_is_unavailable_then_found_again(pg_url: str) -> None:
    """The server ends the store's connection: that one call is ServerUnavailableError, and
    the next opens a new connection."""
    url = fresh_journal(pg_url)
    with closing(PgJournal(url)) as store:
        (pid,) = store._db.read_one("SELECT pg_backend_pid()")  # its connection's, only
        _sql(pg_url, f"SELECT pg_terminate_backend({int(pid)})")
        with pytest.raises(ServerUnavailableError):
            store.last_seq()
        assert store.last_seq() == 0


def test_db_import_moves_a_sqlite_journal_with_its_chain(pg_url: str, vault_path: Path) -> None:
    """db import copies every request and entry (verify is clean on the server) and the link
    key, records the server in .hitl/, moves the local file aside, and refuses a second time."""
    url = fresh_journal(pg_url)
    with Vault(vault_path) as vault:
        kept = vault.submit("payment", {"amount": 5000})
        vault.approve(kept.id, by="alice")
        later = vault.submit("payment", {"amount": 7000})
        key = vault.engine.journal.link_key()
    code, out = _run("--vault", str(vault_path), "db", "import", "--journal", url)
    assert code == 0 and "imported 2 requests" in out, out
    assert (vault_path / ".hitl" / "journal.db.imported").is_file()
    code, out = _run("--vault", str(vault_path), "verify", env={JOURNAL_ENV: url})
    assert code == 0 and "ok: 2 requests" in out, out
    with Vault(vault_path, journal=open_journal(vault_path, url)) as vault:
        assert vault.get(kept.id).status is Status.APPROVED
        assert vault.get(later.id).status is Status.PENDING
        vault.reject(later.id, by="alice")  # appends after the imported chain
        assert vault.verify() == []
        assert vault.engine.journal.link_key() == key  # links sent before stay good
    code, out = _run("--vault", str(vault_path), "db", "import", "--journal", url)
    assert code == 1 and "on a server already" in out


def test_tables_or_rows_hitl_vault_did_not_write_are_damage(pg_url: str) -> None:
    """A table dropped behind the journal's back, or a row with a status no one writes, is
    ServerDamagedError naming the problem, never a driver error or a traceback."""
    url = fresh_journal(pg_url)
    with closing(PgJournal(url)) as store:
        _sql(url, "INSERT INTO requests (id, action, status, summary, risk, rule, requested_by, "
                  "created, params, params_sha_created) VALUES ('r1', 'a', 'bogus', 's', 'low', "
                  "'r', 'b', '2026-12-06T12:00:00Z', '{}', 'x')")  # fmt: skip
        with pytest.raises(ServerDamagedError, match="a row hitl-vault did not write"):
            store.requests()
        _sql(url, "DROP TABLE attention")
        with pytest.raises(ServerDamagedError, match="not what hitl-vault made"):
            store.attention()
