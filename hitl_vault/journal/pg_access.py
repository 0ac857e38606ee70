"""People, credentials, the service's settings and the service log, in the PostgreSQL
journal (rows converted as the SQLite journal's are, :mod:`.sqlite_access`).

Every change is one transaction with its service-log entry, so a change is never made
without its log line nor logged without being made. Marking a credential used is the
exception: it touches only its own column, outside every chain, without an fsync.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from ..chain import RECORDER_UID
from ..errors import DuplicateError
from ..identity import Credential, Person, same_name
from ..store import ServiceEntry
from ..times import format_ts
from .pg_db import BAD_ROW, Conflict, PgDatabase
from .pg_steps import Tx, lock_head
from .service_chain import (
    ServiceRow,
    credential_details,
    expected_state,
    person_details,
    revocation_details,
    service_problems,
    state_problems,
)
from .sqlite_access import _credential, _person

_PERSON = "SELECT name, uids, notify, disabled, created, changed FROM people"
_CREDENTIAL = (
    "SELECT id, name, role, secret_sha, created, expires, actions, revoked, last_used "
    "FROM credentials"
)
_SERVICE = "SELECT seq, at, by, event, subject, details, prev_hash, hash, uid FROM service_log"


class PgAccess:
    """The people, credentials, settings and service log of
    :class:`~hitl_vault.journal.pg.PgJournal`, on the database it is handed."""

    def __init__(self, db: PgDatabase) -> None:
        self._db = db
        self._write = db.write

    # --- the service log --------------------------------------------------------------------

    def _log(
        self,
        db: Tx,
        at: datetime,
        by: str,
        event: str,
        subject: str,
        details: tuple[str, ...],
    ) -> ServiceEntry:
        # the head row holds the newest entry's position and hash: locked, one writer at a time
        seq, prev = db.execute("SELECT service_seq, service_hash FROM head FOR UPDATE").fetchone()
        row = ServiceRow.make(seq + 1, prev, at, by, event, subject, details, RECORDER_UID)
        db.execute(
            "INSERT INTO service_log (seq, at, by, event, subject, details, prev_hash, hash, uid) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
            (row.seq, row.at, row.by, row.event, row.subject, row.details, row.prev_hash,
             row.hash, row.uid),
        )  # fmt: skip
        db.execute("UPDATE head SET service_seq = %s, service_hash = %s", (row.seq, row.hash))
        return row.entry()

    def log_service(
        self, at: datetime, by: str, event: str, subject: str, details: tuple[str, ...] = ()
    ) -> ServiceEntry:
        with self._write() as db:
            lock_head(db)  # first: writers never wait on each other in a circle
            return self._log(db, at, by, event, subject, details)

    def service_log(self, limit: int | None = None) -> list[ServiceEntry]:
        rows = self._db.rows(
            _SERVICE + " ORDER BY seq DESC LIMIT %s",
            (limit,),
            lambda r: ServiceRow(*r),
        )
        return self._db.converted(rows, ServiceRow.entry)

    def service_problems(self) -> list[str]:
        """Every break in the service log's chain, and every row of people, credentials and
        settings that is not what the log says (see :func:`.service_chain.state_problems`)."""
        log, last, people_rows, credential_rows, setting_rows = self._db.snapshot(
            _SERVICE + " ORDER BY seq",
            "SELECT service_seq FROM head",
            "SELECT key, name, uids, notify, disabled, created, changed FROM people",
            "SELECT key, " + _CREDENTIAL[len("SELECT ") :],
            "SELECT name, value FROM settings",
        )
        rows = self._db.converted(log, lambda r: ServiceRow(*r))
        problems = service_problems(rows, last[0][0] if last else 0)
        people: dict[str, Person] = {}
        for key, *row in people_rows:
            try:
                people[key] = _person(row)
            except BAD_ROW as e:
                problems.append(f"person {row[0]}: a row hitl-vault did not write ({e})")
                continue
            if key != same_name(row[0]):
                problems.append(f"person {row[0]}: kept under another name's key ({key})")
        credentials: dict[str, Credential] = {}
        for key, *row in credential_rows:
            try:
                credentials[row[0]] = _credential(row)
            except BAD_ROW as e:
                problems.append(f"token {row[0]}: a row hitl-vault did not write ({e})")
                continue
            if key != same_name(row[1]):
                problems.append(f"token {row[0]} ({row[1]}): kept under another name's key")
        settings = {str(name): str(value) for name, value in setting_rows}
        return problems + state_problems(expected_state(rows), people, credentials, settings)

    # --- people ---------------------------------------------------------------------------

    def person(self, name: str) -> Person | None:
        found = self._db.rows(_PERSON + " WHERE key = %s", (same_name(name),), _person)
        return found[0] if found else None

    def people(self) -> list[Person]:
        return self._db.rows(_PERSON + " ORDER BY key", (), _person)

    def save_person(self, person: Person, at: datetime, by: str, event: str) -> None:
        key = same_name(person.name)
        with self._write() as db:
            lock_head(db)  # first: writers never wait on each other in a circle
            row = db.execute("SELECT created FROM people WHERE key = %s", (key,)).fetchone()
            created = row[0] if row else format_ts(person.created or at)
            db.execute(
                "INSERT INTO people (key, name, uids, notify, disabled, created, changed) "
                "VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (key) DO UPDATE SET name = "
                "excluded.name, uids = excluded.uids, notify = excluded.notify, disabled = "
                "excluded.disabled, created = excluded.created, changed = excluded.changed",
                (key, person.name, json.dumps(list(person.uids)),
                 json.dumps(list(person.notify), ensure_ascii=False), int(person.disabled),
                 created, format_ts(at)),
            )  # fmt: skip
            self._log(db, at, by, event, person.name, person_details(person))

    # --- credentials ----------------------------------------------------------------------

    def credentials(self, name: str | None = None) -> list[Credential]:
        if name is None:
            return self._db.rows(_CREDENTIAL + " ORDER BY created, n", (), _credential)
        return self._db.rows(
            _CREDENTIAL + " WHERE key = %s ORDER BY created, n", (same_name(name),), _credential
        )

    def credential(self, credential_id: str) -> Credential | None:
        found = self._db.rows(_CREDENTIAL + " WHERE id = %s", (credential_id,), _credential)
        return found[0] if found else None

    def add_credential(self, credential: Credential, at: datetime, by: str) -> None:
        c = credential
        actions = None if c.actions is None else json.dumps(list(c.actions), ensure_ascii=False)
        try:
            with self._write() as db:
                lock_head(db)  # first: writers never wait on each other in a circle
                db.execute(
                    "INSERT INTO credentials (id, name, key, role, secret_sha, created, expires, "
                    "actions, revoked) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
                    (c.id, c.name, same_name(c.name), str(c.role), c.secret_sha,
                     format_ts(c.created), c.expires and format_ts(c.expires), actions,
                     c.revoked and format_ts(c.revoked)),
                )  # fmt: skip
                self._log(db, at, by, "token added", c.name, credential_details(c))
        except Conflict:
            raise DuplicateError(f"credential {c.id}") from None

    def revoke_credentials(self, ids: Iterable[str], at: datetime, by: str, why: str) -> int:
        revoked = 0
        with self._write() as db:
            lock_head(db)  # first: writers never wait on each other in a circle
            for credential_id in dict.fromkeys(ids):
                row = db.execute(
                    _CREDENTIAL + " WHERE id = %s AND revoked IS NULL", (credential_id,)
                ).fetchone()
                if row is None:
                    continue
                db.execute(
                    "UPDATE credentials SET revoked = %s WHERE id = %s",
                    (format_ts(at), credential_id),
                )
                revoked_now = replace(self._db.converted([row], _credential)[0], revoked=at)
                details = revocation_details(revoked_now, why)
                self._log(db, at, by, "token revoked", revoked_now.name, details)
                revoked += 1
        return revoked

    def credential_used(self, credential_id: str, at: datetime) -> None:
        with self._write(durable=False) as db:  # can be lost to a power cut, and nothing fsyncs
            db.execute(
                "UPDATE credentials SET last_used = %s WHERE id = %s",
                (format_ts(at), credential_id),
            )

    # --- settings -------------------------------------------------------------------------

    def setting(self, name: str) -> str | None:
        row = self._db.read_one("SELECT value FROM settings WHERE name = %s", (name,))
        return None if row is None else str(row[0])

    def set_setting(self, name: str, value: str, at: datetime, by: str) -> bool:
        with self._write() as db:
            lock_head(db)  # first: writers never wait on each other in a circle
            row = db.execute("SELECT value FROM settings WHERE name = %s", (name,)).fetchone()
            if row is not None and row[0] == value:
                return False
            db.execute(
                "INSERT INTO settings (name, value, changed) VALUES (%s,%s,%s) ON CONFLICT (name) "
                "DO UPDATE SET value = excluded.value, changed = excluded.changed",
                (name, value, format_ts(at)),
            )
            was = f"was {row[0]}" if row is not None else "was not set"
            self._log(db, at, by, "setting changed", name, (was, f"now {value}"))
        return True
