"""Recording what happens to requests in the in-memory journal: the same checks, the
same moves and the same hash chain as :class:`~.sqlite_steps.Steps`."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any

from ..chain import GENESIS, RECORDER_ACTOR, RECORDER_UID, Entry, entry_hash
from ..errors import (
    DuplicateError,
    IllegalTransitionError,
    NotRetryableError,
    RequestNotFoundError,
)
from ..model import LEGAL_MOVES, RETRYABLE, Kind, Request, Status, Transition
from ..params import params_sha
from ..store import request_flag, retry_link, settable
from ..times import format_ts
from .memory_state import Memory, Row, State, as_json, opt_ts, pinned_as_stored, ts


class MemorySteps:
    """The writes of :class:`~hitl_vault.testing.MemoryJournal` on requests and their
    entries, on the memory it is handed."""

    def __init__(self, memory: Memory) -> None:
        self._m = memory

    def _append(
        self,
        s: State,
        request_id: str,
        t: Transition,
        sha: str | None,
        credential: str | None = None,
    ) -> None:
        prev = s.entries[-1].hash if s.entries else GENESIS
        fields = (
            request_id,
            format_ts(t.at),
            str(t.kind),
            str(t.from_status) if t.from_status is not None else None,
            str(t.to_status),
            t.by,
            t.reason,
            json.dumps(list(t.details), ensure_ascii=False),
            sha,
        )
        digest = entry_hash(prev, fields, RECORDER_UID, RECORDER_ACTOR, credential)
        seq = len(s.entries) + 1
        s.entries.append(
            Entry(seq, *fields, prev, digest, RECORDER_UID, RECORDER_ACTOR, credential)
        )

    def _row(self, request_id: str) -> Row:
        row = self._m.state.rows.get(request_id)
        if row is None:
            raise RequestNotFoundError(request_id)
        return row

    def create(
        self,
        request: Request,
        path: str | None,
        source: str | None = None,
        pinned: Mapping[str, Any] | None = None,
        *,
        credential: str | None = None,
        note_sha: str | None = None,
    ) -> None:
        sha = params_sha(request.params)
        with self._m.write() as s:
            if source is not None and source in s.proposals:
                raise DuplicateError(f"proposal {source}")
            if request.retry_of is not None:
                self._link_retry(s, request)
            if request.id in s.rows:
                raise DuplicateError(f"request {request.id}")
            if source is not None:
                s.proposals[source] = request.id
            stored = replace(
                request,
                created=ts(request.created),
                expires=opt_ts(request.expires),
                decided_at=opt_ts(request.decided_at),
                escalate_at=opt_ts(request.escalate_at),
                params=as_json(request.params),
                executed_at=None,
                result=None,
                error=None,
                path=None,
                retried_as=None,
                history=(),
            )
            s.rows[request.id] = Row(
                stored, path, as_json(request.params), pinned_as_stored(pinned), note_sha
            )
            for t in request.history:
                self._append(s, request.id, t, sha, credential)

    def _link_retry(self, s: State, request: Request) -> None:
        old = request.retry_of
        assert old is not None
        row = s.rows.get(old)
        if row is None:
            raise RequestNotFoundError(old)
        taken = next((r.request.id for r in s.rows.values() if r.request.retry_of == old), None)
        status = row.request.status
        if taken is not None or status not in RETRYABLE:
            raise NotRetryableError(old, status, taken)
        t = retry_link(request, status)
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
        credential: str | None = None,
    ) -> Transition | None:
        fields = settable(fields)
        with self._m.write() as s:
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
                fields["params"] = as_json(fields["params"])
            for key, value in list(fields.items()):
                if isinstance(value, datetime):
                    fields[key] = ts(value)
            row.request = replace(row.request, status=to, **fields)
            row.note_sha = None
            self._append(s, request_id, t, sha, credential)
            s.attention.pop(request_flag(request_id), None)  # a step refused: stale now
            return t

    def record_edit(
        self, request_id: str, params: Mapping[str, Any], *, at: datetime, by: str, changes: str
    ) -> Transition | None:
        with self._m.write() as s:
            row = self._row(request_id)
            if row.request.status is not Status.PENDING:
                return None
            t = Transition(at, Status.PENDING, Status.PENDING, by, "", (changes,), kind=Kind.EDITED)
            row.request = replace(row.request, params=as_json(params))
            row.note_sha = None
            self._append(s, request_id, t, params_sha(params))
            return t

    def record_ignored(self, request_id: str, at: datetime, details: tuple[str, ...]) -> Transition:
        with self._m.write() as s:
            row = self._row(request_id)
            status = row.request.status
            t = Transition(at, status, status, "hitl-vault", "", details, kind=Kind.IGNORED)
            row.note_sha = None
            self._append(s, request_id, t, None)
            return t

    def record_vote(
        self,
        request_id: str,
        *,
        at: datetime,
        by: str,
        approve: bool,
        reason: str,
        count: str,
        details: tuple[str, ...] = (),
        credential: str | None = None,
    ) -> Transition | None:
        to = Status.APPROVED if approve else Status.REJECTED
        t = Transition(at, Status.PENDING, to, by, reason, (count, *details), kind=Kind.VOTED)
        return self._pending_entry(request_id, t, credential)

    def record_escalation(self, request_id: str, at: datetime, to: str) -> Transition | None:
        t = Transition(at, Status.PENDING, Status.PENDING, "hitl-vault", "", (to,), Kind.ESCALATED)
        return self._pending_entry(request_id, t)

    def _pending_entry(
        self, request_id: str, t: Transition, credential: str | None = None
    ) -> Transition | None:
        with self._m.write() as s:
            row = s.rows.get(request_id)
            if row is None or row.request.status is not Status.PENDING:
                return None
            if t.kind is Kind.ESCALATED:
                if row.request.escalate_at is None:  # escalated already, or never will
                    return None
                row.request = replace(row.request, escalate_at=None)
            row.note_sha = None
            self._append(s, request_id, t, None, credential)
            return t
