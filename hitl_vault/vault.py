"""The Vault: what scripts, agents and the CLI use.

A small public face over the :class:`~hitl_vault.engine.Engine`, which does the
work and which the daemon, its workers and ``approval()`` receive. Everything
here works the same with or without a daemon running.
"""

from __future__ import annotations

import builtins
import os
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

from . import approval
from .approval import Approval
from .engine import Engine
from .errors import IllegalTransitionError
from .events import Listener
from .model import Request, Status, check_action, new_id
from .policy.always import Allow
from .policy.intake import default_user
from .policy.pitch import make_pitch
from .policy.quorum import Count
from .policy.rules import Policy, RuleFunction, Ruling
from .store import JournalStore, LeasedStore
from .times import parse_duration, utcnow

F = TypeVar("F", bound=Callable[..., Any])


class Vault:
    """One vault folder: submit requests, decide them, wait for them, listen to them."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[str, datetime], str] = new_id,
        journal: JournalStore | None = None,
    ) -> None:
        """Open the vault at ``path``. ``journal``: another implementation of
        :class:`~hitl_vault.store.JournalStore` than the SQLite file in ``.hitl/``."""
        self.engine = Engine(path, clock=clock, ids=ids, journal=journal)

    def __repr__(self) -> str:
        return f"Vault({str(self.root)!r})"

    @property
    def root(self) -> Path:
        """The vault folder."""
        return self.engine.root

    @property
    def policy(self) -> Policy:
        """The rules in force (``hitl-vault.yaml`` as last loaded)."""
        return self.engine.policy

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> Vault:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- rules, executors and listeners ---------------------------------------------

    def rule(self, fn: RuleFunction) -> RuleFunction:
        """Register a Python rule: it sees each proposal and returns a decision or None."""
        self.engine.functions.append(fn)
        return fn

    def action(self, name: str) -> Callable[[F], F]:
        """Register an in-process executor, run by ``vault.run()`` for approved requests."""
        check_action(name)

        def register(fn: F) -> F:
            self.engine.handlers[name] = fn
            return fn

        return register

    def on(self, *statuses: Status | str) -> Callable[[Listener], Listener]:
        """Register a listener for transitions into ``statuses`` (none named: every one).

        ``@vault.on(Status.PENDING)`` calls the function with an
        :class:`~hitl_vault.events.Event` once per transition, after it is
        recorded, also for transitions another process made (heard when this vault
        next acts or waits; a running daemon hears them as they happen). A
        listener's exception is logged, never raised.
        """

        def register(listener: Listener) -> Listener:
            return self.engine.listen(listener, statuses)

        return register

    def evaluate(
        self, action: str, params: Mapping[str, Any] | None = None, *, requested_by: str = ""
    ) -> Ruling:
        """What the rules say about an action, without creating anything."""
        return self.engine.evaluate(action, params, requested_by=requested_by)

    def run(self, once: bool = False) -> None:
        """The daemon, in this process: watch the vault and run approved actions.

        Blocks until SIGTERM / Ctrl-C (``once``: until everything due is done).
        Raises :class:`DaemonRunningError` if another daemon holds the vault.
        """
        from .daemon.loop import Daemon  # loaded only here: it brings the file watcher

        journal = self.engine.journal
        if isinstance(journal, LeasedStore):  # several hosts: it acts while it holds the lease
            from .daemon.leader import lead

            lead(journal, lambda: Daemon(self.engine, takeover=True), os.environ, once)
            return
        Daemon(self.engine).run(once=once)

    # --- requests ---------------------------------------------------------------

    def submit(
        self,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        summary: str = "",
        timeout: str | float | None = None,
        requested_by: str | None = None,
        context: str | None = None,
        reasoning: str | None = None,
        confidence: float | None = None,
        alternatives: Sequence[str] | None = None,
        risk_factors: Sequence[str] | None = None,
    ) -> Request:
        """Propose an action; returns ``pending`` at once, or what an allow/block rule decided.

        ``context`` is free text for whoever decides: why the action is asked for, what
        it is part of. It is kept as given (``Request.context``; at most 20,000
        characters, more is a :class:`UsageError`), shown as plain text in a
        ``## Context`` section of the note, and put in notifications. The rules do not
        see it.

        ``reasoning`` (text), ``confidence`` (a number from 0 to 1), ``alternatives`` and
        ``risk_factors`` (lists of strings) are the requester's structured case, kept as
        ``Request.pitch`` and shown in a ``## Proposal`` section; a value of the wrong type
        or out of range is a :class:`UsageError`. Rules may match ``confidence`` to ask or
        block, never to allow: the requester asserts it.
        """
        pitch = make_pitch(
            reasoning=reasoning, confidence=confidence, alternatives=alternatives,
            risk_factors=risk_factors,
        )  # fmt: skip
        return self.engine.submit(
            action, params, summary=summary, timeout=timeout, requested_by=requested_by,
            context=context, pitch=pitch,
        )  # fmt: skip

    def get(self, request_id: str) -> Request:
        """One request, with its history; :class:`RequestNotFoundError` if there is none."""
        return self.engine.get(request_id)

    def list(self, status: Status | str | None = None, limit: int | None = None) -> list[Request]:
        """Requests, newest first (their ``history`` is left empty; ``get`` one for it)."""
        return self.engine.list(status, limit)

    def approve(
        self,
        request_id: str,
        by: str | None = None,
        reason: str = "",
        expect: str | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Request:
        """Approve a pending request, exactly as setting ``status: approved`` in its note would.

        Where the rules ask for several approvals (``quorum``, ``stages``) this is one vote
        by ``by``: the request stays ``pending`` until the votes decide (see :meth:`votes`);
        a vote that does not count raises :class:`DecisionRefusedError` and changes nothing.

        What runs is what ``show`` printed: params edited in the note since they were
        recorded are refused (:class:`ParamsChangedError`) unless ``expect`` is (a prefix
        of at least 8 characters of) the hash ``show`` printed for them; with ``expect``,
        any other params are refused. ``params``: run these instead (all of them), judged
        exactly like params edited in the note and approved in the same save (a rule with
        ``editable: false`` or a ``block`` rule turns the approval into a rejection).
        """
        return self.engine.approve(request_id, by, reason, expect, params)

    def reject(self, request_id: str, by: str | None = None, reason: str = "") -> Request:
        """Reject a pending request, exactly as setting ``status: rejected`` in its note would."""
        return self.engine.reject(request_id, by, reason)

    def votes(self, request_id: str) -> Count:
        """Who decides the request and where its votes stand: ``progress()`` says it in a
        line (``1 of 2 approvals; waiting for bob or carol``), ``waiting_for()`` lists who
        may still approve in the current stage, ``approvals`` who counted in each stage."""
        return self.engine.votes(self.engine.get(request_id))

    def cancel(self, request_id: str, by: str | None = None) -> Request:
        """Withdraw a pending request, or an approved one whose action has not started
        (:class:`IllegalTransitionError` once it has)."""
        return self.engine.cancel(request_id, by)

    def retry(self, request_id: str, by: str | None = None) -> Request:
        """A new request from a failed or timed-out one (:class:`NotRetryableError` for any
        other, or one retried already): the same action, params, summary, context and
        ``requested_by``, decided by the rules again; ``by`` (default: the OS user) is
        recorded as who retried it. ``retry_of`` / ``retried_as`` link the two."""
        return self.engine.retry(request_id, by)

    def done(
        self,
        request_id: str,
        result: str | None = None,
        error: str | None = None,
        by: str | None = None,
    ) -> Request:
        """Record how an approved request that has no executor ended, once: ``executed``
        with ``result``, or ``failed`` with ``error`` (one of the two). For what the caller
        carried out itself, and for an agent's tool call the gate handed out.

        :class:`NotReportableError` for a request the daemon runs (an executor is set for
        its action), one that is not approved, or one whose outcome is recorded already.
        ``by``: who reports it (default: its requester).
        """
        return self.engine.done(request_id, result, error, by)

    def always(
        self,
        request_id: str,
        by: str | None = None,
        reason: str = "",
        *,
        lasting: str | float | timedelta = "24h",
        session: bool = False,
        prefix: bool = False,
        expect: str | None = None,
    ) -> Allow | None:
        """Approve a pending request (as :meth:`approve`) and allow the very same call again,
        without asking, for ``lasting`` (``24h``): the same action and params (a shell
        tool's ``command`` only; with ``prefix``, any command that starts with it, when it
        has no shell metacharacters); with ``session``, only for the agent session that
        asked. A block rule still wins, and the allow stops at its end or when revoked
        (:meth:`revoke_allow`). Refused (:class:`DecisionRefusedError`, nothing done) where
        a matching rule asks for a quorum, stages or ``authenticated:`` approvals, unless
        it says ``always: true``; there this is one vote, and only the vote that approves
        it adds the allow (None before). The allow is kept in the journal, never in the
        notes."""
        engine = self.engine
        request = engine.get(request_id)
        if request.status is not Status.PENDING:
            raise IllegalTransitionError(request_id, request.status, Status.APPROVED)
        return engine.allows.add(
            request,
            lambda: engine.approve(request_id, by, reason, expect),
            by=by or default_user(),
            lasting=parse_duration(lasting, "--for"),
            session=session,
            prefix=prefix,
        )

    def allows(self) -> builtins.list[Allow]:
        """The "always" allows in force now (not revoked, not expired), oldest first."""
        return self.engine.allows.in_force()

    def revoke_allow(self, name: str, by: str | None = None) -> None:
        """Revoke the "always" allow ``name`` (journaled in the service log); an unknown or
        revoked one is a :class:`UsageError`."""
        self.engine.allows.revoke(name, by or default_user())

    def params_to_run(self, request_id: str) -> tuple[dict[str, Any], str, str]:
        """What approving now would run: the params (the note's, if a human edited them
        there), their hash (``approve --expect``), and how they differ from the params as
        they were asked for ("" when they do not)."""
        return self.engine.params_to_run(request_id)

    def decided_uid(self, request_id: str) -> int | None:
        """The real user id of the process that recorded the decision (``decided_by`` is only
        the name it claimed); None before a decision, or where the system has no user ids."""
        return self.engine.decided_uid(request_id)

    # --- waiting ------------------------------------------------------------------

    async def wait(self, request_id: str, timeout: float | None = None) -> Request:
        """Return once the request is no longer pending.

        Works with no daemon running: this process watches the note and the
        journal, applies the human's decision and the expiry itself with the same
        rules, and the journal makes sure each transition is recorded once.
        Raises :class:`WaitTimeoutError` if ``timeout`` seconds pass first.
        """
        return await self.engine.wait(request_id, timeout)

    def wait_sync(
        self, request_id: str, timeout: float | None = None, *, outcome: bool = False
    ) -> Request:
        """``wait`` for code that is not async (it cannot be called from inside an event loop).

        ``outcome``: wait until the request has ended instead (executed or failed, or
        rejected, timed out or cancelled): for an action the daemon runs, its result."""
        return self.engine.wait_sync(request_id, timeout, outcome=outcome)

    def approval(
        self,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        summary: str = "",
        timeout: str | float | None = None,
        requested_by: str | None = None,
        wait_timeout: float | None = None,
    ) -> AbstractAsyncContextManager[Approval]:
        """Ask, wait, then let the caller do it: executing on entry, executed or failed on exit.

        ``async with vault.approval("payment", {...}) as req:`` enters with the
        request as approved (``req.params`` as the human left them); set
        ``req.result``. Raises :class:`Rejected` or :class:`TimedOut` instead of
        entering when the request is refused. The daemon never runs such a request.
        """
        return approval.approval(
            self.engine, action, params, summary=summary, timeout=timeout,
            requested_by=requested_by, wait_timeout=wait_timeout,
        )  # fmt: skip

    def requires_approval(
        self,
        action: str,
        *,
        summary: str = "",
        timeout: str | float | None = None,
        requested_by: str | None = None,
    ) -> Callable[[F], F]:
        """Decorate a function (sync or async) so each call asks first, then runs as approved.

        The call's arguments become the params (by name); ``summary`` is
        formatted with them (``"Pay {recipient} ${amount}"``).
        """
        return approval.requires_approval(
            self.engine, action, summary=summary, timeout=timeout, requested_by=requested_by
        )

    # --- checking -----------------------------------------------------------------

    def send_test_notifications(self) -> builtins.list[tuple[str, str | None]]:
        """A test message to every ``notify:`` target: (target, None if delivered, else why)."""
        from .daemon.notifier import send_tests  # Apprise is loaded only to send

        self.engine.reload_policy(check_urls=True)  # raises RulesError for a target unread
        return send_tests(self.engine.notify, self.root.name)

    def verify(self) -> builtins.list[str]:
        """Every disagreement between the journal's chain, its entries and the notes."""
        return self.engine.verify()
