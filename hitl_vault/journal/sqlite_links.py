"""Decision links in the SQLite journal: the key that signs them, and the links spent.

The key is made with the journal (:meth:`~.sqlite_db.Database._set_up`) and only read
here. A spent link is one row, keyed by a hash of the link, written inside the batch of
the decision it made: both commit, or neither does.
"""

from __future__ import annotations

import sqlite3
from datetime import datetime

from ..errors import JournalDamagedError
from ..times import format_ts
from .sqlite_db import Database


class LinkTable:
    """The link key and the spent links of :class:`~hitl_vault.journal.sqlite.Journal`."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def link_key(self) -> bytes:
        row = self._db.read_one("SELECT key FROM link_key WHERE id = 1")
        if row is None or not isinstance(row[0], bytes) or len(row[0]) < 32:
            raise JournalDamagedError(self._db.path, "its decision-link key is missing or short")
        return bytes(row[0])

    def spend_link(self, link: str, request_id: str, at: datetime) -> bool:
        try:
            with self._db.write() as db:
                db.execute(
                    "INSERT INTO spent_links (link, request_id, at) VALUES (?,?,?)",
                    (link, request_id, format_ts(at)),
                )
        except sqlite3.IntegrityError:
            return False
        return True

    def link_spent(self, link: str) -> bool:
        return self._db.read_one("SELECT 1 FROM spent_links WHERE link = ?", (link,)) is not None
