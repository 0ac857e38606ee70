"""The SQLite journal: what has happened, durably, in one SQLite file under ``.hitl/``.

The journal, not any note, decides what has already happened. :class:`Journal` is
the store (:class:`~hitl_vault.store.JournalStore`) the rest of hitl-vault uses; it
holds one :class:`~hitl_vault.journal.sqlite_db.Database` and hands the work to
collaborators, each given that database: :class:`~.sqlite_steps.Steps` records what
happens to requests (every move one transaction that checks the status, appended to
a SHA-256 hash chain so an edited or deleted entry is detected),
:class:`~.sqlite_access.Access` keeps people, credentials, settings and the service
log. The tables whose SQL is the same as PostgreSQL's have one collaborator for both,
handed a :class:`~.sqlite_handle.SqliteHandle`: :class:`~.reader.Reader` answers the
queries, :class:`~.bookkeeping.Bookkeeping` keeps the rules in force, where notes are and
what needs attention, :class:`~.outbox.Outbox` the notifications,
:class:`~.allow_table.AllowTable` the allows, :class:`~.link_table.LinkTable` the decision
links, and :class:`~.session_table.SessionTable` the web inbox's sign-ins.
Word of other processes' writes comes from a file watcher on the journal's folder
(:mod:`~.sqlite_watch`), and the one-daemon lock is a lock on that folder (:mod:`~.lock`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from ..chain import Entry
from ..errors import JournalMissingError, VaultError
from ..identity import Credential, Person, Session, SignInLink
from ..model import LOCK_FILE, Request, Status, Transition, Waiting
from ..policy.always import Allow
from ..store import Attention, Outgoing, ServiceEntry
from .allow_table import AllowTable
from .bookkeeping import Bookkeeping
from .link_table import LinkTable
from .lock import DaemonLock, daemon_running
from .outbox import Outbox
from .reader import Reader
from .replay import unproven
from .session_table import SessionTable
from .sqlite_access import Access
from .sqlite_db import Database
from .sqlite_handle import SqliteHandle
from .sqlite_steps import Steps
from .sqlite_watch import JournalWatch


def _newest(paths: Iterable[Path]) -> Path | None:
    """The most recently written of ``paths`` (the copy saved last), None if there are none."""
    dated = []
    for path in paths:
        with contextlib.suppress(OSError):  # gone meanwhile
            dated.append((path.stat().st_mtime, path.name, path))
    return max(dated)[2] if dated else None


class Journal:
    """The SQLite store. Safe to share between threads of one process; any number of
    processes may open the same journal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock_path = path.parent / LOCK_FILE
        if not path.exists():
            # Deleted under a daemon that runs still, or that stopped saving a copy (see
            # Database.check_present): a new empty journal here would make every request it
            # knew "not found". Starting anew is moving the copy aside.
            rescued = _newest(path.parent.glob(f"{path.name}.rescued-*"))
            if rescued or daemon_running(self._lock_path):
                raise JournalMissingError(path, rescued)
        self._db = Database(path)
        self._steps = Steps(self._db)
        self._access = Access(self._db)
        # the shared collaborators' way in
        self._handle = SqliteHandle(self._db, self._access._log, self._access._snapshot)
        self._read = Reader(self._handle)
        self._book = Bookkeeping(self._handle)
        self._outbox = Outbox(self._handle)
        self._data_version: int | None = None  # see written_elsewhere
        self._allows = AllowTable(self._handle)
        self._sessions = SessionTable(self._handle)
        self._links = LinkTable(self._handle)
        self._watch = JournalWatch(path)

    def __repr__(self) -> str:
        return f"Journal({str(self.path)!r})"

    # --- lifetime, transactions, other processes ----------------------------------------

    @property
    def batching(self) -> bool:
        return self._db.batching

    def batch(self) -> AbstractContextManager[None]:
        """Many writes, one durable commit (see :meth:`Database.batch`)."""
        return self._db.batch()

    def wait_for_lock(self, seconds: float) -> None:
        """How long a write waits for another process's write before it fails (30 s at first)."""
        self._db.wait_for_lock(seconds)

    def close(self) -> None:
        self._watch.close()
        self._db.close()

    def watch(self, wake: Callable[[], None]) -> AbstractContextManager[None]:
        """Wake on every change of the journal's files (see :mod:`~.sqlite_watch`)."""
        return self._watch.watching(wake)

    def files(self) -> Path:
        """``.hitl/``: every commit changes ``journal.db``, its ``-wal`` or ``-shm`` there."""
        return self.path.parent

    def written_elsewhere(self, changed: Path) -> bool:
        """A commit shows as a change of ``-wal``; SQLite's ``data_version`` of this
        connection moves only with another connection's commits (another process's, another
        Vault's). Anything else in the folder (the journal itself replaced, gone) may be."""
        if changed.name != f"{self.path.name}-wal":
            return True
        try:
            version: int = self._db.read_one("PRAGMA data_version")[0]
        except (sqlite3.Error, VaultError):  # the step that follows says what is wrong
            return True
        seen, self._data_version = self._data_version, version
        return version != seen

    def daemon_lock(self) -> DaemonLock:
        """A lock on the journal's folder, ``daemon.lock`` beside it saying who holds it."""
        return DaemonLock(self._lock_path)

    def daemon_running(self) -> bool:
        return daemon_running(self._lock_path)

    def feed(self, seq: int) -> list[tuple[int, str, Transition]]:
        """Every entry after ``seq``; first checks the file is still there, since this is what
        a process asks when told of a change (a journal deleted under it must not go unseen)."""
        self._db.check_present()
        return self._read.feed(seq)

    def history(self, request_id: str) -> list[Transition]:
        """The request's steps in order (what ``get(...).history`` holds)."""
        return self._read.history(request_id)

    def unproven(
        self, request_id: str, params: Mapping[str, Any], status: Status = Status.APPROVED
    ) -> str | None:
        """Why the entries do not prove that ``params`` were approved and the request is at
        ``status`` now; None when they do. Checked right before an action runs."""
        return unproven(self.entries(request_id), self.status_of(request_id), params, status)

    # --- the rest: handed to the collaborator whose job it is ------------------------------

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
        self._steps.create(request, path, source, pinned, credential=credential, note_sha=note_sha)

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
        return self._steps.transition(
            request_id,
            to,
            at=at,
            by=by,
            reason=reason,
            details=details,
            expect=expect,
            fields=fields,
            credential=credential,
        )

    def record_edit(
        self, request_id: str, params: Mapping[str, Any], *, at: datetime, by: str, changes: str
    ) -> Transition | None:
        return self._steps.record_edit(request_id, params, at=at, by=by, changes=changes)

    def record_ignored(self, request_id: str, at: datetime, details: tuple[str, ...]) -> Transition:
        return self._steps.record_ignored(request_id, at, details)

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
        return self._steps.record_vote(
            request_id, at=at, by=by, approve=approve, reason=reason, count=count,
            details=details, credential=credential,
        )  # fmt: skip

    def record_escalation(self, request_id: str, at: datetime, to: str) -> Transition | None:
        return self._steps.record_escalation(request_id, at, to)

    def escalating(self, before: datetime) -> list[str]:
        return self._read.escalating(before)

    def next_escalation(self) -> datetime | None:
        return self._read.next_escalation()

    def get(self, request_id: str, *, history: bool = True) -> Request | None:
        return self._read.get(request_id, history=history)

    def requests(
        self, status: Status | None = None, limit: int | None = None, agent: str | None = None
    ) -> list[Request]:
        return self._read.requests(status, limit, agent)

    def ids(self, status: Status | None = None) -> list[str]:
        return self._read.ids(status)

    def status_of(self, request_id: str) -> Status | None:
        return self._read.status_of(request_id)

    def counts(self) -> dict[Status, int]:
        return self._read.counts()

    def pending_by_expiry(self, limit: int) -> list[Waiting]:
        return self._read.pending_by_expiry(limit)

    def expiring(self, before: datetime | None = None) -> list[tuple[str, datetime]]:
        return self._read.expiring(before)

    def next_expiry(self) -> datetime | None:
        return self._read.next_expiry()

    def created_params(self, request_id: str) -> dict[str, Any]:
        return self._read.created_params(request_id)

    def pinned(self, request_id: str) -> dict[str, Any]:
        return self._read.pinned(request_id)

    def decision_uid(self, request_id: str) -> int | None:
        return self._read.decision_uid(request_id)

    def proposal(self, source: str) -> str | None:
        return self._book.proposal(source)

    def last_seq(self) -> int:
        return self._read.last_seq()

    def recent_entries(
        self, limit: int = 20
    ) -> list[tuple[str, Transition, int | None, str | None]]:
        return self._read.recent_entries(limit)

    def entries(self, request_id: str | None = None) -> list[Entry]:
        return self._read.entries(request_id)

    def verify_chain(self) -> list[str]:
        """Every break in the requests' chain and the service log's, and damage in the file."""
        return (
            self._read.verify_chain() + self._access.service_problems() + self._sessions.problems()
        )

    def set_path(
        self, request_id: str, path: str, note_sha: str | None = None, entries: int = 0
    ) -> None:
        self._book.set_path(request_id, path, note_sha, entries)

    def note_sha(self, request_id: str) -> tuple[str | None, str | None]:
        return self._book.note_sha(request_id)

    def paths(self) -> dict[str, str]:
        return self._read.paths()

    def last_change(self, request_id: str) -> tuple[str | None, datetime] | None:
        return self._read.last_change(request_id)

    def record_policy(self, text: str | None, at: datetime) -> str | None:
        return self._book.record_policy(text, at)

    def policy_changes(self, limit: int = 5) -> list[tuple[datetime, str, str]]:
        return self._book.policy_changes(limit)

    def flag(self, path: str, message: str, at: datetime, request_id: str | None = None) -> bool:
        return self._book.flag(path, message, at, request_id)

    def unflag(self, path: str) -> None:
        self._book.unflag(path)

    def attention(self) -> list[Attention]:
        return self._read.attention()

    def cursor(self, name: str) -> int | None:
        return self._outbox.cursor(name)

    def move_cursor(self, name: str, seq: int) -> None:
        self._outbox.move_cursor(name, seq)

    def enqueue(
        self,
        items: Iterable[tuple[str, str, str]],
        at: datetime,
        cursor: tuple[str, int] | None = None,
    ) -> int:
        return self._outbox.enqueue(items, at, cursor)

    def outgoing(self, now: datetime | None = None, limit: int = 100) -> list[Outgoing]:
        return self._outbox.outgoing(now, limit)

    def sent(self, item_id: int, at: datetime) -> None:
        self._outbox.sent(item_id, at)

    def not_sent(self, item_id: int, at: datetime, error: str, retry_at: datetime | None) -> None:
        self._outbox.not_sent(item_id, at, error, retry_at)

    def sent_count(self, request_id: str | None = None) -> int:
        return self._outbox.sent_count(request_id)

    def person(self, name: str) -> Person | None:
        return self._access.person(name)

    def people(self) -> list[Person]:
        return self._access.people()

    def save_person(self, person: Person, at: datetime, by: str, event: str) -> None:
        self._access.save_person(person, at, by, event)

    def credentials(self, name: str | None = None) -> list[Credential]:
        return self._access.credentials(name)

    def credential(self, credential_id: str) -> Credential | None:
        return self._access.credential(credential_id)

    def add_credential(self, credential: Credential, at: datetime, by: str) -> None:
        self._access.add_credential(credential, at, by)

    def revoke_credentials(self, ids: Iterable[str], at: datetime, by: str, why: str) -> int:
        return self._access.revoke_credentials(ids, at, by, why)

    def credential_used(self, credential_id: str, at: datetime) -> None:
        self._access.credential_used(credential_id, at)

    def setting(self, name: str) -> str | None:
        return self._access.setting(name)

    def set_setting(self, name: str, value: str, at: datetime, by: str) -> bool:
        return self._access.set_setting(name, value, at, by)

    def log_service(
        self, at: datetime, by: str, event: str, subject: str, details: tuple[str, ...] = ()
    ) -> ServiceEntry:
        return self._access.log_service(at, by, event, subject, details)

    def service_log(self, limit: int | None = None) -> list[ServiceEntry]:
        return self._access.service_log(limit)

    def allows(self, now: datetime | None = None) -> list[Allow]:
        return self._allows.allows(now)

    def add_allow(self, allow: Allow, by: str) -> None:
        self._allows.add_allow(allow, by)

    def revoke_allow(self, name: str, at: datetime, by: str) -> bool:
        return self._allows.revoke_allow(name, at, by)

    def add_sign_in_link(self, link: SignInLink, at: datetime, by: str) -> None:
        self._sessions.add_sign_in_link(link, at, by)

    def sign_in_link(self, key: str) -> SignInLink | None:
        return self._sessions.sign_in_link(key)

    def spend_sign_in_link(self, key: str, at: datetime) -> bool:
        return self._sessions.spend_sign_in_link(key, at)

    def add_session(self, session: Session, at: datetime, by: str) -> bool:
        return self._sessions.add_session(session, at, by)

    def session(self, key: str) -> Session | None:
        return self._sessions.session(key)

    def end_sessions(
        self, name: str, at: datetime, by: str, why: str, key: str | None = None
    ) -> int:
        return self._sessions.end_sessions(name, at, by, why, key)

    def link_key(self) -> bytes:
        return self._links.link_key()

    def spend_link(self, link: str, request_id: str, at: datetime) -> bool:
        return self._links.spend_link(link, request_id, at)

    def link_spent(self, link: str) -> bool:
        return self._links.link_spent(link)
