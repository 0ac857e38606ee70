"""The daemon's clock-driven part: expiry, escalation and outcomes never reported.

A pending request nobody decided in time times out at ``expires``; one that has
``escalate_after`` is escalated when that falls due (``escalate_to`` may decide
too). A request the gate handed to an agent whose PostToolUse hook never reported
how the call ended (the agent crashed, its own rules denied the call) becomes
``executed`` with the result ``outcome not reported`` an hour after it was handed
out (``OUTCOME_DEADLINE``). Each is journaled at once (the note shows it once quiet),
and the part says when the next one falls due, so the daemon sleeps until then.

A request whose escalation (or expiry) raises, say a Python rule that fails, is
put off on its own: the others go on, it is tried again after a growing delay
(0.5 s, doubling, at most every 30 s), it is listed under Needs attention until
it goes through (or the request is decided), and the log says so once per
change, never once per try.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ..errors import JournalDamagedError, JournalUnavailableError, VaultError
from ..model import OUTCOME_DEADLINE, Status, handed_out_at
from ..text import one_line
from .retries import RETRY_MAX, backoff

if TYPE_CHECKING:
    from ..model import Transition
    from ..store import JournalStore

log = logging.getLogger(__name__)

# What moves one request on at ``now`` (None: it was decided, or moved on, first).
Step = Callable[[str, datetime], "Transition | None"]

EXPIRY = "expiry"
ESCALATION = "escalation"
OUTCOME = "outcome"
_DONE = {EXPIRY: "timed out", ESCALATION: "escalated", OUTCOME: "closed"}  # as the log says


def timeout_flag(kind: str, request_id: str) -> str:
    """Where Needs attention lists a request whose expiry or escalation keeps failing (not
    the request's own flag, which a vote or a refused decision may take or clear)."""
    return f"{kind} {request_id}"


@dataclass(frozen=True)
class PutOff:
    """A request whose step raised: how often in a row, until when, and what it said."""

    failures: int
    until: datetime
    error: str


class Timeouts:
    """Expires and escalates the pending requests whose time came."""

    def __init__(
        self,
        journal: JournalStore,
        expire: Step,
        escalate: Step,
        show: Callable[[str], None],
        unreported: Step | None = None,
    ) -> None:
        self.journal = journal
        self._steps = {
            EXPIRY: expire,  # pending → timed_out (:meth:`Engine.expire`)
            ESCALATION: escalate,  # escalate_to may decide too (:meth:`Engine.escalate`)
        }
        if unreported is not None:  # executing → executed (:meth:`Engine.unreported`)
            self._steps[OUTCOME] = unreported
        self._show = show  # the request's note is to show what happened (once quiet)
        self.put_off: dict[tuple[str, str], PutOff] = {}  # (kind, request) whose step raised
        self._tidied: set[str] = set()  # kinds whose flags of an earlier run were looked at

    def expire(self, now: datetime) -> bool:
        """pending → timed_out for each request whose expiry passed; True if any was tried."""
        return self._move(EXPIRY, [rid for rid, _ in self.journal.expiring(before=now)], now)

    def escalate(self, now: datetime) -> bool:
        """Escalate each request whose ``escalate_after`` passed; True if any was tried."""
        return self._move(ESCALATION, self.journal.escalating(before=now), now)

    def close_unreported(self, now: datetime) -> bool:
        """executed, ``outcome not reported``, for each request handed to an agent more than
        ``OUTCOME_DEADLINE`` ago whose outcome never came; True if any was tried."""
        if OUTCOME not in self._steps:
            return False
        due = [rid for rid, at in self._handed_out() if at <= now]
        return self._move(OUTCOME, due, now)

    def _handed_out(self) -> list[tuple[str, datetime]]:
        """(request, when its outcome is due) for each request the gate handed out that is
        still executing: those the daemon runs, or a script carries out, are never listed."""
        found = []
        for listed in self.journal.requests(Status.EXECUTING):
            if not listed.carried_by_requester:
                continue
            request = self.journal.get(listed.id)
            at = None if request is None else handed_out_at(request)
            if at is not None:
                found.append((listed.id, at + OUTCOME_DEADLINE))
        return found

    def _move(self, kind: str, due: list[str], now: datetime) -> bool:
        """Take the step ``kind`` for each request in ``due`` but those put off until later;
        one that raises is put off, and the rest go on. A journal that fails fails the
        whole part (the daemon tries it again shortly), as it would every request."""
        self._tidy(kind, set(due))
        tried = False
        for request_id in due:
            held = self.put_off.get((kind, request_id))
            if held is not None and now < held.until:
                continue
            tried = True
            try:
                t = self._steps[kind](request_id, now)
            except (JournalDamagedError, JournalUnavailableError, OSError):
                raise
            except Exception as e:  # this request's step (a Python rule raised, a bug)
                self._failed(kind, request_id, e, now)
                continue
            self._went_through(kind, request_id, held)
            if t is not None:
                self._show(request_id)
        return tried

    def _failed(self, kind: str, request_id: str, error: Exception, now: datetime) -> None:
        """Put the request off (0.5 s, doubling, at most RETRY_MAX), list it under Needs
        attention, and log it when this is news (not on every try)."""
        held = self.put_off.get((kind, request_id))
        failures = 1 if held is None else held.failures + 1
        bug = not isinstance(error, VaultError)
        said = one_line(f"{type(error).__name__}: {error}" if bug else str(error), 400)
        self.put_off[kind, request_id] = PutOff(failures, now + backoff(failures), said)
        message = (
            f"request {request_id}: not {_DONE[kind]} yet: {said} (fix it; hitl-vault "
            f"tries again, at most every {RETRY_MAX.seconds} s)"
        )
        # Written again on each try (a few a minute at most): a step that clears the
        # request's flags must not hide a failure that goes on.
        self.journal.flag(timeout_flag(kind, request_id), message, now, request_id)
        if held is None or held.error != said:
            log.error("%s", message, exc_info=error if bug else None)  # a bug: say where

    def _went_through(self, kind: str, request_id: str, held: PutOff | None) -> None:
        if held is not None:
            del self.put_off[kind, request_id]
            log.info("request %s: %s after all", request_id, _DONE[kind])
        # Cleared every time, as a flag of an earlier run may still be listed.
        self.journal.unflag(timeout_flag(kind, request_id))

    def _tidy(self, kind: str, due: set[str]) -> None:
        """Forget what was put off but is no longer due (decided, cancelled, escalated
        elsewhere), and take its flag off; at the first step, an earlier run's flags too."""
        gone = {rid for k, rid in self.put_off if k == kind and rid not in due}
        if kind not in self._tidied:
            self._tidied.add(kind)
            for a in self.journal.attention():
                rid = a.request_id
                if rid is not None and rid not in due and a.path == timeout_flag(kind, rid):
                    gone.add(rid)
        for request_id in gone:
            self.put_off.pop((kind, request_id), None)
            self.journal.unflag(timeout_flag(kind, request_id))

    def next_wake(self, now: datetime) -> datetime | None:
        """When the next pending request expires or escalates, or one put off is tried again
        (None: none will). What is put off is not due before its time, however overdue."""
        wakes: list[datetime | None] = [held.until for held in self.put_off.values()]
        wakes += [self._next_expiry(now), self._next_escalation(now)]
        if OUTCOME in self._steps:
            held = self.put_off
            wakes += [at for rid, at in self._handed_out() if (OUTCOME, rid) not in held]
        return min((t for t in wakes if t is not None), default=None)

    def _held(self, kind: str) -> bool:
        return any(k == kind for k, _ in self.put_off)

    def _next_expiry(self, now: datetime) -> datetime | None:
        first = self.journal.next_expiry()
        if first is None or first > now or not self._held(EXPIRY):
            return first  # what is put off is overdue: anything later is the next in line
        held = self.put_off
        return next((at for rid, at in self.journal.expiring() if (EXPIRY, rid) not in held), None)

    def _next_escalation(self, now: datetime) -> datetime | None:
        first = self.journal.next_escalation()
        if first is None or first > now or not self._held(ESCALATION):
            return first
        # Only while an escalation is put off: the store tells the soonest time, not whose.
        pending = self.journal.requests(Status.PENDING)
        times = [
            r.escalate_at
            for r in pending
            if r.escalate_at is not None and (ESCALATION, r.id) not in self.put_off
        ]
        return min(times, default=None)
