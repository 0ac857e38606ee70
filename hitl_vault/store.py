"""The one storage seam: :class:`JournalStore`, what the rest of hitl-vault needs from a
journal, each method with its contract in one line (as huey's ``BaseStorage``).

Three stores ship: :class:`~hitl_vault.journal.sqlite.Journal` (SQLite in ``.hitl/``, the
default), :class:`~hitl_vault.journal.pg.PgJournal` (PostgreSQL, shared by several hosts)
and :class:`~hitl_vault.testing.MemoryJournal` (in memory); ``Vault(path, journal=...)``
takes any. A new one satisfies this protocol and passes ``tests/test_store_contract.py``.

What crosses the seam are our types and our errors, never the storage's (no
``sqlite3`` exception): :class:`DuplicateError` from ``create``,
:class:`RequestNotFoundError` for an unknown id where one must exist,
:class:`IllegalTransitionError` for a move the model forbids,
:class:`JournalUnavailableError` when it cannot be used just now (try again),
:class:`JournalDamagedError` when it cannot be read at all, and its kind
:class:`JournalMissingError` when it vanished under a running process.

Besides the records, a store brings word that something was written
(:meth:`JournalStore.watch`) and the one-daemon lock (:meth:`JournalStore.daemon_lock`); one
that several hosts share also brings leadership (:class:`LeasedStore`): which of them acts
for the vault is a lease with terms, and the leader's writes carry its term.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from .identity import Credential, Person, Session, SignInLink
from .model import Kind, Request, Status, Transition, Waiting

if TYPE_CHECKING:
    from .chain import Entry
    from .policy.always import Allow


# The fields of a request that :meth:`JournalStore.transition` may set with its ``fields``.
SETTABLE_FIELDS = frozenset(
    {"decided_by", "reason", "decided_at", "executed_at", "result", "error", "params"}
)


def settable(fields: Mapping[str, Any] | None) -> dict[str, Any]:
    """``fields`` as a transition sets them; a field no transition may set is a bug."""
    fields = dict(fields or {})
    unknown = set(fields) - SETTABLE_FIELDS
    if unknown:
        raise ValueError(f"cannot set {sorted(unknown)} in a transition")
    return fields


def retry_link(request: Request, old_status: Status) -> Transition:
    """The entry a retried request (at ``old_status``) gets, naming ``request``, its retry: by
    whom and when the retry's own link entry says, else its requester at its creation."""
    link = next((t for t in request.history if t.kind is Kind.LINKED), None)
    by = link.by if link is not None else request.requested_by
    at = link.at if link is not None else request.created
    return Transition(
        at, old_status, old_status, by, "", (f"retried as {request.id}",), Kind.LINKED
    )


@dataclass(frozen=True)
class Attention:
    """A file that needs a human's eye: why, and since when."""

    path: str
    request_id: str | None
    message: str
    since: datetime


def request_flag(request_id: str) -> str:
    """Where Needs attention lists a request itself rather than its note (a step refused for
    it); looking at the note again never clears it, its next transition does."""
    return f"request {request_id}"


@dataclass(frozen=True)
class ServiceEntry:
    """One entry of the service log: a change to people, credentials or settings, or a
    summary of failed sign-ins; chained like the requests' entries (``verify`` checks it)."""

    seq: int
    at: datetime
    by: str  # who made the change (the OS user name, or a credential's name)
    event: str  # ``person added``, ``token revoked``, ``setting changed``, ``auth failed``…
    subject: str  # the person's, credential's or setting's name
    details: tuple[str, ...]


@dataclass(frozen=True)
class Outgoing:
    """A notification recorded in the outbox, not sent yet."""

    id: int
    request_id: str
    event: str
    target: str  # the URL as written in hitl-vault.yaml (``${NAME}`` unresolved)
    created: datetime
    due: datetime
    attempts: int
    last_error: str | None


class VaultLock(Protocol):
    """The one-daemon lock a store hands out (:meth:`JournalStore.daemon_lock`)."""

    def acquire(self) -> VaultLock:
        """Take it now, or raise :class:`DaemonRunningError` naming who holds it."""

    def release(self) -> None:
        """Give it back (a process that dies gives it back too)."""


