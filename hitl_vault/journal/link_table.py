"""Decision links in the journal: the key that signs them, and the links spent.

The key is made with the journal (SQLite: :meth:`~.sqlite_db.Database._set_up`;
PostgreSQL: ``db migrate``) and only read here. A spent link is one row, keyed by a hash of
the link, written inside the batch of the decision it made: both commit, or neither does.
"""

from __future__ import annotations

from datetime import datetime

from ..times import format_ts
from .handle import Handle


class LinkTable:
    """The link key and the spent links of both journals, on the database handle it is
    handed."""

    def __init__(self, db: Handle) -> None:
        self._db = db

    def link_key(self) -> bytes:
        row = self._db.read_one("SELECT key FROM link_key WHERE id = 1")
        if row is None or not isinstance(row[0], bytes) or len(row[0]) < 32:
            raise self._db.damaged("its decision-link key is missing or short")
        return bytes(row[0])

    def spend_link(self, link: str, request_id: str, at: datetime) -> bool:
        try:
            with self._db.write() as db:
                db.lock_head()  # first, as every write: none waits on another in a circle
                db.execute(
                    "INSERT INTO spent_links (link, request_id, at) VALUES (?,?,?)",
                    (link, request_id, format_ts(at)),
                )
        except self._db.conflict:
            return False
        return True

    def link_spent(self, link: str) -> bool:
        return self._db.read_one("SELECT 1 FROM spent_links WHERE link = ?", (link,)) is not None
