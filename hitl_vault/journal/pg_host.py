"""Which journal a host uses for a vault: the SQLite file in ``.hitl/``, or the PostgreSQL
database ``$HITL_VAULT_JOURNAL`` (or ``--journal``) names, and ``.hitl/`` remembering which.

The first time a host opens a vault's journal on a server, ``.hitl/journal-server.json``
records it: the vault's id (what the database's ``meta`` says) and where it was (without a
password). From then on:

- a host given a database that holds another vault refuses to start, with the reason;
- every command run without a server journal refuses to open a local SQLite journal
  instead, since a decision must never land in a journal the other hosts do not read.

A vault whose local journal has requests is never switched to a server silently: ``hitl-vault
db import`` moves them there first (and moves the local file aside).
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ServerJournalError
from ..model import JOURNAL_FILE, LOCK_FILE, STATE_DIR
from ..store import JournalStore
from .pg_url import JOURNAL_ENV, journal_url, shown
from .sqlite import Journal
from .sqlite_peek import read_ids

if TYPE_CHECKING:
    from .pg import PgJournal
    from .pg_migrate import Migrated

RECORD_FILE = "journal-server.json"


def recorded(state: Path) -> dict[str, str] | None:
    """What ``.hitl/`` says of a server journal (``vault``, ``server``); None if nothing."""
    path = state / RECORD_FILE
    try:
        data: Any = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise ServerJournalError(
            str(path), f"cannot be read ({e})", "restore it, or remove it to record anew"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("vault"), str):
        raise ServerJournalError(
            str(path), "is not what hitl-vault writes", "remove it to record anew"
        )
    return {str(k): str(v) for k, v in data.items()}


def record(state: Path, vault_id: str, url: str) -> None:
    """Write ``.hitl/journal-server.json`` (atomically, private like the journal)."""
    state.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = state / RECORD_FILE
    tmp = path.with_name(f".{RECORD_FILE}.{os.getpid()}")
    text = json.dumps({"journal": "postgresql", "vault": vault_id, "server": shown(url)})
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def open_journal(root: Path, given: str | None = None) -> JournalStore:
    """The journal of the vault at ``root`` on this host: the server ``given`` (``--journal``)
    or ``$HITL_VAULT_JOURNAL`` names, checked against ``.hitl/``, else the SQLite file."""
    state = root / STATE_DIR
    url = journal_url(given)
    if url is None:
        known = recorded(state)
        if known is not None:
            raise ServerJournalError(
                str(state / RECORD_FILE),
                f"this vault's journal is on a server ({known.get('server', '?')}, vault "
                f"{known['vault']}), and no {JOURNAL_ENV} is set",
                f"set {JOURNAL_ENV}=postgresql://... for this host; a local journal would "
                "record decisions no other host sees",
            )
        return Journal(state / JOURNAL_FILE)
    store = server_journal(url)
    try:
        bind(state, store.vault_id, url)
    except BaseException:
        store.close()
        raise
    return store


def _no_driver(url: str, e: ImportError) -> ServerJournalError:
    """What a host without the postgres extra is told (``e`` itself if it is another)."""
    if not (e.name or "").startswith("psycopg"):
        raise e
    return ServerJournalError(
        shown(url),
        "a journal on PostgreSQL needs the postgres extra",
        "pip install 'hitl-vault[postgres]'",
    )


def server_journal(url: str) -> PgJournal:
    """The :class:`~.pg.PgJournal` at ``url``."""
    try:
        from .pg import PgJournal
    except ImportError as e:
        raise _no_driver(url, e) from None
    return PgJournal(url)


def migrate_journal(url: str) -> Migrated:
    """``hitl-vault db migrate``: :func:`~.pg_migrate.migrate` at ``url``."""
    try:
        from .pg_migrate import migrate
    except ImportError as e:
        raise _no_driver(url, e) from None
    return migrate(url)


def bind(state: Path, vault_id: str, url: str) -> None:
    """Hold the vault's ``.hitl/`` to the server journal of vault ``vault_id``: refused if
    it names another vault, or if a local journal still has requests; recorded the first
    time."""
    known = recorded(state)
    if known is not None:
        if known["vault"] != vault_id:
            raise ServerJournalError(
                shown(url),
                f"holds the journal of vault {vault_id}, but {state / RECORD_FILE} names vault "
                f"{known['vault']} ({known.get('server', '?')})",
                f"set {JOURNAL_ENV} to this vault's database; a folder that should join the "
                f"other vault starts with a fresh {STATE_DIR}/",
            )
        return
    local = state / JOURNAL_FILE
    if read_ids(local):
        raise ServerJournalError(
            str(local),
            "this vault's local journal has requests, which the server's journal would not have",
            "move them there with `hitl-vault db import` (or move the file aside to start anew)",
        )
    record(state, vault_id, url)


def set_aside(local: Path) -> Path:
    """Move an imported local journal (and its ``-wal``/``-shm``) out of every command's way;
    the new name."""
    target = local.with_name(f"{local.name}.imported")
    n = 1
    while target.exists():
        n += 1
        target = local.with_name(f"{local.name}.imported-{n}")
    os.replace(local, target)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.replace(local.with_name(local.name + suffix), target.with_name(target.name + suffix))
    return target


def import_journal(root: Path, url: str) -> tuple[dict[str, int], Path]:
    """``hitl-vault db import``: move the vault's SQLite journal into the (migrated, empty)
    server journal at ``url``, record the server in ``.hitl/``, and move the local file
    aside; how many rows each table got, and where the local file went."""
    from .lock import daemon_running
    from .pg_migrate import import_sqlite

    state = root / STATE_DIR
    local = state / JOURNAL_FILE
    if recorded(state) is not None:
        raise ServerJournalError(
            str(state / RECORD_FILE),
            "this vault's journal is on a server already",
            "nothing to import; `hitl-vault verify` checks it",
        )
    if not local.is_file():
        raise ServerJournalError(str(local), "no journal to import here", "check --vault")
    if daemon_running(state / LOCK_FILE):
        raise ServerJournalError(
            str(local), "a daemon is running on this vault", "stop it first, then import"
        )
    store = server_journal(url)  # refuses a database without this version's tables
    vault_id = store.vault_id
    store.close()
    counts = import_sqlite(url, local)
    record(state, vault_id, url)
    return counts, set_aside(local)