class Lease(Protocol):
    """This process's side of a shared store's leadership lease (:meth:`LeasedStore.lease`)."""

    seconds: float  # how long a term holds without a renewal
    holder: str  # how this process shows as the holder (host and pid)
    deadline: float  # by time.monotonic(): when the term last taken or renewed may end

    def take(self) -> int | None:
        """Become the leader if the lease has run out: the new term, else None."""

    def renew(self, term: int) -> bool:
        """Hold ``term`` one lease longer from now; False once it is over."""

    def current(self) -> int:
        """The term elected last, live or run out (0: none yet)."""

    def release(self, term: int) -> None:
        """Hand ``term`` back at once (a graceful stop)."""

    def close(self) -> None:
        """Let go of what it holds open (never the term: see :meth:`release`)."""


@runtime_checkable
class LeasedStore(Protocol):
    """A store several hosts share, whose leader is chosen by a lease (PostgreSQL). On any
    other store the one-daemon lock is the lease: whoever holds it leads."""

    def lease(self, seconds: float) -> Lease:
        """This process's side of the vault's lease, ``seconds`` long (not taken yet)."""

    def owner(self, term: int) -> AbstractContextManager[None]:
        """While inside, this thread writes as the leader of ``term``, each write refused
        (:class:`NotLeaderError`) once that term is over."""

    def reclaim(self, request_id: str, at: datetime) -> Transition | None:
        """Claim, journaled, what an earlier term left executing (None: no longer executing)."""


