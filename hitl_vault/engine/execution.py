"""Carrying out an approved request, as the journal records it: the claim (approved →
executing, durably, right before the action starts) and the outcome (executed or failed).

:class:`Execution` is handed the journal, what the note says of the request, the rules in
force and a way to tell the listeners; the daemon's workers, ``approval()`` and the agents'
gate all claim and finish through it (by way of the engine).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..errors import NotReportableError, NotRunnableError, RequestNotFoundError, UsageError
from ..identity import REQUESTER_LIMIT, check_name
from ..model import HANDED_OUT as HANDED_OUT
from ..model import OUTCOME_DEADLINE as OUTCOME_DEADLINE
from ..model import Request, Status, Transition
from ..policy.intake import storable
from ..policy.rules import Policy, RuleFunction
from ..policy.verdict import judge_run
from ..store import JournalStore
from ..text import one_line


def _storable(text: str | None) -> str | None:
    """Text as UTF-8 can hold it: what cannot be encoded (a lone surrogate) becomes "?"."""
    return None if text is None else storable(text)


class Execution:
    """Claims approved requests for running and records how they ended."""

    def __init__(
        self,
        journal: JournalStore,
        later_in_note: Callable[[Request], str | None],
        policy: Callable[[], Policy],
        functions: Sequence[RuleFunction],
        publish: Callable[[], object],
        now: Callable[[], datetime],
    ) -> None:
        self._journal = journal
        self._later_in_note = later_in_note
        self._policy = policy
        self._functions = functions
        self._publish = publish
        self._now = now

    def start(
        self,
        request_id: str,
        by: str,
        params: Mapping[str, Any] | None = None,
        details: tuple[str, ...] = (),
    ) -> Transition | None:
        """approved → executing, durably, right before the action starts with ``params``.

        None if it is no longer approved (already started, say). Raises
        :class:`NotRunnableError`, recording nothing, unless the journal's own entries
        prove an approval of exactly these params and the note shows no later state
        than the journal. A block rule in force now rejects it instead (that
        transition is returned).
        """
        journal = self._journal
        request = journal.get(request_id)
        if request is None:
            raise RequestNotFoundError(request_id)
        if request.status is not Status.APPROVED:
            return None
        run = request.params if params is None else params
        problem = journal.unproven(request_id, run) or self._later_in_note(request)
        if problem and journal.status_of(request_id) is not Status.APPROVED:
            return None  # cancelled meanwhile (by another process): nothing to run
        if problem:
            raise NotRunnableError(request_id, problem)
        now = self._now()
        blocked = judge_run(self._policy(), request, run, self._functions)
        if blocked is not None:
            t = journal.transition(
                request_id,
                Status.REJECTED,
                at=now,
                by="hitl-vault",
                reason=blocked,
                expect={Status.APPROVED},
                fields={"reason": blocked},
            )
        else:
            t = journal.transition(
                request_id, Status.EXECUTING, at=now, by=by, expect={Status.APPROVED},
                details=details,
            )  # fmt: skip
        self._publish()
        return t

    def finish(
        self,
        request_id: str,
        ok: bool,
        result: str | None = None,
        error: str | None = None,
        *,
        at: datetime | None = None,
        by: str = "executor",
        credential: str | None = None,
    ) -> Transition | None:
        """executing → executed (with its result) or failed (with the error), as of ``at``
        (``credential``: the one its outcome was reported with, kept in the entry)."""
        now = at or self._now()
        result, error = _storable(result), _storable(error)  # e.g. a file name's lone surrogate
        if ok:
            details = (f"result: {one_line(result or '', 200)}",) if result else ()
            fields: dict[str, Any] = {"executed_at": now, "result": result or ""}
            to = Status.EXECUTED
        else:
            details = (f"error: {one_line(error or '', 200)}",)
            fields = {"executed_at": now, "error": error or "failed"}
            to = Status.FAILED
        t = self._journal.transition(
            request_id,
            to,
            at=now,
            by=by,
            details=details,
            expect={Status.EXECUTING},
            fields=fields,
            credential=credential,
        )
        self._publish()
        return t

    def report(
        self,
        request_id: str,
        result: str | None,
        error: str | None,
        by: str | None,
        has_executor: Callable[[Request], bool],
        credential: str | None = None,
    ) -> Transition:
        """The outcome of an action its requester carried out (``done``): approved →
        executing → executed (``result``) or failed (``error``) in one commit, or executing
        → executed/failed for one the gate handed out. Recorded once:
        :class:`NotReportableError` for a request the daemon runs (``has_executor``),
        one not approved, or one whose outcome is recorded already. ``credential``: the one
        the outcome was reported with through the service, kept in both entries."""
        if (result is None) == (error is None):
            raise UsageError("result", "give a result or an error, one of them", "give one")
        if by is not None:
            check_name(by, "by", REQUESTER_LIMIT)
        request = self._journal.get(request_id)
        if request is None:
            raise RequestNotFoundError(request_id)
        _check_reportable(request, has_executor)
        who = by or request.requested_by
        now = self._now()
        with self._journal.batch():
            if request.status is Status.APPROVED:
                self._journal.transition(
                    request_id, Status.EXECUTING, at=now, by=who, expect={Status.APPROVED},
                    details=("carried out by its requester",), credential=credential,
                )  # fmt: skip
            t = self.finish(
                request_id, error is None, result, error, at=now, by=who, credential=credential
            )
        if t is None:  # reported (or cancelled) by someone else a moment ago
            current = self._journal.get(request_id)
            assert current is not None
            _check_reportable(current, has_executor)
            raise NotReportableError(request_id, current.status, "it moved on meanwhile")
        return t

    def unreported(self, request_id: str, now: datetime) -> Transition | None:
        """A handed-out request whose outcome never came: executed, ``outcome not reported``
        (None: it was reported first)."""
        t = self._journal.transition(
            request_id, Status.EXECUTED, at=now, by="hitl-vault", details=(NOT_REPORTED,),
            expect={Status.EXECUTING}, fields={"executed_at": now, "result": NOT_REPORTED},
        )  # fmt: skip
        self._publish()
        return t


NOT_REPORTED = "outcome not reported"


# The detail of the gate's approved → executing: the agent runs the tool and its PostToolUse
# hook reports the outcome; one that never comes is recorded NOT_REPORTED after this long.
def _check_reportable(request: Request, has_executor: Callable[[Request], bool]) -> None:
    status, rid = request.status, request.id
    if status in (Status.EXECUTED, Status.FAILED):
        raise NotReportableError(rid, status, "its outcome is recorded already, once")
    if status not in (Status.APPROVED, Status.EXECUTING):
        raise NotReportableError(rid, status, "only an approved request can be reported done")
    if not request.carried_by_requester and (status is Status.EXECUTING or has_executor(request)):
        why = "it has an executor: the daemon runs it and records its outcome"
        raise NotReportableError(rid, status, why)
