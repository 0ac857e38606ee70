"""The model: statuses, requests and transitions, and where they live in a vault.

Frozen dataclasses and tables, no I/O, so the rest of the package (and its
tests) can reason about a request without touching disk. What rules say lives
in :mod:`hitl_vault.policy.rules`; how a transition reads in a note, in
:mod:`hitl_vault.notes.render`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import UsageError
from .policy.pitch import Pitch
from .times import format_ts

# Where things are in a vault: the folders a request moves through, and hitl-vault's files.
PENDING_FOLDER = "Pending_Approval"
APPROVED_FOLDER = "Approved"
DONE_FOLDER = "Done"
REJECTED_FOLDER = "Rejected"
INBOX_FOLDER = "Inbox"
REQUEST_FOLDERS = (PENDING_FOLDER, APPROVED_FOLDER, DONE_FOLDER, REJECTED_FOLDER)
RULES_FILE = "hitl-vault.yaml"
DASHBOARD_FILE = "Dashboard.md"
STATE_DIR = ".hitl"  # the journal and the daemon lock
JOURNAL_FILE = "journal.db"
LOCK_FILE = "daemon.lock"
STAGING_DIR = "new"  # in STATE_DIR: new notes' content, on its way into a request folder


class Status(StrEnum):
    """Where a request is in its life; ``LEGAL_MOVES`` says which moves it may make."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    EXECUTING = "executing"
    EXECUTED = "executed"
    FAILED = "failed"

    @classmethod
    def named(cls, name: Status | str) -> Status:
        """The status a user named (any case, spaces around); UsageError if there is none."""
        try:
            return cls(str(name).strip().lower())
        except ValueError:
            names = ", ".join(s.value for s in cls)
            raise UsageError("status", f"{name!r} is not a status", f"use one of {names}") from None

    @property
    def is_final(self) -> bool:
        """Nothing leaves a final status."""
        return not LEGAL_MOVES[self]

    @property
    def folder(self) -> str:
        """The vault folder a request of this status belongs in."""
        return FOLDER_OF[self]


LEGAL_MOVES: Mapping[Status, frozenset[Status]] = MappingProxyType(
    {
        Status.PENDING: frozenset(
            {Status.APPROVED, Status.REJECTED, Status.TIMED_OUT, Status.CANCELLED}
        ),
        # approved → rejected: a block rule in force when it was about to run;
        # approved → cancelled: withdrawn by a human before its action started.
        Status.APPROVED: frozenset({Status.EXECUTING, Status.REJECTED, Status.CANCELLED}),
        Status.EXECUTING: frozenset({Status.EXECUTED, Status.FAILED}),
        Status.REJECTED: frozenset(),
        Status.TIMED_OUT: frozenset(),
        Status.CANCELLED: frozenset(),
        Status.EXECUTED: frozenset(),
        Status.FAILED: frozenset(),
    }
)

# What ``retry`` makes a new request from: a request that ended without running as asked.
RETRYABLE = frozenset({Status.FAILED, Status.TIMED_OUT})

FOLDER_OF: Mapping[Status, str] = MappingProxyType(
    {
        Status.PENDING: PENDING_FOLDER,
        Status.APPROVED: APPROVED_FOLDER,
        Status.EXECUTING: APPROVED_FOLDER,
        Status.EXECUTED: DONE_FOLDER,
        Status.FAILED: DONE_FOLDER,
        Status.REJECTED: REJECTED_FOLDER,
        Status.TIMED_OUT: REJECTED_FOLDER,
        Status.CANCELLED: REJECTED_FOLDER,
    }
)


class Kind(StrEnum):
    """What a journal entry records."""

    TRANSITION = "transition"  # the request moved from one status to another
    IGNORED = "ignored"  # a status typed in the note was not acted on; the status was kept
    EDITED = "edited"  # params edited in a pending note, before any decision
    VOTED = "voted"  # one person's vote (to_status: approved or rejected); the status stays
    ESCALATED = "escalated"  # nobody decided in time: escalate_to may decide too
    LINKED = "linked"  # a retry made or was made from another request; the status was kept
    RERUN = "rerun"  # an idempotent action left executing runs again, same key (re-claimed)


@dataclass(frozen=True)
class Transition:
    """One step in a request's life, as journaled and as written under ``## History``.

    ``from_status`` is None for the creation entry. ``kind`` says whether it is a
    real move, a note edit that was not acted on (then ``from_status == to_status``
    is the status that was kept), or params edited while pending.
    """

    at: datetime
    from_status: Status | None
    to_status: Status
    by: str = ""
    reason: str = ""
    details: tuple[str, ...] = ()
    kind: Kind = Kind.TRANSITION

    @property
    def move(self) -> str:
        """``pending → approved``, ``kept approved`` or ``params edited``: what the step did."""
        if self.kind is Kind.IGNORED:
            return f"kept {self.to_status}"
        if self.kind is Kind.EDITED:
            return "params edited"
        if self.kind is Kind.VOTED:
            return f"{self.by} {self.to_status}"
        if self.kind is Kind.ESCALATED:
            return "escalated"
        if self.kind is Kind.LINKED:  # details[0]: ``retry of <id>`` or ``retried as <id>``
            link, _, other = self.details[0].rpartition(" ")
            return f"{link} [[{other}]]"
        return f"{self.from_status or 'created'} → {self.to_status}"

    @property
    def key(self) -> tuple[str, str]:
        """What identifies this step in a note's history: its time and its move."""
        return format_ts(self.at), self.move


