"""Making and upgrading the PostgreSQL journal's tables (``hitl-vault db migrate``), and
moving a SQLite journal into them (``hitl-vault db import``).

Hosts never do either by themselves: a store refuses a database whose schema is not its
own (:func:`~.pg_db.check_schema`). A migration runs in one transaction under an advisory
lock, so two hosts that run it at once make the tables once; a schema newer than this code
is refused, never touched. An import copies every table as it is, in one transaction, into
a journal that holds no entries yet, and sets the head row to the last entry copied: the
chain is the same chain, and ``verify`` checks it.
"""

from __future__ import annotations

import secrets
import sqlite3
import uuid
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from ..chain import GENESIS
from ..errors import ServerJournalError
from .pg_db import LOCK_CLASS, SCHEMA_VERSION, Conflict, connect, schema_version, typed
from .pg_url import shown
from .sqlite import Journal

# Each version's script, applied in order from the one a database has (v1: the tables, v2:
# the leadership lease and the claiming term, v3: each entry's actor, v4: its credential,
# v5: an index for the daemon's escalation questions).
_SCRIPTS = {
    v: f"pg_schema_{v}.sql" if v > 1 else "pg_schema.sql" for v in range(1, SCHEMA_VERSION + 1)
}
_MIGRATE_KEY = 0  # the advisory lock (LOCK_CLASS, 0): one migration at a time per database
_REPEAT = 10_000  # rows copied per statement by an import


@dataclass(frozen=True)
class Migrated:
    """What ``db migrate`` did: the schema before and after, and the vault's id."""

    before: int
    after: int
    vault_id: str


def migrate(url: str) -> Migrated:
    """Make or upgrade the journal's tables at ``url`` to this code's schema."""
    where = shown(url)
    conn = connect(url)
    try:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s, %s)", (LOCK_CLASS, _MIGRATE_KEY))
            before = schema_version(conn)
            if before > SCHEMA_VERSION:
                raise ServerJournalError(
                    where,
                    f"holds a journal of schema {before}, newer than this hitl-vault knows",
                    "run `db migrate` with the version the other hosts run; nothing was changed",
                )
            for version in range(before + 1, SCHEMA_VERSION + 1):
                script = resources.files("hitl_vault.journal").joinpath(_SCRIPTS[version])
                conn.execute(script.read_text(encoding="utf-8").encode("utf-8"))
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('schema', %s) ON CONFLICT (key) "
                "DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
            conn.execute(
                "INSERT INTO meta (key, value) VALUES ('vault', %s) ON CONFLICT DO NOTHING",
                (uuid.uuid4().hex,),
            )
            conn.execute(
                "INSERT INTO head (seq, hash, service_seq, service_hash) VALUES (0, %s, 0, %s) "
                "ON CONFLICT DO NOTHING",
                (GENESIS, GENESIS),
            )
            conn.execute(  # the key that signs decision links: made once, kept ever after
                "INSERT INTO link_key (id, key) VALUES (1, %s) ON CONFLICT DO NOTHING",
                (secrets.token_bytes(32),),
            )
            row = conn.execute("SELECT value FROM meta WHERE key = 'vault'").fetchone()
            assert row is not None  # inserted just above if it was not there
    except psycopg.Error as e:
        raise typed(where, e) from None
    finally:
        conn.close()
    return Migrated(before, SCHEMA_VERSION, str(row[0]))


# The tables an import copies, in an order that keeps every reference: SQLite's rowid order
# is kept for those whose order counts (`n`), and each entry's seq as it was.
_TABLES = (
    ("requests", "rowid"),
    ("entries", "seq"),
    ("proposals", "rowid"),
    ("policy_changes", "seq"),
    ("attention", "rowid"),
    ("outbox", "id"),
    ("cursors", "rowid"),
    ("people", "rowid"),
    ("credentials", "rowid"),
    ("settings", "rowid"),
    ("service_log", "seq"),
    ("allows", "rowid"),
    ("link_key", "id"),  # the vault's own key, so the links already sent stay good
    ("spent_links", "rowid"),
    ("sign_in_links", "rowid"),
    ("sessions", "rowid"),
)


