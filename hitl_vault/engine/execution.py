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

from ..errors import NotRunnableError, RequestNotFoundError
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
        self, request_id: str, by: str, params: Mapping[str, Any] | None = None
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
                request_id, Status.EXECUTING, at=now, by=by, expect={Status.APPROVED}
            )
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
    ) -> Transition | None:
        """executing → executed (with its result) or failed (with the error), as of ``at``."""
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
            by="executor",
            details=details,
            expect={Status.EXECUTING},
            fields=fields,
        )
        self._publish()
        return t