class JournalStore(Protocol):
    """The journal: what happened to every request, durable, shared by every process."""

    # --- lifetime and transactions ---------------------------------------------------
    @property
    def batching(self) -> bool:
        """Inside :meth:`batch`, before its commit."""

    def batch(self) -> AbstractContextManager[None]:
        """Many writes, one durable commit: all of them happen, or none (writes nest inside)."""

    def wait_for_lock(self, seconds: float) -> None:
        """A write waits at most this long for another process's write, then fails."""

    def close(self) -> None:
        """Release the storage (and any watcher it started); nothing is used after this."""

    # --- other processes: word of their writes, and the one-daemon lock ---------------------
    def watch(self, wake: Callable[[], None]) -> AbstractContextManager[None]:
        """While inside, call ``wake()`` (from any thread) soon after a write by any process
        that shares the store; it may also wake for nothing (callers re-read)."""

    def files(self) -> Path | None:
        """The folder whose file changes stand for this store's writes (then a process that
        already watches it may take its events for :meth:`watch`'s); None if not in files."""

    def written_elsewhere(self, changed: Path) -> bool:
        """Whether ``changed`` (in :meth:`files`) may be another's write, not this one's."""

    def daemon_lock(self) -> VaultLock:
        """The lock that lets one daemon at a time act for this journal (not taken yet)."""

    def daemon_running(self) -> bool:
        """Whether some daemon (this process's included) holds :meth:`daemon_lock` now."""

    # --- requests and their steps -------------------------------------------------------
    def create(
        self, request: Request, path: str | None, source: str | None = None,
        pinned: Mapping[str, Any] | None = None, *, credential: str | None = None,
        note_sha: str | None = None,
    ) -> None:  # fmt: skip
        """Record a new request (its ``context`` too) with its history, once per id and per
        ``source`` proposal; ``credential``: the one the service was asked with (see
        :attr:`~hitl_vault.identity.Principal.recorded`), kept in its entries (chain 3);
        ``note_sha``: the digest of the note about to be written at ``path`` (as
        :meth:`set_path` records it, in the same transaction: no second write for it)."""

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
        """Move the request to ``to`` if it is in ``expect`` (else None), setting ``fields``;
        ``credential``: the one the step was asked or decided with, kept in its entry."""

    def record_edit(
        self, request_id: str, params: Mapping[str, Any], *, at: datetime, by: str, changes: str
    ) -> Transition | None:
        """Record params edited while pending (None: it is not pending any more)."""

    def record_ignored(self, request_id: str, at: datetime, details: tuple[str, ...]) -> Transition:
        """Record that a status typed in the note was not acted on, and why."""

    def record_vote(
        self, request_id: str, *, at: datetime, by: str, approve: bool, reason: str,
        count: str, details: tuple[str, ...] = (), credential: str | None = None,
    ) -> Transition | None:  # fmt: skip
        """Record one person's vote while pending (None: it is not pending any more);
        ``details`` follow ``count`` (the ``via`` of a proven vote); ``credential``: as for
        :meth:`transition`."""

    def record_escalation(self, request_id: str, at: datetime, to: str) -> Transition | None:
        """Record that nobody decided in time (None: not pending, or escalated already)."""

    def escalating(self, before: datetime) -> list[str]:
        """Pending requests whose escalation is due at ``before``."""

    def next_escalation(self) -> datetime | None:
        """When the next escalation is due (None: none is)."""

    def get(self, request_id: str, *, history: bool = True) -> Request | None:
        """One request, with its history unless ``history=False``; None if unknown."""

    def requests(
        self, status: Status | None = None, limit: int | None = None, agent: str | None = None
    ) -> list[Request]:
        """Requests (of ``status``; ``agent``: asked with a token of that name, compared as
        names are, never one that only names it), newest first, without their history."""

    def ids(self, status: Status | None = None) -> list[str]:
        """The ids of the requests (of ``status``)."""

    def status_of(self, request_id: str) -> Status | None:
        """Where the request is now; None if unknown."""

    def counts(self) -> dict[Status, int]:
        """How many requests there are in each status."""

    def pending_by_expiry(self, limit: int) -> list[Waiting]:
        """The pending requests that expire first (those that never expire last)."""

    def expiring(self, before: datetime | None = None) -> list[tuple[str, datetime]]:
        """Pending requests with an expiry (due by ``before``), soonest first."""

    def next_expiry(self) -> datetime | None:
        """When the next pending request expires; None if none does."""

    def created_params(self, request_id: str) -> dict[str, Any]:
        """The params as they were asked for, before any edit."""

    def pinned(self, request_id: str) -> dict[str, Any]:
        """What the submitter's Python rules required at submit ({} if nothing)."""

    def decision_uid(self, request_id: str) -> int | None:
        """The OS user id of the process that recorded the decision, if known."""

    def unproven(
        self, request_id: str, params: Mapping[str, Any], status: Status = Status.APPROVED
    ) -> str | None:
        """Why the entries do not prove ``params`` approved and the request at ``status``."""

    def proposal(self, source: str) -> str | None:
        """The request an Inbox proposal became, if it did."""

    # --- the change feed and the chain ---------------------------------------------------
    def last_seq(self) -> int:
        """The position of the newest entry (0 when there is none)."""

    def feed(self, seq: int) -> list[tuple[int, str, Transition]]:
        """Every entry after position ``seq``, in order: position, request id, step."""

    def move_cursor(self, name: str, seq: int) -> None:
        """The reader ``name`` has handled every entry up to ``seq`` (see :meth:`cursor`)."""

    def recent_entries(
        self, limit: int = 20
    ) -> list[tuple[str, Transition, int | None, str | None]]:
        """The newest entries, newest first, with the uid and actor (``host/user``) of the
        process that recorded each (None where unknown, or in an entry of chain version 1)."""

    def entries(self, request_id: str | None = None) -> list[Entry]:
        """The stored entries (of one request), in order, with their hashes."""

    def verify_chain(self) -> list[str]:
        """Every break in the hash chain or damage in the storage, as a sentence."""

    # --- notes, the rules in force, and what needs attention ---------------------------------
    def set_path(
        self, request_id: str, path: str, note_sha: str | None = None, entries: int = 0
    ) -> None:
        """Where the note is; ``note_sha``: its bytes show the first ``entries`` entries."""

    def note_sha(self, request_id: str) -> tuple[str | None, str | None]:
        """The note's known path, and the SHA-256 its bytes had when they matched."""

    def paths(self) -> dict[str, str]:
        """Every request's last known note path (relative to the vault)."""

    def last_change(self, request_id: str) -> tuple[str | None, datetime] | None:
        """The note's last known path and when the request's last entry was made."""

    def record_policy(self, text: str | None, at: datetime) -> str | None:
        """Record the rules file's text if it changed; a summary of the change, else None."""

    def policy_changes(self, limit: int = 5) -> list[tuple[datetime, str, str]]:
        """The latest changes of the rules in force: when, the text's hash, what changed."""

    def flag(self, path: str, message: str, at: datetime, request_id: str | None = None) -> bool:
        """List a file under Needs attention; True if the message is new."""

    def unflag(self, path: str) -> None:
        """Take a file off Needs attention."""

    def attention(self) -> list[Attention]:
        """Everything under Needs attention, oldest first."""

    # --- the notifications outbox ---------------------------------------------------------
    def cursor(self, name: str) -> int | None:
        """How far the reader ``name`` got in the entries; None before its first time."""

    def enqueue(
        self,
        items: Iterable[tuple[str, str, str]],
        at: datetime,
        cursor: tuple[str, int] | None = None,
    ) -> int:
        """Record (request, event, target) notifications once ever, moving ``cursor`` too."""

    def outgoing(self, now: datetime | None = None, limit: int = 100) -> list[Outgoing]:
        """Notifications neither sent nor given up (due by ``now``), oldest due first."""

    def sent(self, item_id: int, at: datetime) -> None:
        """Mark a notification delivered."""

    def not_sent(self, item_id: int, at: datetime, error: str, retry_at: datetime | None) -> None:
        """Record a failed try; tried again at ``retry_at`` (None: given up)."""

    def sent_count(self, request_id: str | None = None) -> int:
        """How many notifications were delivered (about one request)."""

    # --- people, credentials and the service's settings (never in the synced vault) --------
    def person(self, name: str) -> Person | None:
        """The person called ``name`` (compared by :func:`~hitl_vault.identity.same_name`)."""

    def people(self) -> list[Person]:
        """Everyone in ``people``, disabled ones too, by name."""

    def save_person(self, person: Person, at: datetime, by: str, event: str) -> None:
        """Add or replace ``person`` and log ``event`` (``person added``…) in the same commit."""

    def credentials(self, name: str | None = None) -> list[Credential]:
        """Every credential (of ``name``), revoked and expired ones too, oldest first."""

    def credential(self, credential_id: str) -> Credential | None:
        """One credential by its id; None if unknown."""

    def add_credential(self, credential: Credential, at: datetime, by: str) -> None:
        """Record a new credential and log it (its hash only; the secret is never stored)."""

    def revoke_credentials(self, ids: Iterable[str], at: datetime, by: str, why: str) -> int:
        """Revoke these credentials (those not revoked yet) and log it; how many were."""

    def credential_used(self, credential_id: str, at: datetime) -> None:
        """When the credential was last used: kept outside the chain, never logged."""

    def setting(self, name: str) -> str | None:
        """A service setting (``public_url``, ``service_uid``…); None if never set."""

    def set_setting(self, name: str, value: str, at: datetime, by: str) -> bool:
        """Set a service setting, logging the change; False (nothing logged) if unchanged."""

    def log_service(
        self, at: datetime, by: str, event: str, subject: str, details: tuple[str, ...] = ()
    ) -> ServiceEntry:
        """Append an entry to the service log (chained; never holds a secret)."""

    def service_log(self, limit: int | None = None) -> list[ServiceEntry]:
        """The service log, newest first."""

    # --- "always" allows (approve --always; never in the synced vault) ----------------------
    def allows(self, now: datetime | None = None) -> list[Allow]:
        """The allows not revoked (and, given ``now``, not expired by then), oldest first."""

    def add_allow(self, allow: Allow, by: str) -> None:
        """Record a new allow and log ``allow added`` in one commit (DuplicateError: name taken)."""

    def revoke_allow(self, name: str, at: datetime, by: str) -> bool:
        """Revoke the allow ``name`` and log it; False (nothing logged) if none such stands."""

    # --- the web inbox: sessions and one-time sign-in links (never in the synced vault) ------
    def add_sign_in_link(self, link: SignInLink, at: datetime, by: str) -> None:
        """Record a one-time sign-in link (its secret's hash only) and log it."""

    def sign_in_link(self, key: str) -> SignInLink | None:
        """The sign-in link whose secret has the SHA-256 ``key``; None if unknown."""

    def spend_sign_in_link(self, key: str, at: datetime) -> bool:
        """Mark the link used, once for every process: False if it was used already."""

    def add_session(self, session: Session, at: datetime, by: str) -> bool:
        """Record a new session (its secret's hash only) and log the sign-in, in one commit;
        False, writing nothing, if its person is not in people, is disabled, or their entry
        changed after the session's ``created``, as that write found them (a ``people
        disable`` between reading the person and this write)."""

    def session(self, key: str) -> Session | None:
        """The session whose secret has the SHA-256 ``key``, ended ones too; None if unknown."""

    def end_sessions(
        self, name: str, at: datetime, by: str, why: str, key: str | None = None
    ) -> int:
        """End ``name``'s sessions open at ``at`` (only ``key``'s, given) and log each; how many."""

    # --- decision links (hitl_vault.access.links; never in the synced vault) ---------------
    def link_key(self) -> bytes:
        """The key that signs decision links: 32 random bytes made with the store (or when
        this version first opens a store made before), the same ever after; never logged."""

    def spend_link(self, link: str, request_id: str, at: datetime) -> bool:
        """Mark ``link`` (a hash of a decision link, never the link) spent on ``request_id``;
        False, changing nothing, if it was spent already. Called inside the :meth:`batch`
        of the decision it makes, so both commit or neither does."""

    def link_spent(self, link: str) -> bool:
        """Whether ``link`` (as :meth:`spend_link` took it) was spent."""