@dataclass(frozen=True)
class Request:
    """A frozen snapshot of one request: what the journal knows, and where its note is."""

    id: str
    status: Status
    action: str
    summary: str
    risk: Risk
    rule: str
    requested_by: str
    created: datetime
    expires: datetime | None
    params: Mapping[str, Any]
    decided_by: str | None = None
    reason: str | None = None
    decided_at: datetime | None = None
    executed_at: datetime | None = None
    result: str | None = None
    error: str | None = None
    path: Path | None = None
    carried_by_requester: bool = False
    # Free text from the requester for the approver: why it asks (``## Context`` in the note).
    context: str | None = None
    # When nobody having decided by then escalates it (``escalate_after``); None: never/done.
    escalate_at: datetime | None = None
    retry_of: str | None = None  # the failed or timed-out request this one retries
    retried_as: str | None = None  # the request made to retry this one
    # Reasoning, confidence, alternatives, risk factors and the diff (``## Proposal``).
    pitch: Pitch | None = None
    # Asked through the service: the id of the agent token that asked (which agent sees it),
    # and the session and client the agent said it asked from (its word: shown, never
    # matched by rules). None for a request made any other way (CLI, Inbox, local gate).
    credential: str | None = None
    session: str | None = None
    client: str | None = None
    history: tuple[Transition, ...] = field(default=(), compare=False)

    @property
    def confidence(self) -> float | None:
        """The requester's own confidence (0 to 1), which rules may ask or block on."""
        return self.pitch.confidence if self.pitch else None

    @property
    def escalated(self) -> bool:
        return any(t.kind is Kind.ESCALATED for t in self.history)

    def votes(self) -> list[Transition]:
        """The votes recorded for the params as they stand: an edit of the params after a
        vote means that vote was for other params, and it no longer counts."""
        found: list[Transition] = []
        for t in self.history:
            if t.kind is Kind.EDITED:
                found = []
            elif t.kind is Kind.VOTED:
                found.append(t)
        return found


# The most of a session id or a client's name a request keeps (the agent's word, shown).
ORIGIN_LIMIT = 200


@dataclass(frozen=True)
class Origin:
    """Where a request asked through the service came from: the agent token that asked
    (its id), and the session and client the agent said it asked from (its word, kept on
    one line, at most :data:`ORIGIN_LIMIT` characters; empty: none said)."""

    credential: str
    session: str = ""
    client: str = ""

    def applied(self, request: Request) -> Request:
        """``request`` with the fields this origin sets."""

        def said(text: str) -> str | None:
            flat = " ".join("".join(c for c in text if c.isprintable() or c.isspace()).split())
            return flat[:ORIGIN_LIMIT] or None

        return replace(
            request,
            credential=self.credential,
            session=said(self.session),
            client=said(self.client),
        )

    @classmethod
    def of(cls, request: Request) -> Origin | None:
        """The origin ``request`` was asked with (None: not through the service)."""
        if request.credential is None:
            return None
        return cls(request.credential, request.session or "", request.client or "")


ACTION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
ID_RE = re.compile(r"(\d{8}T\d{6}Z)-([A-Za-z0-9][A-Za-z0-9_.-]{0,63})-([0-9a-f]{6})")


def check_action(action: str, argument: str = "action") -> str:
    """An action name is also part of a file name, so it is kept to a safe alphabet."""
    if not isinstance(action, str) or not ACTION_RE.fullmatch(action):
        raise UsageError(
            argument,
            f"{action!r} is not a valid action name",
            "use letters, digits, '-', '_' or '.', starting with a letter or digit, "
            "at most 64 characters",
        )
    return action


def new_id(action: str, now: datetime, token: str | None = None) -> str:
    """``YYYYMMDDTHHMMSSZ-<action>-<6 hex>``: sortable by time, unique by its random tail."""
    import secrets  # only when a request is made: an allowed gate call never needs it

    tail = token if token is not None else secrets.token_hex(3)
    return f"{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{check_action(action)}-{tail}"


def is_request_id(text: str) -> bool:
    return bool(ID_RE.fullmatch(text))


class Risk(StrEnum):
    """How bad it is if the action goes wrong; ordered low < medium < high < critical."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Risk).index(self)


# --- a call the agent's gate handed out, whose outcome the agent reports ------------------

HANDED_OUT = "handed to the agent"
OUTCOME_DEADLINE = timedelta(hours=1)


def handed_out_at(request: Request) -> datetime | None:
    """When the gate handed ``request`` (with its history) to the agent, if it did."""
    for t in reversed(request.history):
        if t.to_status is Status.EXECUTING and t.from_status is Status.APPROVED:
            return t.at if HANDED_OUT in t.details else None
    return None


@dataclass(frozen=True)
class Waiting:
    """A pending request as Dashboard.md lists it: only what its row shows, read without the
    rest of the request (a busy vault's dashboard lists 200 of them every second)."""

    id: str
    path: str | None
    summary: str
    action: str
    risk: str
    expires: datetime | None
