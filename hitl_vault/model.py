"""The nouns of hitl-vault: statuses, requests, transitions, rulings.

Frozen dataclasses and tables, no I/O. Everything here is pure so the rest of
the package (and its tests) can reason about a request without touching disk.
"""

from __future__ import annotations

import getpass
import json
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any

from .errors import UsageError


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
        # approved → rejected: a block rule in force when it was about to run.
        Status.APPROVED: frozenset({Status.EXECUTING, Status.REJECTED}),
        Status.EXECUTING: frozenset({Status.EXECUTED, Status.FAILED}),
        Status.REJECTED: frozenset(),
        Status.TIMED_OUT: frozenset(),
        Status.CANCELLED: frozenset(),
        Status.EXECUTED: frozenset(),
        Status.FAILED: frozenset(),
    }
)

PENDING_FOLDER = "Pending_Approval"
APPROVED_FOLDER = "Approved"
DONE_FOLDER = "Done"
REJECTED_FOLDER = "Rejected"
INBOX_FOLDER = "Inbox"
REQUEST_FOLDERS = (PENDING_FOLDER, APPROVED_FOLDER, DONE_FOLDER, REJECTED_FOLDER)
RULES_FILE = "hitl-vault.yaml"
STATE_DIR = ".hitl"  # the journal and the daemon lock
JOURNAL_FILE = "journal.db"
LOCK_FILE = "daemon.lock"

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

# What a human may type in `status:` to decide, in any case, with spaces around.
_HUMAN_WORDS = {
    "approve": Status.APPROVED,
    "approved": Status.APPROVED,
    "yes": Status.APPROVED,
    "reject": Status.REJECTED,
    "rejected": Status.REJECTED,
    "no": Status.REJECTED,
}


def read_status_word(word: str) -> Status | None:
    """The status a word in a note's ``status:`` means, or None for a word we never act on.

    Human decision words (``Yes``, `` approve ``) map to their canonical status;
    canonical names of every status are recognised too, so a note that shows an
    older status is understood rather than reported as a typo.
    """
    text = word.strip().lower()
    if text in _HUMAN_WORDS:
        return _HUMAN_WORDS[text]
    try:
        return Status(text)
    except ValueError:
        return None


class Risk(StrEnum):
    """How bad it is if the action goes wrong; ordered low < medium < high < critical."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return list(Risk).index(self)


class Decision(StrEnum):
    """What the rules say about a proposed action; ordered allow < ask < block."""

    ALLOW = "allow"
    ASK = "ask"
    BLOCK = "block"

    @property
    def rank(self) -> int:
        return list(Decision).index(self)


DEFAULT_RISK = Risk.MEDIUM


@dataclass(frozen=True)
class Proposal:
    """An action somebody wants to take, before any rule has looked at it."""

    action: str
    params: Mapping[str, Any]
    summary: str = ""
    requested_by: str = ""


@dataclass(frozen=True)
class RuleMatch:
    """One rule that matched a proposal, and what it says.

    A callable rule may return one of these (or just a :class:`Decision`).
    """

    decision: Decision
    rule: str = ""
    risk: Risk | None = None
    timeout: timedelta | None = None
    approvers: frozenset[str] | None = None
    editable: bool = True
    reason: str = ""
    explanation: str = ""


@dataclass(frozen=True)
class ActionSpec:
    """How the daemon carries out an approved action (``actions:`` in hitl-vault.yaml).

    Exactly one of ``run`` (an argv, never a shell string) and ``python``
    (``"package.module:function"``) is set.
    """

    name: str
    run: tuple[str, ...] | None = None
    python: str | None = None
    timeout: timedelta = timedelta(seconds=60)
    idempotent: bool = False


# A rule written in Python: it sees the proposal and returns a decision or None.
RuleFunction = Callable[[Proposal], "Decision | RuleMatch | str | None"]


@dataclass(frozen=True)
class Ruling:
    """The combined verdict of every matching rule (most restrictive wins)."""

    decision: Decision
    risk: Risk
    timeout: timedelta | None
    rule: str
    reason: str
    approvers: frozenset[str] | None
    editable: bool
    matches: tuple[RuleMatch, ...]

    @property
    def explanation(self) -> str:
        """One sentence per matching rule, or what the default did."""
        lines = [m.explanation for m in self.matches if m.explanation]
        return " ".join(lines)


@dataclass(frozen=True)
class Transition:
    """One step in a request's life, as journaled and as written under ``## History``.

    ``from_status`` is None for the creation entry. ``kind`` is ``"transition"``
    for a real move and ``"ignored"`` for a note edit that was not acted on
    (then ``from_status == to_status`` is the status that was kept).
    """

    at: datetime
    from_status: Status | None
    to_status: Status
    by: str = ""
    reason: str = ""
    details: tuple[str, ...] = ()
    kind: str = "transition"

    def history_line(self) -> str:
        """The Markdown list item for this step, exactly as the note shows it.

        ``- <time> · <from> → <to>`` (or ``kept <status>``) is hitl-vault's and starts
        every history line (``history_key`` finds them by it); who, why and the details
        come from outside and are escaped as inline Markdown (``render.inline``).
        """
        from .render import inline  # render imports this module

        parts = [format_ts(self.at)]
        if self.kind == "ignored":
            parts.append(f"kept {self.to_status}")
        elif self.kind == "edited":  # params edited while pending, before any decision
            parts.append("params edited")
            by = inline(one_line(self.by))
            if by:
                parts.append(f"by {by}")
        else:
            parts.append(f"{self.from_status or 'created'} → {self.to_status}")
            by = inline(one_line(self.by))
            if by and self.to_status not in (Status.EXECUTED, Status.FAILED):
                parts.append(f"by {by}")
        reason = inline(one_line(self.reason))
        if reason:
            parts.append(f'"{reason}"')
        parts.extend(text for text in (inline(one_line(d)) for d in self.details) if text)
        return "- " + " · ".join(parts)

    def unescaped_history_line(self) -> str:
        """The line as versions before the escaping wrote it (notes keep what was written)."""
        parts = (
            [format_ts(self.at), f"kept {self.to_status}"]
            if self.kind == "ignored"
            else [format_ts(self.at), f"{self.from_status or 'created'} → {self.to_status}"]
        )
        if (
            self.kind != "ignored"
            and self.by
            and self.to_status not in (Status.EXECUTED, Status.FAILED)
        ):
            parts.append(f"by {one_line(self.by)}")
        if self.reason:
            parts.append(f'"{one_line(self.reason)}"')
        parts.extend(one_line(d) for d in self.details if d)
        return "- " + " · ".join(parts)

    @property
    def key(self) -> tuple[str, str]:
        """What identifies this step in a note's history: its time and its move."""
        return history_key(self.history_line())


