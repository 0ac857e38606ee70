"""Reading a request from the PostgreSQL journal in its own words: with its history, in one
query (one round trip, and the two seen as of one moment). Every other read is the shared
:class:`~.reader.Reader`'s."""

from __future__ import annotations

from ..model import Request
from .pg_handle import PgHandle
from .reader import REQUEST_COLUMNS, STEP, Reader, request, transition


class PgReader:
    """:meth:`get` for :class:`~hitl_vault.journal.pg.PgJournal`, on its handle and the
    shared reader."""

    def __init__(self, db: PgHandle, reader: Reader) -> None:
        self._db = db
        self._reader = reader

    def get(self, request_id: str, *, history: bool = True) -> Request | None:
        """The request, with its history read in the same query."""
        if not history:
            return self._reader.get(request_id, history=False)
        rows = self._db.read(
            f"SELECT {REQUEST_COLUMNS}, (SELECT coalesce(json_agg(json_build_array({STEP}) "
            "ORDER BY seq), '[]') FROM entries WHERE request_id = requests.id) "
            "FROM requests WHERE id = ?",
            (request_id,),
        )
        found = self._db.converted(
            rows, lambda row: request(row[:-1], tuple(transition(step) for step in row[-1]))
        )
        return found[0] if found else None
