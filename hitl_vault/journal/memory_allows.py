"""The in-memory journal's "always" allows (as :mod:`.allow_table` keeps them): each
change made with its service-log entry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from ..errors import DuplicateError
from ..policy.always import Allow
from ..store import ServiceEntry
from .allow_rows import allow_details
from .memory_state import Memory, State, ts

Log = Callable[[State, datetime, str, str, str, tuple[str, ...]], ServiceEntry]


class MemoryAllows:
    """The allows of :class:`~hitl_vault.testing.MemoryJournal`, on the memory it is handed,
    logged through ``log`` (in the same write)."""

    def __init__(self, memory: Memory, log: Log) -> None:
        self._m = memory
        self._log = log

    def allows(self, now: datetime | None = None) -> list[Allow]:
        with self._m.lock:
            kept = [a for a, revoked in self._m.state.allows.values() if revoked is None]
        return [a for a in kept if now is None or a.until > now]

    def add_allow(self, allow: Allow, by: str) -> None:
        with self._m.write() as s:
            if allow.name in s.allows:
                raise DuplicateError(f"allow {allow.name}")
            kept = replace(
                allow, params=dict(allow.params), created=ts(allow.created), until=ts(allow.until)
            )
            s.allows[allow.name] = (kept, None)
            self._log(s, allow.created, by, "allow added", allow.name, allow_details(kept))

    def revoke_allow(self, name: str, at: datetime, by: str) -> bool:
        with self._m.write() as s:
            found = s.allows.get(name)
            if found is None or found[1] is not None:
                return False
            s.allows[name] = (found[0], ts(at))
            self._log(s, at, by, "allow revoked", name, ())
        return True
