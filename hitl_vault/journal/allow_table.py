"""The "always" allows in the journal: a table of their own, each change in one
transaction with its service-log entry."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from ..errors import DuplicateError
from ..policy.always import Allow
from ..times import format_ts, parse_ts
from .allow_rows import allow_details
from .handle import Handle

_ALLOW = (
    "SELECT name, action, params, by, created, until, request_id, prefix, session, cwd, server "
    "FROM allows"
)


def _allow(r: Any) -> Allow:
    params = json.loads(r[2])
    if not isinstance(params, dict):
        raise ValueError(f"params {r[2][:40]} are not a JSON object")
    when = parse_ts(r[4]), parse_ts(r[5])
    return Allow(r[0], r[1], params, r[3], *when, r[6], bool(r[7]), r[8], r[9], r[10])


class AllowTable:
    """The allows of both journals, on the database handle it is handed (whose writes log
    to the service log, in the same transaction)."""

    def __init__(self, db: Handle) -> None:
        self._db = db

    def allows(self, now: datetime | None = None) -> list[Allow]:
        query = f"{_ALLOW} WHERE revoked IS NULL ORDER BY created, {self._db.added}"
        kept = self._db.rows(query, (), _allow)
        return [a for a in kept if now is None or a.until > now]

    def add_allow(self, allow: Allow, by: str) -> None:
        a = allow
        try:
            with self._db.write() as db:
                db.lock_head()  # first: writers never wait on each other in a circle
                db.execute(
                    "INSERT INTO allows (name, action, params, by, created, until, request_id, "
                    "prefix, session, cwd, server) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                    (a.name, a.action, json.dumps(dict(a.params), ensure_ascii=False), a.by,
                     format_ts(a.created), format_ts(a.until), a.request_id, int(a.prefix),
                     a.session, a.cwd, a.server),
                )  # fmt: skip
                db.log(a.created, by, "allow added", a.name, allow_details(a))
        except self._db.conflict:
            raise DuplicateError(f"allow {a.name}") from None

    def revoke_allow(self, name: str, at: datetime, by: str) -> bool:
        with self._db.write() as db:
            db.lock_head()  # first: writers never wait on each other in a circle
            done = db.execute(
                "UPDATE allows SET revoked = ? WHERE name = ? AND revoked IS NULL",
                (format_ts(at), name),
            ).rowcount
            if done:
                db.log(at, by, "allow revoked", name, ())
        return bool(done)
