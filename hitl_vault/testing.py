"""An in-memory journal for tests and experiments: :class:`MemoryJournal`.

``Vault(path, journal=MemoryJournal())`` runs every operation (submit, decide,
wait, ``run(once=True)``) with the journal in this process's memory and the notes
in a real folder. It keeps the SQLite journal's semantics, proven by one contract
test run against both (``tests/test_store_contract.py``): the same status moves,
the same hash chain (each entry's SHA-256 covers the one before it, so
``verify_chain`` finds an edited entry), history, outbox, cursors and flags, and
times kept to the second as SQLite keeps them.

What it cannot do, it does for its own process only:

* nothing is durable: it ends with the process;
* no other process sees it, so :meth:`~MemoryJournal.watch` wakes on this
  process's writes only (from any thread);
* its daemon lock is process-local: a second daemon on the same MemoryJournal in
  this process is refused, a daemon in another process never sees it.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

from .errors import (
    DaemonRunningError,
    DuplicateError,
    IllegalTransitionError,
    NotRetryableError,
    RequestNotFoundError,
)
from .journal.chain import GENESIS, Entry, chain_problems, entry_hash
from .journal.replay import unproven
from .model import LEGAL_MOVES, RETRYABLE, Kind, Request, Status, Transition
from .params import params_sha
from .policy.trust import policy_change
from .store import Attention, Outgoing, request_flag
from .times import format_ts, parse_ts

_UID: int | None = os.getuid() if hasattr(os, "getuid") else None
_SETTABLE = frozenset(
    {"decided_by", "reason", "decided_at", "executed_at", "result", "error", "params"}
)


def _ts(value: datetime) -> datetime:
    """A time as the SQLite journal keeps it: UTC, to the second."""
    return parse_ts(format_ts(value))


def _opt_ts(value: datetime | None) -> datetime | None:
    return None if value is None else _ts(value)


def _json(value: Mapping[str, Any]) -> dict[str, Any]:
    """Params as stored: what JSON keeps of them (a tuple comes back a list)."""
    stored: dict[str, Any] = json.loads(json.dumps(dict(value), ensure_ascii=False))
    return stored


@dataclass
class _Row:
    """One request as stored (its history lives in the entries)."""

    request: Request
    path: str | None
    params_created: dict[str, Any]
    pinned: dict[str, Any] | None
    note_sha: str | None = None


@dataclass
class _Out:
    """One notification in the outbox."""

    item: Outgoing
    sent_at: datetime | None = None
    given_up_at: datetime | None = None


@dataclass
class _State:
    """Everything the journal holds; copied whole to undo a write that fails part way."""

    rows: dict[str, _Row] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    proposals: dict[str, str] = field(default_factory=dict)
    policy: list[tuple[datetime, str, str, str]] = field(default_factory=list)
    attention: dict[str, Attention] = field(default_factory=dict)
    outbox: list[_Out] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)


def _transition(e: Entry) -> Transition:
    frm = Status(e.from_status) if e.from_status else None
    details = tuple(json.loads(e.details))
    return Transition(
        parse_ts(e.at), frm, Status(e.to_status), e.by, e.reason, details, Kind(e.kind)
    )


class _ProcessLock:
    """The daemon lock of a :class:`MemoryJournal`: held by at most one daemon of this
    process at a time."""

    def __init__(self, journal: MemoryJournal) -> None:
        self._journal = journal

    def acquire(self) -> _ProcessLock:
        with self._journal._lock:
            holder = self._journal._daemon
            if holder is not None:
                raise DaemonRunningError(self._journal.path, holder)
            self._journal._daemon = f"thread {threading.current_thread().name} of this process"
        return self

    def release(self) -> None:
        with self._journal._lock:
            self._journal._daemon = None


class MemoryJournal:
    """A :class:`~hitl_vault.store.JournalStore` in memory (see the module for its limits)."""

    def __init__(self, name: str = "memory") -> None:
        self.path = Path(f"<{name} journal>")  # how errors name it
        self._lock = threading.RLock()
        self._state = _State()
        self._batching = False
        self._wakers: dict[int, Callable[[], None]] = {}
        self._daemon: str | None = None

    def __repr__(self) -> str:
        return f"MemoryJournal({self.path.name!r})"

    # --- lifetime, transactions, this process's word ------------------------------------

    @property
    def batching(self) -> bool:
        return self._batching

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many writes, all or none; other threads wait until the batch ends."""
        with self._lock:
            if self._batching:
                yield
                return
            saved = copy.deepcopy(self._state)
            self._batching = True
            try:
                yield
            except BaseException:
                self._state = saved
                raise
            finally:
                self._batching = False
        self._tell()

    @contextmanager
    def _write(self) -> Iterator[_State]:
        """One atomic write: what it changed is undone if it raises."""
        with self._lock:
            outer = not self._batching
            saved = copy.deepcopy(self._state)
            try:
                yield self._state
            except BaseException:
                self._state = saved
                raise
        if outer:
            self._tell()

    def _tell(self) -> None:
        for wake in list(self._wakers.values()):
            wake()

    def wait_for_lock(self, seconds: float) -> None:
        """Nothing to wait for: no other process writes it."""

    def close(self) -> None:
        self._wakers.clear()

    @contextmanager
    def watch(self, wake: Callable[[], None]) -> Iterator[None]:
        """Wake after every write of this process (no other process can write it)."""
        key = id(wake)
        self._wakers[key] = wake
        try:
            yield
        finally:
            self._wakers.pop(key, None)

    def daemon_lock(self) -> _ProcessLock:
        return _ProcessLock(self)

    def daemon_running(self) -> bool:
        return self._daemon is not None

    # --- requests and their steps -------------------------------------------------------

    def _append(self, s: _State, request_id: str, t: Transition, sha: str | None) -> None:
        prev = s.entries[-1].hash if s.entries else GENESIS
        fields = (
            request_id, format_ts(t.at), str(t.kind),
            str(t.from_status) if t.from_status is not None else None, str(t.to_status),
            t.by, t.reason, json.dumps(list(t.details), ensure_ascii=False), sha,
        )  # fmt: skip
        digest = entry_hash(prev, fields, _UID)
        s.entries.append(Entry(len(s.entries) + 1, *fields, prev, digest, _UID))

    def _row(self, request_id: str) -> _Row:
        row = self._state.rows.get(request_id)
        if row is None:
            raise RequestNotFoundError(request_id)
        return row

    def create(
        self,
        request: Request,
        path: str | None,
        source: str | None = None,
        pinned: Mapping[str, Any] | None = None,
    ) -> None:
        sha = params_sha(request.params)
        with self._write() as s:
            if source is not None and source in s.proposals:
                raise DuplicateError(f"proposal {source}")
            if request.retry_of is not None:
                self._link_retry(s, request)
            if request.id in s.rows:
                raise DuplicateError(f"request {request.id}")
            if source is not None:
                s.proposals[source] = request.id
            stored = replace(
                request, created=_ts(request.created), expires=_opt_ts(request.expires),
                decided_at=_opt_ts(request.decided_at), escalate_at=_opt_ts(request.escalate_at),
                params=_json(request.params), executed_at=None, result=None, error=None,
                path=None, retried_as=None, history=(),
            )  # fmt: skip
            s.rows[request.id] = _Row(stored, path, _json(request.params), _pinned(pinned))
            for t in request.history:
                self._append(s, request.id, t, sha)

    def _link_retry(self, s: _State, request: Request) -> None:
        old = request.retry_of
        assert old is not None
        row = s.rows.get(old)
        if row is None:
            raise RequestNotFoundError(old)
        taken = next((r.request.id for r in s.rows.values() if r.request.retry_of == old), None)
        status = row.request.status
        if taken is not None or status not in RETRYABLE:
            raise NotRetryableError(old, status, taken)
        link = next((t for t in request.history if t.kind is Kind.LINKED), None)
        by = link.by if link is not None else request.requested_by
        at = link.at if link is not None else request.created
        t = Transition(at, status, status, by, "", (f"retried as {request.id}",), Kind.LINKED)
        self._append(s, old, t, None)

    def transition(
        self,
        request_id: str,
        to: Status,
        *,
        at: datetime,
        by: str,
        reason: str = "",
        details: tuple[str, ...] = (),
        expect: Iterable[Status] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> Transition | None:
        fields = dict(fields or {})
        unknown = set(fields) - _SETTABLE
        if unknown:
            raise ValueError(f"cannot set {sorted(unknown)} in a transition")
        with self._write() as s:
            row = self._row(request_id)
            current = row.request.status
            if to is Status.APPROVED and "params" not in fields:  # an approval names its params
                fields["params"] = row.request.params
            if expect is not None and current not in set(expect):
                return None
            if to not in LEGAL_MOVES[current]:
                if expect is None and current.is_final:
                    return None
                raise IllegalTransitionError(request_id, current, to)
            t = Transition(at, current, to, by, reason, details)
            sha = None
            if "params" in fields:
                sha = params_sha(fields["params"])
                fields["params"] = _json(fields["params"])
            for key, value in list(fields.items()):
                if isinstance(value, datetime):
                    fields[key] = _ts(value)
            row.request = replace(row.request, status=to, **fields)
            row.note_sha = None
            self._append(s, request_id, t, sha)
            s.attention.pop(request_flag(request_id), None)  # a step refused: stale now
            return t

    def record_edit(
        self, request_id: str, params: Mapping[str, Any], *, at: datetime, by: str, changes: str
    ) -> Transition | None:
        with self._write() as s:
            row = self._row(request_id)
            if row.request.status is not Status.PENDING:
                return None
            t = Transition(at, Status.PENDING, Status.PENDING, by, "", (changes,), kind=Kind.EDITED)
            row.request = replace(row.request, params=_json(params))
            row.note_sha = None
            self._append(s, request_id, t, params_sha(params))
            return t

    def record_ignored(self, request_id: str, at: datetime, details: tuple[str, ...]) -> Transition:
        with self._write() as s:
            row = self._row(request_id)
            status = row.request.status
            t = Transition(at, status, status, "hitl-vault", "", details, kind=Kind.IGNORED)
            row.note_sha = None
            self._append(s, request_id, t, None)
            return t

    def record_vote(
        self, request_id: str, *, at: datetime, by: str, approve: bool, reason: str, count: str
    ) -> Transition | None:
        to = Status.APPROVED if approve else Status.REJECTED
        t = Transition(at, Status.PENDING, to, by, reason, (count,), kind=Kind.VOTED)
        return self._pending_entry(request_id, t)

    def record_escalation(self, request_id: str, at: datetime, to: str) -> Transition | None:
        t = Transition(at, Status.PENDING, Status.PENDING, "hitl-vault", "", (to,), Kind.ESCALATED)
        return self._pending_entry(request_id, t)

    def _pending_entry(self, request_id: str, t: Transition) -> Transition | None:
        with self._write() as s:
            row = s.rows.get(request_id)
            if row is None or row.request.status is not Status.PENDING:
                return None
            if t.kind is Kind.ESCALATED:
                if row.request.escalate_at is None:  # escalated already, or never will
                    return None
                row.request = replace(row.request, escalate_at=None)
            row.note_sha = None
            self._append(s, request_id, t, None)
            return t

    # --- reading ---------------------------------------------------------------------

    def _pending(self) -> list[Request]:
        return [r.request for r in self._state.rows.values() if r.request.status is Status.PENDING]

    def _full(self, row: _Row, history: bool) -> Request:
        rid = row.request.id
        steps = tuple(_transition(e) for e in self._state.entries if e.request_id == rid)
        retried_as = next(
            (r.request.id for r in self._state.rows.values() if r.request.retry_of == rid), None
        )
        return replace(
            row.request, path=Path(row.path) if row.path else None, retried_as=retried_as,
            history=steps if history else (), params=copy.deepcopy(row.request.params),
        )  # fmt: skip

    def get(self, request_id: str, *, history: bool = True) -> Request | None:
        with self._lock:
            row = self._state.rows.get(request_id)
            return None if row is None else self._full(row, history)

    def history(self, request_id: str) -> list[Transition]:
        """The request's steps in order (what ``get(...).history`` holds)."""
        with self._lock:
            return [_transition(e) for e in self._state.entries if e.request_id == request_id]

    def requests(self, status: Status | None = None, limit: int | None = None) -> list[Request]:
        with self._lock:
            rows = [
                (r.request.created, n, r)
                for n, r in enumerate(self._state.rows.values())
                if status is None or r.request.status is status
            ]
            rows.sort(key=lambda x: (x[0], x[1]), reverse=True)
            return [self._full(r, False) for _, _, r in rows[:limit]]

    def ids(self, status: Status | None = None) -> list[str]:
        with self._lock:
            return [
                rid
                for rid, r in self._state.rows.items()
                if status is None or r.request.status is status
            ]

    def status_of(self, request_id: str) -> Status | None:
        with self._lock:
            row = self._state.rows.get(request_id)
            return None if row is None else row.request.status

    def counts(self) -> dict[Status, int]:
        with self._lock:
            found = [r.request.status for r in self._state.rows.values()]
        return {s: found.count(s) for s in Status}

    def pending_by_expiry(self, limit: int) -> list[Request]:
        with self._lock:
            pending = self._pending()
            pending.sort(key=lambda r: (r.expires is None, r.expires or r.created, r.id))
            return [self._full(self._state.rows[r.id], False) for r in pending[:limit]]

    def expiring(self, before: datetime | None = None) -> list[tuple[str, datetime]]:
        with self._lock:
            due = [
                (r.id, r.expires)
                for r in self._pending()
                if r.expires is not None and (before is None or r.expires <= _ts(before))
            ]
        return sorted(due, key=lambda x: x[1])

    def next_expiry(self) -> datetime | None:
        with self._lock:
            times = [r.expires for r in self._pending() if r.expires is not None]
        return min(times) if times else None

    def escalating(self, before: datetime) -> list[str]:
        with self._lock:
            due = [
                (r.escalate_at, r.id)
                for r in self._pending()
                if r.escalate_at is not None and r.escalate_at <= _ts(before)
            ]
        return [rid for _, rid in sorted(due, key=lambda x: x[0])]

    def next_escalation(self) -> datetime | None:
        with self._lock:
            times = [r.escalate_at for r in self._pending() if r.escalate_at is not None]
        return min(times) if times else None

    def created_params(self, request_id: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._row(request_id).params_created)

    def pinned(self, request_id: str) -> dict[str, Any]:
        with self._lock:
            row = self._state.rows.get(request_id)
            return copy.deepcopy(row.pinned) if row and row.pinned else {}

    def decision_uid(self, request_id: str) -> int | None:
        decided = {str(Status.APPROVED), str(Status.REJECTED), str(Status.CANCELLED)}
        with self._lock:
            for e in self._state.entries:
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
        with self._lock:
            return self._state.proposals.get(source)

    # --- the change feed and the chain ---------------------------------------------------

    def last_seq(self) -> int:
        with self._lock:
            return len(self._state.entries)

    def feed(self, seq: int) -> list[tuple[int, str, Transition]]:
        with self._lock:
            return [(e.seq, e.request_id, _transition(e)) for e in self._state.entries[seq:]]

    def recent_entries(self, limit: int = 20) -> list[tuple[str, Transition, int | None]]:
        with self._lock:
            newest = self._state.entries[::-1][:limit]
        return [(e.request_id, _transition(e), e.uid) for e in newest]

    def entries(self, request_id: str | None = None) -> list[Entry]:
        with self._lock:
            return [e for e in self._state.entries if request_id in (None, e.request_id)]

    def verify_chain(self) -> list[str]:
        return chain_problems(self.entries())

    # --- notes, the rules in force, and what needs attention ---------------------------------

    def set_path(
        self, request_id: str, path: str, note_sha: str | None = None, entries: int = 0
    ) -> None:
        with self._write() as s:
            row = s.rows.get(request_id)
            if row is not None:
                shown = sum(e.request_id == request_id for e in s.entries)
                row.path, row.note_sha = path, note_sha if shown == entries else None

    def note_sha(self, request_id: str) -> tuple[str | None, str | None]:
        with self._lock:
            row = self._state.rows.get(request_id)
            return (row.path, row.note_sha) if row else (None, None)

    def paths(self) -> dict[str, str]:
        with self._lock:
            return {rid: r.path for rid, r in self._state.rows.items() if r.path is not None}

    def last_change(self, request_id: str) -> tuple[str | None, datetime] | None:
        with self._lock:
            row = self._state.rows.get(request_id)
            mine = [e for e in self._state.entries if e.request_id == request_id]
        return (row.path, parse_ts(mine[-1].at)) if row and mine else None

    def record_policy(self, text: str | None, at: datetime) -> str | None:
        text = text or ""
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        with self._write() as s:
            last = s.policy[-1] if s.policy else None
            if last is not None and last[1] == sha:
                return None
            _, summary = policy_change(last[3] if last else None, text)
            s.policy.append((_ts(at), sha, summary, text))
            return summary

    def policy_changes(self, limit: int = 5) -> list[tuple[datetime, str, str]]:
        with self._lock:
            return [(at, sha, summary) for at, sha, summary, _ in self._state.policy[::-1][:limit]]

    def flag(self, path: str, message: str, at: datetime, request_id: str | None = None) -> bool:
        with self._write() as s:
            known = s.attention.get(path)
            if known is not None and known.message == message:
                return False
            s.attention[path] = Attention(path, request_id, message, _ts(at))
            return True

    def unflag(self, path: str) -> None:
        with self._write() as s:
            s.attention.pop(path, None)

    def attention(self) -> list[Attention]:
        with self._lock:
            return sorted(self._state.attention.values(), key=lambda a: (a.since, a.path))

    # --- the notifications outbox ---------------------------------------------------------

    def cursor(self, name: str) -> int | None:
        with self._lock:
            return self._state.cursors.get(name)

    def enqueue(
        self,
        items: Iterable[tuple[str, str, str]],
        at: datetime,
        cursor: tuple[str, int] | None = None,
    ) -> int:
        new = 0
        with self._write() as s:
            known = {(o.item.request_id, o.item.event, o.item.target) for o in s.outbox}
            for request_id, event, target in items:
                if (request_id, event, target) in known:
                    continue
                known.add((request_id, event, target))
                item_id = len(s.outbox) + 1
                s.outbox.append(
                    _Out(Outgoing(item_id, request_id, event, target, _ts(at), _ts(at), 0, None))
                )
                new += 1
            if cursor is not None:
                s.cursors[cursor[0]] = cursor[1]
        return new

    def outgoing(self, now: datetime | None = None, limit: int = 100) -> list[Outgoing]:
        with self._lock:
            due = [
                o.item
                for o in self._state.outbox
                if o.sent_at is None and o.given_up_at is None
                and (now is None or o.item.due <= _ts(now))
            ]  # fmt: skip
        return sorted(due, key=lambda o: (o.due, o.id))[:limit]

    def sent(self, item_id: int, at: datetime) -> None:
        with self._write() as s:
            for o in s.outbox:
                if o.item.id == item_id:
                    o.sent_at = _ts(at)
                    o.item = replace(o.item, attempts=o.item.attempts + 1)

    def not_sent(self, item_id: int, at: datetime, error: str, retry_at: datetime | None) -> None:
        with self._write() as s:
            for o in s.outbox:
                if o.item.id == item_id:
                    due = _ts(retry_at or at)
                    attempts = o.item.attempts + 1
                    o.item = replace(o.item, attempts=attempts, last_error=error, due=due)
                    o.given_up_at = None if retry_at is not None else _ts(at)

    def sent_count(self, request_id: str | None = None) -> int:
        with self._lock:
            return sum(
                o.sent_at is not None and request_id in (None, o.item.request_id)
                for o in self._state.outbox
            )


def _pinned(pinned: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the submitter's Python rules required, as stored (None: nothing)."""
    return json.loads(json.dumps(dict(pinned))) if pinned else None
