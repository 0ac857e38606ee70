"""The in-memory journal's bookkeeping and outbox: where notes are, the rules in force,
what needs attention, and notifications (as :class:`~.bookkeeping.Bookkeeping` and
:class:`~.outbox.Outbox` keep them in a database)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from ..policy.trust import policy_change
from ..store import Attention, Outgoing
from ..times import parse_ts
from .memory_state import Memory, Out, ts


class MemoryBook:
    """The bookkeeping and outbox of :class:`~hitl_vault.testing.MemoryJournal`, on the
    memory it is handed."""

    def __init__(self, memory: Memory) -> None:
        self._m = memory

    # --- notes, the rules in force, and what needs attention ---------------------------------

    def set_path(
        self, request_id: str, path: str, note_sha: str | None = None, entries: int = 0
    ) -> None:
        with self._m.write() as s:
            row = s.rows.get(request_id)
            if row is not None:
                shown = sum(e.request_id == request_id for e in s.entries)
                row.path, row.note_sha = path, note_sha if shown == entries else None

    def note_sha(self, request_id: str) -> tuple[str | None, str | None]:
        with self._m.lock:
            row = self._m.state.rows.get(request_id)
            return (row.path, row.note_sha) if row else (None, None)

    def paths(self) -> dict[str, str]:
        with self._m.lock:
            return {rid: r.path for rid, r in self._m.state.rows.items() if r.path is not None}

    def last_change(self, request_id: str) -> tuple[str | None, datetime] | None:
        with self._m.lock:
            row = self._m.state.rows.get(request_id)
            mine = [e for e in self._m.state.entries if e.request_id == request_id]
        return (row.path, parse_ts(mine[-1].at)) if row and mine else None

    def record_policy(self, text: str | None, at: datetime) -> str | None:
        text = text or ""
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with self._m.write() as s:
            last = s.policy[-1] if s.policy else None
            if last is not None and last[1] == sha:
                return None
            _, summary = policy_change(last[3] if last else None, text)
            s.policy.append((ts(at), sha, summary, text))
            return summary

    def policy_changes(self, limit: int = 5) -> list[tuple[datetime, str, str]]:
        with self._m.lock:
            return [
                (at, sha, summary) for at, sha, summary, _ in self._m.state.policy[::-1][:limit]
            ]

    def flag(self, path: str, message: str, at: datetime, request_id: str | None = None) -> bool:
        with self._m.write() as s:
            known = s.attention.get(path)
            if known is not None and known.message == message:
                return False
            s.attention[path] = Attention(path, request_id, message, ts(at))
            return True

    def unflag(self, path: str) -> None:
        with self._m.write() as s:
            s.attention.pop(path, None)

    def attention(self) -> list[Attention]:
        with self._m.lock:
            return sorted(self._m.state.attention.values(), key=lambda a: (a.since, a.path))

    # --- the notifications outbox ---------------------------------------------------------

    def cursor(self, name: str) -> int | None:
        with self._m.lock:
            return self._m.state.cursors.get(name)

    def move_cursor(self, name: str, seq: int) -> None:
        with self._m.write() as s:
            s.cursors[name] = seq

    def enqueue(
        self,
        items: Iterable[tuple[str, str, str]],
        at: datetime,
        cursor: tuple[str, int] | None = None,
    ) -> int:
        new = 0
        with self._m.write() as s:
            known = {(o.item.request_id, o.item.event, o.item.target) for o in s.outbox}
            for request_id, event, target in items:
                if (request_id, event, target) in known:
                    continue
                known.add((request_id, event, target))
                item_id = len(s.outbox) + 1
                s.outbox.append(
                    Out(Outgoing(item_id, request_id, event, target, ts(at), ts(at), 0, None))
                )
                new += 1
            if cursor is not None:
                s.cursors[cursor[0]] = cursor[1]
        return new

    def outgoing(self, now: datetime | None = None, limit: int = 100) -> list[Outgoing]:
        with self._m.lock:
            due = [
                o.item
                for o in self._m.state.outbox
                if o.sent_at is None
                and o.given_up_at is None
                and (now is None or o.item.due <= ts(now))
            ]
        return sorted(due, key=lambda o: (o.due, o.id))[:limit]

    def sent(self, item_id: int, at: datetime) -> None:
        with self._m.write() as s:
            for o in s.outbox:
                if o.item.id == item_id:
                    o.sent_at = ts(at)
                    o.item = replace(o.item, attempts=o.item.attempts + 1)

    def not_sent(self, item_id: int, at: datetime, error: str, retry_at: datetime | None) -> None:
        with self._m.write() as s:
            for o in s.outbox:
                if o.item.id == item_id:
                    due = ts(retry_at or at)
                    attempts = o.item.attempts + 1
                    o.item = replace(o.item, attempts=attempts, last_error=error, due=due)
                    o.given_up_at = None if retry_at is not None else ts(at)

    def sent_count(self, request_id: str | None = None) -> int:
        with self._m.lock:
            return sum(
                o.sent_at is not None and request_id in (None, o.item.request_id)
                for o in self._m.state.outbox
            )
