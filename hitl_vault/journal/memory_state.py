"""The in-memory journal's state and its transactions: what
:class:`~hitl_vault.testing.MemoryJournal` holds, and the lock and undo that make each
write atomic, as the SQLite journal's :class:`~.sqlite_db.Database` does for it."""

from __future__ import annotations

import copy
import json
import logging
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from ..chain import Entry
from ..identity import Credential, Person, Session, SignInLink
from ..model import Kind, Request, Status, Transition
from ..policy.always import Allow
from ..store import Attention, Outgoing
from ..times import format_ts, parse_ts
from .service_chain import ServiceRow

log = logging.getLogger(__name__)


def ts(value: datetime) -> datetime:
    """A time as the SQLite journal keeps it: UTC, to the second."""
    return parse_ts(format_ts(value))


def opt_ts(value: datetime | None) -> datetime | None:
    return None if value is None else ts(value)


def as_json(value: Mapping[str, Any]) -> dict[str, Any]:
    """Params as stored: what JSON keeps of them (a tuple comes back a list)."""
    stored: dict[str, Any] = json.loads(json.dumps(dict(value), ensure_ascii=False))
    return stored


@dataclass
class Row:
    """One request as stored (its history lives in the entries)."""

    request: Request
    path: str | None
    params_created: dict[str, Any]
    pinned: dict[str, Any] | None
    note_sha: str | None = None


@dataclass
class Out:
    """One notification in the outbox."""

    item: Outgoing
    sent_at: datetime | None = None
    given_up_at: datetime | None = None


@dataclass
class State:
    """Everything the journal holds; copied whole to undo a write that fails part way."""

    rows: dict[str, Row] = field(default_factory=dict)
    entries: list[Entry] = field(default_factory=list)
    proposals: dict[str, str] = field(default_factory=dict)
    policy: list[tuple[datetime, str, str, str]] = field(default_factory=list)
    attention: dict[str, Attention] = field(default_factory=dict)
    outbox: list[Out] = field(default_factory=list)
    cursors: dict[str, int] = field(default_factory=dict)
    people: dict[str, Person] = field(default_factory=dict)  # by the name as compared
    credentials: dict[str, Credential] = field(default_factory=dict)  # by id, oldest first
    settings: dict[str, str] = field(default_factory=dict)
    service: list[ServiceRow] = field(default_factory=list)
    service_seq: int = 0  # the highest position the service log ever gave out
    allows: dict[str, tuple[Allow, datetime | None]] = field(default_factory=dict)  # revoked at
    sign_in_links: dict[str, SignInLink] = field(default_factory=dict)  # by hash
    sessions: dict[str, Session] = field(default_factory=dict)  # by hash, oldest first
    # The key that signs decision links (made with the journal), and the links spent: by a
    # hash of the link, the request it decided and when.
    link_key: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    spent_links: dict[str, tuple[str, datetime]] = field(default_factory=dict)


def transition_of(e: Entry) -> Transition:
    """The step an entry records."""
    frm = Status(e.from_status) if e.from_status else None
    details = tuple(json.loads(e.details))
    return Transition(
        parse_ts(e.at), frm, Status(e.to_status), e.by, e.reason, details, Kind(e.kind)
    )


def pinned_as_stored(pinned: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """What the submitter's Python rules required, as stored (None: nothing)."""
    return as_json(pinned) if pinned else None


class Memory:
    """The state of one in-memory journal, the lock its threads share, and the wakers told
    after each committed write."""

    def __init__(self, path: Path) -> None:
        self.path = path  # how errors name it
        self.lock = threading.RLock()
        self.state = State()
        self.batching = False
        self.wakers: dict[int, Callable[[], None]] = {}
        self.daemon: str | None = None  # who holds the process-local daemon lock

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many writes, all or none; other threads wait until the batch ends."""
        with self.lock:
            if self.batching:
                yield
                return
            saved = copy.deepcopy(self.state)
            self.batching = True
            try:
                yield
            except BaseException:
                self.state = saved
                raise
            finally:
                self.batching = False
        self.tell()

    @contextmanager
    def write(self) -> Iterator[State]:
        """One atomic write: what it changed is undone if it raises (inside a batch too)."""
        with self.lock:
            outer = not self.batching
            saved = copy.deepcopy(self.state)
            try:
                yield self.state
            except BaseException:
                self.state = saved
                raise
        if outer:
            self.tell()

    def tell(self) -> None:
        """Wake every watcher: something was committed. A waker that fails (its wait ended
        and closed its event loop) is logged and dropped; it never fails the write."""
        for key, wake in list(self.wakers.items()):
            try:
                wake()
            except Exception:
                log.debug("dropped a waker of %s that failed", self.path, exc_info=True)
                if self.wakers.get(key) is wake:
                    del self.wakers[key]

    @contextmanager
    def watching(self, wake: Callable[[], None]) -> Iterator[None]:
        key = id(wake)
        self.wakers[key] = wake
        try:
            yield
        finally:
            self.wakers.pop(key, None)
