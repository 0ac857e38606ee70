"""The in-memory journal's sign-in links and sessions (as :mod:`.session_table` keeps
them): each change made with its service-log entry, in one write."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from datetime import datetime

from ..errors import DuplicateError
from ..identity import Session, SignInLink, same_name
from ..store import ServiceEntry
from .memory_state import Memory, State, ts
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

Log = Callable[[State, datetime, str, str, str, tuple[str, ...]], ServiceEntry]


class MemorySessions:
    """The sign-in links and sessions of :class:`~hitl_vault.testing.MemoryJournal`, on the
    memory it is handed, logged through ``log`` (in the same write)."""

    def __init__(self, memory: Memory, log: Log) -> None:
        self._m = memory
        self._log = log

    def problems(self) -> list[str]:
        """Every session and sign-in link that is not what the service log says (see
        :func:`.session_rows.session_problems`)."""
        with self._m.lock:
            s = self._m.state
            rows, sessions, links = (
                list(s.service),
                list(s.sessions.values()),
                list(s.sign_in_links.values()),
            )
        return session_problems(rows, sessions, links)

    def add_sign_in_link(self, link: SignInLink, at: datetime, by: str) -> None:
        with self._m.write() as s:
            if link.key in s.sign_in_links:
                raise DuplicateError(f"sign-in link {link.key[:12]}")
            kept = replace(link, created=ts(link.created), expires=ts(link.expires), used=None)
            s.sign_in_links[link.key] = kept
            self._log(s, at, by, LINK_MADE, link.name, link_details(kept))

    def sign_in_link(self, key: str) -> SignInLink | None:
        with self._m.lock:
            return self._m.state.sign_in_links.get(key)

    def spend_sign_in_link(self, key: str, at: datetime) -> bool:
        with self._m.write() as s:
            link = s.sign_in_links.get(key)
            if link is None or link.used is not None:
                return False
            s.sign_in_links[key] = spent = replace(link, used=ts(at))
            self._log(s, at, link.name, LINK_USED, link.name, used_details(spent))
        return True

    def add_session(self, session: Session, at: datetime, by: str) -> bool:
        with self._m.write() as s:
            if session.key in s.sessions:
                raise DuplicateError(f"session {session.id}")
            person = s.people.get(same_name(session.name))
            changed = person.changed or person.created if person is not None else None
            if person is None or person.disabled or (changed and changed > session.created):
                return False
            kept = replace(
                session, created=ts(session.created), expires=ts(session.expires), ended=None
            )
            s.sessions[session.key] = kept
            self._log(s, at, by, SIGNED_IN, session.name, session_details(kept))
        return True

    def session(self, key: str) -> Session | None:
        with self._m.lock:
            return self._m.state.sessions.get(key)

    def end_sessions(
        self, name: str, at: datetime, by: str, why: str, key: str | None = None
    ) -> int:
        person, when = same_name(name), ts(at)
        ended = 0
        with self._m.write() as s:
            for session in list(s.sessions.values()):  # oldest first: kept as added
                if same_name(session.name) != person or not session.open(when):
                    continue
                if key is not None and session.key != key:
                    continue
                s.sessions[session.key] = replace(session, ended=when)
                details = end_details(s.sessions[session.key], why)
                self._log(s, at, by, SESSION_ENDED, session.name, details)
                ended += 1
        return ended
