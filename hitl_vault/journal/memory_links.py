"""The in-memory journal's decision links (as :class:`~.link_table.LinkTable` keeps them
in a database): the key made with the journal, and the links spent, each in the write (or
the batch) of the decision it made."""

from __future__ import annotations

from datetime import datetime

from .memory_state import Memory, ts


class MemoryLinks:
    """The link key and the spent links of :class:`~hitl_vault.testing.MemoryJournal`."""

    def __init__(self, memory: Memory) -> None:
        self._m = memory

    def link_key(self) -> bytes:
        with self._m.lock:
            return self._m.state.link_key

    def spend_link(self, link: str, request_id: str, at: datetime) -> bool:
        with self._m.write() as s:
            if link in s.spent_links:
                return False
            s.spent_links[link] = (request_id, ts(at))
        return True

    def link_spent(self, link: str) -> bool:
        with self._m.lock:
            return link in self._m.state.spent_links