_HISTORY_RE = re.compile(
    r"^- (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) · ((?:\w+ → \w+)|(?:kept \w+)|(?:params edited))\b"
)


def history_key(line: str) -> tuple[str, str]:
    """(timestamp, move) of a history line, or ("", "") for anything else."""
    m = _HISTORY_RE.match(line.strip())
    return (m.group(1), m.group(2)) if m else ("", "")


def one_line(text: str, limit: int = 300) -> str:
    """Text fit for one history line: no line breaks, no ` · ` ambiguity, bounded."""
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def default_user() -> str:
    """Who is at the keyboard, for ``by`` when nobody said."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def default_summary(action: str, params: Mapping[str, Any]) -> str:
    """``payment: amount=1500, recipient=v@x.y``: a title for a request submitted without one."""
    shown = ", ".join(
        f"{k}={v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)}"
        for k, v in params.items()
    )
    return one_line(f"{action}: {shown}" if shown else action, 120)


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
    history: tuple[Transition, ...] = field(default=(), compare=False)

    def to_json(self) -> dict[str, Any]:
        """The stable JSON form used by ``--json`` (documented in the README)."""

        def ts(value: datetime | None) -> str | None:
            return format_ts(value) if value else None

        return {
            "id": self.id,
            "status": str(self.status),
            "action": self.action,
            "summary": self.summary,
            "risk": str(self.risk),
            "rule": self.rule,
            "requested_by": self.requested_by,
            "created": ts(self.created),
            "expires": ts(self.expires),
            "params": dict(self.params),
            "decided_by": self.decided_by,
            "reason": self.reason,
            "decided_at": ts(self.decided_at),
            "executed_at": ts(self.executed_at),
            "result": self.result,
            "error": self.error,
            "path": str(self.path) if self.path else None,
            "history": [t.history_line()[2:] for t in self.history],
        }


# --- time, durations and ids -------------------------------------------------

_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> datetime:
    """Now, in UTC, to the second (what notes can show)."""
    return datetime.now(UTC).replace(microsecond=0)


def format_ts(value: datetime) -> str:
    """ISO 8601 UTC with ``T`` and ``Z``, to the second."""
    return value.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(value: str | datetime) -> datetime:
    """A timestamp as notes and the journal store it (YAML may already have parsed it)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|[smhd])")
# The longest duration read (100 years): anything longer overflows a date, and means "never".
MAX_DURATION = timedelta(days=36500)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float | timedelta, argument: str = "duration") -> timedelta:
    """``90s``, ``15m``, ``1h``, ``2d`` (or ``1h30m``, ``500ms``); a bare number is seconds."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise UsageError(
            argument, f"{text!r} is not a duration", "write it like 90s, 15m, 1h or 2d"
        )
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        pos, seconds = 0, 0.0
        for m in _DURATION_RE.finditer(s):
            if s[pos : m.start()].strip():
                break
            seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if not s or pos == 0 or s[pos:].strip():
            raise UsageError(
                argument, f"{text!r} is not a duration", "write it like 90s, 15m, 1h or 2d"
            )
    if seconds <= 0:
        raise UsageError(argument, f"{text!r} is not a positive duration", "use e.g. 90s or 1h")
    if not seconds <= MAX_DURATION.total_seconds():  # also NaN and infinity
        shown = f"{str(text)[:20]!r}…" if len(str(text)) > 20 else repr(text)
        raise UsageError(argument, f"{shown} is longer than 100 years", "use at most 36500d")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest way to write a duration in the units ``parse_duration`` reads."""
    if value.total_seconds() < 1 or value.microseconds:
        return f"{round(value.total_seconds() * 1000)}ms"
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


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
    tail = token if token is not None else secrets.token_hex(3)
    return f"{now.astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}-{check_action(action)}-{tail}"


def is_request_id(text: str) -> bool:
    return bool(ID_RE.fullmatch(text))
