"""The web inbox's sign-in links and sessions in the journal: tables of their own, each
change in one transaction with its service-log entry; a link is spent by one ``UPDATE``
that checks it is unspent, so two processes (or hosts) cannot both use it."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime
from typing import Any

from ..errors import DuplicateError
from ..identity import Session, SignInLink, same_name
from ..times import format_ts, parse_ts
from .handle import BAD_ROW, Handle
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

_LINK = "SELECT key, name, created, expires, used FROM sign_in_links"
_SESSION = "SELECT key, name, created, expires, how, client, ended, credential FROM sessions"
_LOGGED = (
    "SELECT seq, at, by, event, subject, details, prev_hash, hash, uid FROM service_log "
    f"WHERE event IN ('{LINK_MADE}', '{LINK_USED}', '{SIGNED_IN}', '{SESSION_ENDED}') "
    "ORDER BY seq"
)


def _opt_ts(value: str | None) -> datetime | None:
    return None if value is None else parse_ts(value)


def _link(r: Any) -> SignInLink:
    return SignInLink(r[0], r[1], parse_ts(r[2]), parse_ts(r[3]), _opt_ts(r[4]))


def _session(r: Any) -> Session:
    return Session(r[0], r[1], parse_ts(r[2]), parse_ts(r[3]), r[4], r[5], _opt_ts(r[6]), r[7])


def _may_open(person: Any, session: Session) -> bool:
    """Whether a person's row as a session's write reads it (``disabled, changed``; None: no
    such person) lets the session be opened: enabled, unchanged since it was made."""
    return person is not None and not person[0] and parse_ts(person[1]) <= session.created


class SessionTable:
    """The sign-in links and sessions of both journals, on the database handle it is handed
    (whose writes log to the service log, in the same transaction)."""

    def __init__(self, db: Handle) -> None:
        self._db = db

    def problems(self) -> list[str]:
        """Every session and sign-in link that is not what the service log says (see
        :func:`.session_rows.session_problems`), all read at one moment."""
        by_age = f"{_SESSION} ORDER BY {self._db.added}"
        log, sessions, links = self._db.snapshot(_LOGGED, by_age, _LINK)
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
                db.lock_head()  # first: writers never wait on each other in a circle
                db.execute(
                    "INSERT INTO sign_in_links (key, name, created, expires) VALUES (?,?,?,?)",
                    (link.key, link.name, format_ts(link.created), format_ts(link.expires)),
                )
                db.log(at, by, LINK_MADE, link.name, link_details(link))
        except self._db.conflict:
            raise DuplicateError(f"sign-in link {link.key[:12]}") from None

    def sign_in_link(self, key: str) -> SignInLink | None:
        found = self._db.rows(_LINK + " WHERE key = ?", (key,), _link)
        return found[0] if found else None

    def spend_sign_in_link(self, key: str, at: datetime) -> bool:
        with self._db.write() as db:
            db.lock_head()  # first, as every write: none waits on another in a circle
            spent = db.execute(
                "UPDATE sign_in_links SET used = ? WHERE key = ? AND used IS NULL",
                (format_ts(at), key),
            ).rowcount
            if spent:  # logged in the same transaction: a spend undone shows in verify
                link = _link(db.execute(_LINK + " WHERE key = ?", (key,)).fetchone())
                db.log(at, link.name, LINK_USED, link.name, used_details(link))
        return bool(spent)

    def add_session(self, session: Session, at: datetime, by: str) -> bool:
        s = session
        try:
            with self._db.write() as db:
                db.lock_head()  # first: writers never wait on each other in a circle
                person = db.execute(
                    "SELECT disabled, changed FROM people WHERE key = ?", (same_name(s.name),)
                ).fetchone()
                if not _may_open(person, s):
                    return False
                db.execute(
                    "INSERT INTO sessions (key, name, person, created, expires, how, client, "
                    "credential) "
                    "VALUES (?,?,?,?,?,?,?,?)",
                    (s.key, s.name, same_name(s.name), format_ts(s.created),
                     format_ts(s.expires), s.how, s.client, s.credential),
                )  # fmt: skip
                db.log(at, by, SIGNED_IN, s.name, session_details(s))
        except self._db.conflict:
            raise DuplicateError(f"session {s.id}") from None
        return True

    def session(self, key: str) -> Session | None:
        found = self._db.rows(_SESSION + " WHERE key = ?", (key,), _session)
        return found[0] if found else None

    def end_sessions(
        self, name: str, at: datetime, by: str, why: str, key: str | None = None
    ) -> int:
        when = format_ts(at)
        ended = 0
        order = f" ORDER BY created, {self._db.added}"  # oldest first
        with self._db.write() as db:
            db.lock_head()  # first: writers never wait on each other in a circle
            rows = db.execute(
                _SESSION + " WHERE person = ? AND ended IS NULL AND expires > ?"
                + (" AND key = ?" if key is not None else "") + order,
                (same_name(name), when, *((key,) if key is not None else ())),
            ).fetchall()  # fmt: skip
            for session in self._db.converted(rows, _session):
                db.execute("UPDATE sessions SET ended = ? WHERE key = ?", (when, session.key))
                ended_now = replace(session, ended=parse_ts(when))
                db.log(at, by, SESSION_ENDED, session.name, end_details(ended_now, why))
                ended += 1
        return ended
