"""Decision links in the PostgreSQL journal: the key that signs them (made by ``db migrate``),
and the links spent, each one row written inside the batch of the decision it made."""

from __future__ import annotations

from datetime import datetime

from ..errors import ServerDamagedError
from ..times import format_ts
from .pg_db import Conflict, PgDatabase
from .pg_steps import lock_head


class PgLinkTable:
    """The link key and the spent links of :class:`~hitl_vault.journal.pg.PgJournal`."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db

    def link_key(self) -> bytes:
        row = self._db.read_one("SELECT key FROM link_key WHERE id = 1")
        if row is None or not isinstance(row[0], bytes) or len(row[0]) < 32:
            raise ServerDamagedError(self._db.where, "its decision-link key is missing or short")
        return bytes(row[0])

    def spend_link(self, link: str, request_id: str, at: datetime) -> bool:
        try:
            with self._db.write() as db:
                lock_head(db)  # first, as every write: none waits on another in a circle
                db.execute(
                    "INSERT INTO spent_links (link, request_id, at) VALUES (%s,%s,%s)",
                    (link, request_id, format_ts(at)),
                )
        except Conflict:
            return False
        return True

    def link_spent(self, link: str) -> bool:
        row = self._db.read_one("SELECT 1 FROM spent_links WHERE link = %s", (link,))
        return row is not None