def import_sqlite(url: str, path: Path) -> dict[str, int]:
    """Copy the SQLite journal at ``path`` into the empty journal at ``url`` (made by
    :func:`migrate`), in one transaction; how many rows each table got. Refused, changing
    nothing, if any table of the server's journal holds rows already (naming it)."""
    where = shown(url)
    Journal(path).close()  # brings an older SQLite journal's columns up to date
    source = sqlite3.connect(path.absolute().as_uri() + "?mode=ro", uri=True)
    conn = connect(url)
    try:
        with conn.transaction():
            conn.execute("SELECT seq FROM head FOR UPDATE")  # no append meanwhile
            _refuse_rows(conn, where)
            conn.execute("DELETE FROM link_key")  # the one db migrate made gives way
            counts = {table: _copy(source, conn, table, order) for table, order in _TABLES}
            _set_head(source, conn)
    except psycopg.Error as e:
        error = typed(where, e)
        if isinstance(error, Conflict):  # only if a row came in meanwhile: say which key
            raise ServerJournalError(
                where,
                f"a row the import copies is there already ({error.constraint or 'a unique key'})",
                "import into a database of its own, made with `db migrate`",
            ) from None
        raise error from None
    finally:
        conn.close()
        source.close()
    return counts


def _refuse_rows(conn: psycopg.Connection[Any], where: str) -> None:
    """Refuse a journal any table of which holds rows already (but the vault's own key,
    which the import replaces): an import adds to nothing, so no row of it can clash."""
    for table, _ in _TABLES:
        if table == "link_key":
            continue
        query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {})").format(sql.Identifier(table))
        if conn.execute(query).fetchone() != (False,):
            raise ServerJournalError(
                where,
                f"its journal holds rows in {table} already, so it cannot take another",
                "import into a database of its own, made with `db migrate`",
            )


def _copy(source: sqlite3.Connection, conn: psycopg.Connection[Any], table: str, order: str) -> int:
    """Copy every row of ``table``, the columns both sides have, in ``order``."""
    mine = {
        row[0]
        for row in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "AND table_schema = current_schema()",
            (table,),
        )
    }
    theirs = [row[1] for row in source.execute(f"PRAGMA table_info({table})")]
    columns = [c for c in theirs if c in mine]
    rows = source.execute(f"SELECT {', '.join(columns)} FROM {table} ORDER BY {order}")
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", ").join(sql.Placeholder() * len(columns)),
    )
    count = 0
    with conn.cursor() as cur:
        while batch := rows.fetchmany(_REPEAT):
            cur.executemany(insert, batch)
            count += len(batch)
    return count


def _set_head(source: sqlite3.Connection, conn: psycopg.Connection[Any]) -> None:
    """The head row after an import: the last entry of each chain, and for the service log
    the highest position SQLite ever gave out (so a removed newest entry still shows)."""
    last = source.execute("SELECT seq, hash FROM entries ORDER BY seq DESC LIMIT 1").fetchone()
    service = source.execute(
        "SELECT seq, hash FROM service_log ORDER BY seq DESC LIMIT 1"
    ).fetchone()
    given = source.execute("SELECT seq FROM sqlite_sequence WHERE name = 'service_log'").fetchone()
    conn.execute(
        "UPDATE head SET seq = %s, hash = %s, service_seq = %s, service_hash = %s",
        (
            last[0] if last else 0,
            last[1] if last else GENESIS,
            max(given[0] if given else 0, service[0] if service else 0),
            service[1] if service else GENESIS,
        ),
    )
    for table in ("policy_changes", "outbox"):  # their next ids follow the copied ones
        column = "seq" if table == "policy_changes" else "id"
        conn.execute(
            sql.SQL(
                "SELECT setval(pg_get_serial_sequence({t}, {c}), coalesce(max({ci}), 0) + 1, "
                "false) FROM {ti}"
            ).format(
                t=sql.Literal(table),
                c=sql.Literal(column),
                ci=sql.Identifier(column),
                ti=sql.Identifier(table),
            )
        )
