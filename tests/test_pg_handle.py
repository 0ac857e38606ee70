"""The PostgreSQL handle's SQL: the shared collaborators write ``?`` as SQLite takes it, and
psycopg is handed ``%s`` in its place, every other character as it was meant."""

from __future__ import annotations

from hitl_vault.journal.pg_access import PgAccess
from hitl_vault.journal.pg_db import PgDatabase
from hitl_vault.journal.pg_handle import PgHandle, pg_sql

from .pgserver import fresh_journal


def test_each_value_becomes_a_psycopg_placeholder() -> None:
    """Every ``?`` outside a quoted literal is a ``%s``; nothing else changes."""
    sql = "INSERT INTO cursors (name, seq) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"
    assert pg_sql(sql) == sql.replace("?", "%s")


def test_literals_and_percent_signs_are_kept() -> None:
    """A ``?`` inside a literal (quotes doubled or not) stays; a ``%`` anywhere is doubled,
    so psycopg passes it on as written rather than reading it as a placeholder."""
    sql = "SELECT 'why?', 'it''s ?' FROM t WHERE a LIKE 'x%' AND b = ? AND c % 2 = 0"
    assert pg_sql(sql) == (
        "SELECT 'why?', 'it''s ?' FROM t WHERE a LIKE 'x%%' AND b = %s AND c %% 2 = 0"
    )


def test_the_server_reads_them_as_written(pg_url: str) -> None:
    """PostgreSQL, through the handle, gets the value and the literals as SQLite would."""
    db = PgDatabase(fresh_journal(pg_url))
    try:
        row = PgHandle(db, PgAccess(db)._log).read_one("SELECT 'why?', 'a%' || ?, 7 % ?", ("b", 4))
    finally:
        db.close()
    assert tuple(row) == ("why?", "a%b", 3)
