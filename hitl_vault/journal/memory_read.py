"""Reading the in-memory journal: the queries :class:`~.reader.Reader` answers for
SQLite, with the same orders and the same answers."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..chain import Entry, chain_problems
from ..errors import RequestNotFoundError
from ..identity import same_name
from ..model import Kind, Request, Status, Transition, Waiting
from .memory_state import Memory, Row, transition_of, ts
from .replay import unproven


class MemoryReader:
    """The queries of :class:`~hitl_vault.testing.MemoryJournal`, on the memory it is
    handed."""

    def __init__(self, memory: Memory) -> None:
        self._m = memory

    def _row(self, request_id: str) -> Row:
        row = self._m.state.rows.get(request_id)
        if row is None:
            raise RequestNotFoundError(request_id)
        return row

    def _pending(self) -> list[Request]:
        return [
            r.request for r in self._m.state.rows.values() if r.request.status is Status.PENDING
        ]

    def _full(self, row: Row, history: bool) -> Request:
        rid = row.request.id
        steps = tuple(transition_of(e) for e in self._m.state.entries if e.request_id == rid)
        retried_as = next(
            (r.request.id for r in self._m.state.rows.values() if r.request.retry_of == rid), None
        )
        return replace(
            row.request,
            path=Path(row.path) if row.path else None,
            retried_as=retried_as,
            history=steps if history else (),
            params=copy.deepcopy(row.request.params),
        )

    def get(self, request_id: str, *, history: bool = True) -> Request | None:
        with self._m.lock:
            row = self._m.state.rows.get(request_id)
            return None if row is None else self._full(row, history)

    def history(self, request_id: str) -> list[Transition]:
        """The request's steps in order (what ``get(...).history`` holds)."""
        with self._m.lock:
            return [transition_of(e) for e in self._m.state.entries if e.request_id == request_id]

    def requests(
        self, status: Status | None = None, limit: int | None = None, agent: str | None = None
    ) -> list[Request]:
        with self._m.lock:
            tokens = self._tokens(agent)
            rows = [
                (r.request.created, n, r)
                for n, r in enumerate(self._m.state.rows.values())
                if (status is None or r.request.status is status)
                and (tokens is None or r.request.credential in tokens)
            ]
            rows.sort(key=lambda x: (x[0], x[1]), reverse=True)
            return [self._full(r, False) for _, _, r in rows[:limit]]

    def _tokens(self, agent: str | None) -> set[str] | None:
        """The ids of the tokens named ``agent`` (names as compared); None: no ``agent``."""
        if agent is None:
            return None
        key = same_name(agent)
        return {c.id for c in self._m.state.credentials.values() if same_name(c.name) == key}

    def ids(self, status: Status | None = None) -> list[str]:
        with self._m.lock:
            return [
                rid
                for rid, r in self._m.state.rows.items()
                if status is None or r.request.status is status
            ]

    def status_of(self, request_id: str) -> Status | None:
        with self._m.lock:
            row = self._m.state.rows.get(request_id)
            return None if row is None else row.request.status

    def counts(self) -> dict[Status, int]:
        with self._m.lock:
            found = [r.request.status for r in self._m.state.rows.values()]
        return {s: found.count(s) for s in Status}

    def pending_by_expiry(self, limit: int) -> list[Waiting]:
        with self._m.lock:
            pending = self._pending()
            pending.sort(key=lambda r: (r.expires is None, r.expires or r.created, r.id))
            rows = self._m.state.rows
            return [
                Waiting(r.id, rows[r.id].path, r.summary, r.action, str(r.risk), r.expires)
                for r in pending[:limit]
            ]

    def expiring(self, before: datetime | None = None) -> list[tuple[str, datetime]]:
        with self._m.lock:
            due = [
                (r.id, r.expires)
                for r in self._pending()
                if r.expires is not None and (before is None or r.expires <= ts(before))
            ]
        return sorted(due, key=lambda x: x[1])

    def next_expiry(self) -> datetime | None:
        with self._m.lock:
            times = [r.expires for r in self._pending() if r.expires is not None]
        return min(times) if times else None

    def escalating(self, before: datetime) -> list[str]:
        with self._m.lock:
            due = [
                (r.escalate_at, r.id)
                for r in self._pending()
                if r.escalate_at is not None and r.escalate_at <= ts(before)
            ]
        return [rid for _, rid in sorted(due, key=lambda x: x[0])]

    def next_escalation(self) -> datetime | None:
        with self._m.lock:
            times = [r.escalate_at for r in self._pending() if r.escalate_at is not None]
        return min(times) if times else None

    def created_params(self, request_id: str) -> dict[str, Any]:
        with self._m.lock:
            return copy.deepcopy(self._row(request_id).params_created)

    def pinned(self, request_id: str) -> dict[str, Any]:
        with self._m.lock:
            row = self._m.state.rows.get(request_id)
            return copy.deepcopy(row.pinned) if row and row.pinned else {}

    def decision_uid(self, request_id: str) -> int | None:
        decided = {str(Status.APPROVED), str(Status.REJECTED), str(Status.CANCELLED)}
        with self._m.lock:
            for e in self._m.state.entries:
                if (
                    e.request_id == request_id
                    and e.kind == Kind.TRANSITION
                    and e.to_status in decided
                ):
                    return e.uid
        return None

    def unproven(
        self, request_id: str, params: Mapping[str, Any], status: Status = Status.APPROVED
    ) -> str | None:
        return unproven(self.entries(request_id), self.status_of(request_id), params, status)

    def proposal(self, source: str) -> str | None:
        with self._m.lock:
            return self._m.state.proposals.get(source)

    # --- the change feed and the chain ---------------------------------------------------

    def last_seq(self) -> int:
        with self._m.lock:
            return len(self._m.state.entries)

    def feed(self, seq: int) -> list[tuple[int, str, Transition]]:
        with self._m.lock:
            return [(e.seq, e.request_id, transition_of(e)) for e in self._m.state.entries[seq:]]

    def recent_entries(
        self, limit: int = 20
    ) -> list[tuple[str, Transition, int | None, str | None]]:
        with self._m.lock:
            newest = self._m.state.entries[::-1][:limit]
        return [(e.request_id, transition_of(e), e.uid, e.actor) for e in newest]

    def entries(self, request_id: str | None = None) -> list[Entry]:
        with self._m.lock:
            return [e for e in self._m.state.entries if request_id in (None, e.request_id)]

    def verify_chain(self) -> list[str]:
        return chain_problems(self.entries())
