"""The web inbox's sign-in links and sessions in the PostgreSQL journal (as
:mod:`.sqlite_sessions` keeps them in SQLite): tables of their own, each change in one
transaction with its service-log entry; a link is spent by one ``UPDATE`` that checks it is
unspent, so two hosts cannot both use it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from ..errors import DuplicateError
from ..identity import Session, SignInLink, same_name
from ..store import ServiceEntry
from ..times import format_ts, parse_ts
from .pg_db import BAD_ROW, Conflict, PgDatabase
from .pg_steps import Tx, lock_head
from .service_chain import ServiceRow
from .session_rows import (
    LINK_MADE,
    LINK_USED,
    SESSION_ENDED,
    SIGNED_IN,
    end_details,
    link_details,
    session_details,
    session_problems,
    used_details,
)
from .sqlite_sessions import _link, _may_open, _session

_LINK = "SELECT key, name, created, expires, used FROM sign_in_links"
_SESSION = "SELECT key, name, created, expires, how, client, ended, credential FROM sessions"
_LOGGED = (
    "SELECT seq, at, by, event, subject, details, prev_hash, hash, uid FROM service_log "
    f"WHERE event IN ('{LINK_MADE}', '{LINK_USED}', '{SIGNED_IN}', '{SESSION_ENDED}') "
    "ORDER BY seq"
)
Log = Callable[[Tx, datetime, str, str, str, tuple[str, ...]], ServiceEntry]


class PgSessionTable:
    """The sign-in links and sessions of :class:`~hitl_vault.journal.pg.PgJournal`, on the
    database it is handed, logged through ``log`` (in the same transaction)."""

    def __init__(self, db: PgDatabase, log: Log) -> None:
        self._db = db
        self._log = log

    def problems(self) -> list[str]:
        """Every session and sign-in link that is not what the service log says (see
        :func:`.session_rows.session_problems`), all read at one moment."""
        log, sessions, links = self._db.snapshot(_LOGGED, _SESSION + " ORDER BY n", _LINK)
        problems: list[str] = []
        kept: list[Session] = []
        for row in sessions:
            try:
                kept.append(_session(row))
            except BAD_ROW as e:
                problems.append(f"session {str(row[0])[:12]}: a row hitl-vault did not write ({e})")
        made: list[SignInLink] = []
        for row in links:
            try:
                made.append(_link(row))
            except BAD_ROW as e:
                problems.append(
                    f"sign-in link {str(row[0])[:12]}: a row hitl-vault did not write ({e})"
                )
        rows = [ServiceRow(*r) for r in log]
        return problems + session_problems(rows, kept, made)

    def add_sign_in_link(self, link: SignInLink, at: datetime, by: str) -> None:
        try:
            with self._db.write() as db:
                lock_head(db)  # first: writers never wait on each other in a circle
                db.execute(
                    "INSERT INTO sign_in_links (key, name, created, expires) VALUES (%s,%s,%s,%s)",
                    (link.key, link.name, format_ts(link.created), format_ts(link.expires)),
                )
                self._log(db, at, by, LINK_MADE, link.name, link_details(link))
        except Conflict:
            raise DuplicateError(f"sign-in link {link.key[:12]}") from None

    def sign_in_link(self, key: str) -> SignInLink | None:
        found = self._db.rows(_LINK + " WHERE key = %s", (key,), _link)
        return found[0] if found else None

    def spend_sign_in_link(self, key: str, at: datetime) -> bool:
        with self._db.write() as db:
            lock_head(db)  # first, as every write: none waits on another in a circle
            spent = db.execute(
                "UPDATE sign_in_links SET used = %s WHERE key = %s AND used IS NULL",
                (format_ts(at), key),
            ).rowcount
            if spent:  # logged in the same transaction: a spend undone shows in verify
                link = _link(db.execute(_LINK + " WHERE key = %s", (key,)).fetchone())
                self._log(db, at, link.name, LINK_USED, link.name, used_details(link))
        return bool(spent)

    def add_session(self, session: Session, at: datetime, by: str) -> bool:
        s = session
        try:
            with self._db.write() as db:
                lock_head(db)  # first: writers never wait on each other in a circle
                person = db.execute(
                    "SELECT disabled, changed FROM people WHERE key = %s", (same_name(s.name),)
                ).fetchone()
                if not _may_open(person, s):
                    return False
                db.execute(
                    "INSERT INTO sessions (key, name, person, created, expires, how, client, "
                    "credential) "
                    "VALUES (%s,%s,%s,%s,%s,%s,%s,%s)",
                    (s.key, s.name, same_name(s.name), format_ts(s.created),
                     format_ts(s.expires), s.how, s.client, s.credential),
                )  # fmt: skip
                self._log(db, at, by, SIGNED_IN, s.name, session_details(s))
        except Conflict:
            raise DuplicateError(f"session {s.id}") from None
        return True

    def session(self, key: str) -> Session | None:
        found = self._db.rows(_SESSION + " WHERE key = %s", (key,), _session)
        return found[0] if found else None

    def end_sessions(
        self, name: str, at: datetime, by: str, why: str, key: str | None = None
    ) -> int:
        when = format_ts(at)
        ended = 0
        with self._db.write() as db:
            lock_head(db)  # first: writers never wait on each other in a circle
            rows = db.execute(
                _SESSION + " WHERE person = %s AND ended IS NULL AND expires > %s"
                + (" AND key = %s" if key is not None else "") + " ORDER BY n",
                (same_name(name), when, *((key,) if key is not None else ())),
            ).fetchall()  # fmt: skip
            for session in self._db.converted(rows, _session):
                db.execute("UPDATE sessions SET ended = %s WHERE key = %s", (when, session.key))
                ended_now = replace(session, ended=parse_ts(when))
                self._log(db, at, by, SESSION_ENDED, session.name, end_details(ended_now, why))
                ended += 1
        return ended
