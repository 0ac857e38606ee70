"""An in-memory journal for tests and experiments: :class:`MemoryJournal`.

``Vault(path, journal=MemoryJournal())`` runs every operation (submit, decide,
wait, ``run(once=True)``) with the journal in this process's memory and the notes
in a real folder. It keeps the SQLite journal's semantics, held by one contract
test run against both (``tests/test_store_contract.py``): the same status moves,
the same hash chains (each entry's SHA-256 covers the one before it, so
``verify_chain`` finds an edited entry), history, outbox, cursors and flags, people,
credentials, settings and the service log, the decision links' key and the
links spent, and times kept to the second as SQLite keeps them.

What it cannot do, it does for its own process only:

* nothing is durable: it ends with the process;
* no other process sees it, so :meth:`MemoryJournal.watch` wakes after this
  process's writes only (made from any thread);
* its daemon lock is process-local: a second daemon on the same MemoryJournal in
  this process is refused, and a daemon in another process never sees it.

Like the SQLite journal it is one class over collaborators, each handed the
:class:`~hitl_vault.journal.memory_state.Memory` it works on.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any

from .chain import Entry
from .errors import DaemonRunningError
from .identity import Credential, Person, Session, SignInLink
from .journal.memory_access import MemoryAccess
from .journal.memory_allows import MemoryAllows
from .journal.memory_book import MemoryBook
from .journal.memory_links import MemoryLinks
from .journal.memory_read import MemoryReader
from .journal.memory_sessions import MemorySessions
from .journal.memory_state import Memory
from .journal.memory_steps import MemorySteps
from .model import Request, Status, Transition, Waiting
from .policy.always import Allow
from .store import Attention, Outgoing, ServiceEntry


class ProcessLock:
    """The daemon lock of a :class:`MemoryJournal`: held by one daemon of this process at a
    time, never seen by another process."""

    def __init__(self, memory: Memory) -> None:
        self._m = memory
        self._mine = False

    def acquire(self) -> ProcessLock:
        with self._m.lock:
            if self._m.daemon is not None:
                raise DaemonRunningError(self._m.path, self._m.daemon)
            self._m.daemon = f"thread {threading.current_thread().name} of this process"
            self._mine = True
        return self

    def release(self) -> None:
        with self._m.lock:
            if self._mine:
                self._m.daemon, self._mine = None, False


class MemoryJournal:
    """A :class:`~hitl_vault.store.JournalStore` in memory (see the module for its limits)."""

    def __init__(self, name: str = "memory") -> None:
        self._m = Memory(Path(f"<{name} journal>"))
        self._steps = MemorySteps(self._m)
        self._read = MemoryReader(self._m)
        self._book = MemoryBook(self._m)
        self._access = MemoryAccess(self._m)
        self._allows = MemoryAllows(self._m, self._access._log)
        self._sessions = MemorySessions(self._m, self._access._log)
        self._links = MemoryLinks(self._m)

    def __repr__(self) -> str:
        return f"MemoryJournal({self._m.path.name!r})"

    @property
    def path(self) -> Path:
        """How errors name it."""
        return self._m.path

    # --- lifetime, transactions, this process's word and lock -----------------------------

    @property
    def batching(self) -> bool:
        return self._m.batching

    def batch(self) -> AbstractContextManager[None]:
        """Many writes, all or none; other threads wait until the batch ends."""
        return self._m.batch()

    def wait_for_lock(self, seconds: float) -> None:
        """Nothing to wait for: no other process writes it."""

    def close(self) -> None:
        """Nothing to release. Every Vault given this journal closes it, so it must not
        silence the others' waits: each wait's waker leaves when that wait ends."""

    def watch(self, wake: Callable[[], None]) -> AbstractContextManager[None]:
        """Wake after every committed write of this process (no other process can write it)."""
        return self._m.watching(wake)

    def files(self) -> Path | None:
        """None: not kept in files."""
        return None

    def written_elsewhere(self, changed: Path) -> bool:
        return True  # (no files: never asked)

    def daemon_lock(self) -> ProcessLock:
        return ProcessLock(self._m)

    def daemon_running(self) -> bool:
        return self._m.daemon is not None

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

    def history(self, request_id: str) -> list[Transition]:
        """The request's steps in order (what ``get(...).history`` holds)."""
        return self._read.history(request_id)

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

    def unproven(
        self, request_id: str, params: Mapping[str, Any], status: Status = Status.APPROVED
    ) -> str | None:
        return self._read.unproven(request_id, params, status)

    def proposal(self, source: str) -> str | None:
        return self._read.proposal(source)

    def last_seq(self) -> int:
        return self._read.last_seq()

    def feed(self, seq: int) -> list[tuple[int, str, Transition]]:
        return self._read.feed(seq)

    def recent_entries(
        self, limit: int = 20
    ) -> list[tuple[str, Transition, int | None, str | None]]:
        return self._read.recent_entries(limit)

    def entries(self, request_id: str | None = None) -> list[Entry]:
        return self._read.entries(request_id)

    def verify_chain(self) -> list[str]:
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
        return self._book.paths()

    def last_change(self, request_id: str) -> tuple[str | None, datetime] | None:
        return self._book.last_change(request_id)

    def record_policy(self, text: str | None, at: datetime) -> str | None:
        return self._book.record_policy(text, at)

    def policy_changes(self, limit: int = 5) -> list[tuple[datetime, str, str]]:
        return self._book.policy_changes(limit)

    def flag(self, path: str, message: str, at: datetime, request_id: str | None = None) -> bool:
        return self._book.flag(path, message, at, request_id)

    def unflag(self, path: str) -> None:
        self._book.unflag(path)

    def attention(self) -> list[Attention]:
        return self._book.attention()

    def cursor(self, name: str) -> int | None:
        return self._book.cursor(name)

    def move_cursor(self, name: str, seq: int) -> None:
        self._book.move_cursor(name, seq)

    def enqueue(
        self,
        items: Iterable[tuple[str, str, str]],
        at: datetime,
        cursor: tuple[str, int] | None = None,
    ) -> int:
        return self._book.enqueue(items, at, cursor)

    def outgoing(self, now: datetime | None = None, limit: int = 100) -> list[Outgoing]:
        return self._book.outgoing(now, limit)

    def sent(self, item_id: int, at: datetime) -> None:
        self._book.sent(item_id, at)

    def not_sent(self, item_id: int, at: datetime, error: str, retry_at: datetime | None) -> None:
        self._book.not_sent(item_id, at, error, retry_at)

    def sent_count(self, request_id: str | None = None) -> int:
        return self._book.sent_count(request_id)

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
