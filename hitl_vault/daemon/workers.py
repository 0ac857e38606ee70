"""The daemon's actions: which approved requests to run, claiming them, worker threads, outcomes.

A request is queued when it is approved, has an executor and was not made
through ``approval()`` (its requester runs it): when the journal's feed tells
the daemon of its approval, once committed, whoever recorded it; and at a start
or a rules change, when every approved request is looked at again. The daemon's
step claims the queue (approved → executing, journaled before anything starts)
and hands the claims to worker threads. A worker never touches the journal: it
hands back the outcome and the time the action ended, and the daemon's next
step journals all that came in, in one durable commit. Until then the request
stays ``executing``, so a crash in between counts as a crash during the action.

A leader that takes over from another host (:mod:`hitl_vault.daemon.leader`) recovers
with ``takeover``: the old holder may still be alive (frozen, or cut off), so an idempotent
action it was running runs again only once the action's own timeout has run out since
(the old host's watchdog ends it by then; a ``python:`` one, which has no timeout, is
interrupted instead), claimed for the new term and journaled before it starts, so the old
term's late outcome is refused; and a leader that loses its lease :meth:`Actions.abandon` s
what it runs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import JournalDamagedError, JournalUnavailableError, NotRunnableError, VaultError
from ..execute.executor import Outcome, execute
from ..execute.processes import KILL_GRACE, kill_all
from ..model import Request, Status, Transition
from ..store import LeasedStore, request_flag
from ..text import one_line

if TYPE_CHECKING:
    from ..policy.rules import Policy
    from ..store import JournalStore

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted: it may or may not have run; check before retrying"
# A request whose check raised (a Python rule's error) is tried again after this.
RETRY_CHECK = timedelta(seconds=30)


# Where Needs attention lists a request refused at the last moment (not a note's path:
# looking at the note again must not clear it).
refusal_key = request_flag


class Actions:
    """Approved requests queued, claimed, run on worker threads and finished."""

    def __init__(
        self,
        journal: JournalStore,
        *,
        rules: Callable[[], Policy],
        handlers: Mapping[str, Callable[[Request], Any]],
        root: Path,
        start: Callable[..., Transition | None],
        finish: Callable[..., Transition | None],
        later_in_note: Callable[[Request], str | None],
        clock: Callable[[], datetime],
        show: Callable[[str], None],
        workers: int,
        wake: Callable[[], None],
    ) -> None:
        self.journal = journal
        self._rules = rules  # the rules in force (they may reload): the actions' executors
        self._handlers = handlers  # Python actions, by name (``Vault.handler``)
        self._root = root  # where commands run
        self._start = start  # approved → executing (:meth:`Engine.start_execution`)
        self._finish = finish  # executing → its outcome (:meth:`Engine.finish_execution`)
        self._later_in_note = later_in_note  # what a note says that its entries do not prove
        self._clock = clock
        self._show = show  # the request's note is to show what happened (once quiet)
        self._wake = wake  # tells the daemon an action ended
        self._lock = threading.Lock()
        self._queued: dict[str, Request] = {}  # approved, with an executor, as read then
        self._taken: dict[str, Request] = {}  # claimed in a commit that has not landed yet
        self._later: dict[str, tuple[Request, datetime]] = {}  # deferred, and until when
        # Idempotent actions another host was running, to run again (from when) after a takeover.
        self._rerun: dict[str, tuple[Request, datetime]] = {}
        self.abandoned = False  # the lease is lost: nothing more is started or recorded
        # Whether this process may still act (a leader: its lease is not overdue), asked
        # right before each action starts, on its worker thread.
        self.may_act: Callable[[], bool] = lambda: True
        self._workers = workers
        self._running: dict[str, Future[None]] = {}
        # Actions that ended, with how they went (None: a bug kept it from running), and when.
        self._finished: dict[str, tuple[Outcome | None, datetime]] = {}
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="hitl-action")
        self.noted: set[str] = set()  # requests whose history gained a line: notes to rewrite

    @property
    def running(self) -> int:
        """Actions started that have not ended yet."""
        with self._lock:
            return len(self._running.keys() - self._finished.keys())

    @property
    def finished(self) -> bool:
        """Some action ended and its outcome waits to be journaled."""
        return bool(self._finished)

    @property
    def waiting(self) -> bool:
        """Some approved request is queued or deferred: a claim may start it."""
        return bool(self._queued or self._later or self._rerun)

    @property
    def busy(self) -> bool:
        return bool(self._queued or self._running or self._finished)

    def queue_if_runnable(self, request_id: str) -> None:
        if request_id in self._running:
            return  # started already (the daemon also hears its own approvals as events)
        # Read afresh every time: it may have moved on since it was approved (cancelled).
        request = self.journal.get(request_id, history=False)
        if (
            request is not None
            and request.status is Status.APPROVED
            and not request.carried_by_requester
            and (request.action in self._handlers or request.action in self._rules().actions)
        ):
            self._queued[request_id] = request

    def claim(self) -> list[tuple[Request, Transition]]:
        """approved → executing for as many queued actions as there are idle workers.

        Only what a worker will start at once is claimed: the rest stays ``approved``
        (so a crash or a stop leaves it to run later, never "interrupted"). An approved
        request's params and decision can no longer change, so the action gets the
        request as it was read when queued; only its status moves on. Started after
        the claim's commit (:meth:`launch`); :meth:`unclaim` if that commit failed.
        """
        claimed: list[tuple[Request, Transition]] = []
        now = self._clock()
        if self.abandoned:
            return claimed
        self._run_again(now)
        for request_id, (request, at) in list(self._later.items()):
            if now >= at:
                del self._later[request_id]
                self._queued.setdefault(request_id, request)
        idle = self._workers - self.running
        for request_id in sorted(self._queued):
            if len(claimed) >= idle:
                break
            request = self._queued.pop(request_id)
            if request_id in self._running:
                continue
            self._taken[request_id] = request
            try:
                t = self._start(request_id, by="executor", params=request.params)
            except NotRunnableError as e:
                self.refuse(request_id, str(e))
                continue
            except JournalUnavailableError:  # not claimed: unclaim() queues it again
                raise
            except VaultError as e:  # a Python rule that raised, say: not now, tried again later
                self._defer(request, e)
                continue
            self.journal.unflag(refusal_key(request_id))
            if t is not None:
                claimed.append((replace(request, status=t.to_status), t))
        return claimed

    def _defer(self, request: Request, error: VaultError) -> None:
        """A check that could not be made (a Python rule raised): fail closed for now, flag
        it, and try again in RETRY_CHECK, without holding back any other request."""
        now = self._clock()
        self._later[request.id] = (request, now + RETRY_CHECK)
        if self.refuse(
            request.id,
            f"request {request.id}: not run yet: {error} (fix it; hitl-vault tries again "
            f"every {RETRY_CHECK.seconds} s)",
        ):  # the first time: in its history too
            details = (one_line(f"not run yet: {error}", 400),)
            self.journal.record_ignored(request.id, now, details)
            self.noted.add(request.id)

    def next_wake(self, now: datetime) -> datetime | None:
        """When the first deferred request is tried again (an action's end wakes the daemon
        by itself)."""
        waits = [at for _, at in self._later.values()] + [at for _, at in self._rerun.values()]
        return min(waits, default=None)

    def refuse(self, request_id: str, message: str) -> bool:
        """Not run: say so under Needs attention (kept there while it stays refused) and, the
        first time, in the log; True that first time."""
        if self.journal.flag(refusal_key(request_id), message, self._clock(), request_id):
            log.error("%s", message)
            return True
        return False

    def unclaim(self) -> None:
        """The commit of the last claims failed: queue those requests again."""
        self._queued.update(self._taken)
        self._taken = {}

    def launch(self, claimed: list[tuple[Request, Transition]]) -> bool:
        """The last claims were committed: they are no longer queued, and each that moved to
        ``executing`` starts (not one a block rule rejected at the last moment); their notes
        are to show it. True if anything was claimed."""
        self._taken = {}
        while self.noted:  # a check that raised, now in the request's history
            self._show(self.noted.pop())
        for request, t in claimed:
            self._show(request.id)
            if t.to_status is Status.EXECUTING:
                self.start(request)
        return bool(claimed)

    def start(self, request: Request) -> None:
        """Run a claimed request's action on a worker thread."""
        self._running[request.id] = self._pool.submit(self._carry_out, request)

    def is_running(self, request_id: str) -> bool:
        return request_id in self._running

    def _carry_out(self, request: Request) -> None:
        """On a worker thread: run the action; the daemon's next step journals how it went."""
        outcome: Outcome | None = None
        try:
            if self.abandoned or not self.may_act():  # left executing: the next leader decides
                log.error("%s: not started: this host no longer leads", request.id)
                return
            spec = self._rules().actions.get(request.action)
            handler = self._handlers.get(request.action)
            shared = isinstance(self.journal, LeasedStore)  # another host may take over
            outcome = execute(spec, request, cwd=self._root, handler=handler, watched=shared)
        except Exception:  # a bug, not an action's failure: keep the daemon alive, say so loudly
            log.exception("%s: could not run the action", request.id)
        finally:
            with self._lock:
                self._finished[request.id] = (outcome, self._clock())
            self._wake()

    def record_outcomes(self) -> list[str]:
        """executing → executed or failed for the actions that ended: one durable commit for all.

        Returns the requests whose actions ended (their notes are to show it).
        """
        with self._lock:
            finished, self._finished = self._finished, {}
        if not finished or self.abandoned:  # killed with the lease: the next leader decides
            return []
        try:
            with self.journal.batch():
                for request_id, (outcome, at) in finished.items():
                    if outcome is not None:
                        self._record(request_id, outcome, at)
        except Exception:  # the commit failed, so nothing was recorded: try again next step
            with self._lock:
                self._finished = {**finished, **self._finished}
            raise
        for request_id in finished:
            self._running.pop(request_id, None)
            self._show(request_id)
        return list(finished)

    def _record(self, request_id: str, outcome: Outcome, at: datetime) -> None:
        try:
            self._finish(request_id, outcome.ok, outcome.result, outcome.error, at=at)
        except (OSError, JournalUnavailableError, JournalDamagedError):
            raise  # a full disk, a held journal: record_outcomes keeps the group to record again
        except Exception:  # the request moved on, or a bug: say so loudly; the rest go on
            log.exception("%s: could not record the outcome", request_id)

    def recover(self, now: datetime, *, stopping: bool, takeover: bool = False) -> list[str]:
        """After a restart: what a dead daemon left ``executing`` is run again if idempotent
        (unless ``stopping``), else failed as interrupted; never run twice. A request whose
        entries or note do not prove its approval is refused instead. Approved requests are
        queued. Returns the requests whose state changed (their notes are to show it).
        ``takeover``: another host may still be running them (see the module's note)."""
        journal = self.journal
        changed = []
        for request in journal.requests(Status.EXECUTING):
            if request.carried_by_requester or self.is_running(request.id):
                continue
            full = journal.get(request.id)
            assert full is not None
            problem = journal.unproven(
                request.id, request.params, Status.EXECUTING
            ) or self._later_in_note(full)
            if problem:  # neither run again nor called interrupted: a human looks first
                self.refuse(request.id, str(NotRunnableError(request.id, problem)))
                continue
            spec = self._rules().actions.get(request.action)
            timed = (
                spec is not None and spec.run is not None and request.action not in self._handlers
            )
            if spec is not None and spec.idempotent and (timed or not takeover):
                if stopping:  # stays executing: run again at the next start
                    continue
                if takeover:  # the old holder's watchdog ends its run by then (twice the grace)
                    wait = spec.timeout + timedelta(seconds=2 * KILL_GRACE)
                    self._rerun[request.id] = (request, now + wait)
                    log.warning(
                        "%s: was running on the host that led before; idempotent, so running "
                        "it again once its timeout has passed there", request.id,
                    )  # fmt: skip
                    continue
                log.warning(
                    "%s: was running when the daemon stopped; idempotent, so running it again",
                    request.id,
                )
                self.start(request)
                continue
            t = journal.transition(
                request.id, Status.FAILED, at=now, by="executor",
                details=(f"error: {INTERRUPTED}",), expect={Status.EXECUTING},
                fields={"executed_at": now, "error": INTERRUPTED},
            )  # fmt: skip
            if t is not None:
                changed.append(request.id)
                self._show(request.id)
        for request_id in journal.ids(Status.APPROVED):
            self.queue_if_runnable(request_id)
        return changed

    def _run_again(self, now: datetime) -> None:
        """Start the idempotent actions a takeover waited for, if still unfinished."""
        for request_id, (request, at) in list(self._rerun.items()):
            if now < at:
                continue
            del self._rerun[request_id]
            journal = self.journal
            # Claimed for this term and journaled first: the old term's outcome is refused.
            if isinstance(journal, LeasedStore) and journal.reclaim(request_id, now) is None:
                continue
            if journal.status_of(request_id) is Status.EXECUTING:
                log.warning("%s: running it again, with the same idempotency key", request_id)
                self._show(request_id)
                self.start(request)

    def abandon(self) -> int:
        """The lease is lost: kill every action's program this process runs, start nothing
        more, and record none of their outcomes (the next leader closes them); how many
        programs were killed."""
        self.abandoned = True
        self._queued.clear()
        self._later.clear()
        self._rerun.clear()
        return kill_all()

    def wait(self) -> None:
        """Until every action started so far has ended."""
        for future in list(self._running.values()):
            future.result()

    def shutdown(self) -> None:
        """Wait for the actions in flight and release the worker threads."""
        self._pool.shutdown(wait=True)
