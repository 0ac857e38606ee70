"""The engine under a Vault: every operation on requests, for the Vault, the daemon, its
workers and ``approval()``. It composes the journal (what happened), the rules (what needs a
human), the notes (what the human sees and edits) and, for ``wait``, a watcher, so that every
operation works the same with or without a daemon running. After each operation it publishes
what the journal recorded to the listeners (:mod:`hitl_vault.events`). Scripts use the small
public :class:`~hitl_vault.vault.Vault`.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any

from ..errors import (
    IllegalTransitionError,
    NoteError,
    RequestNotFoundError,
    RulesError,
    UnprovenDecisionError,
)
from ..events import Events, Listener
from ..identity import REQUESTER_LIMIT, Proof, check_name
from ..journal.pg_host import open_journal
from ..model import (
    RULES_FILE,
    STATE_DIR,
    Origin,
    Request,
    Status,
    Transition,
    check_action,
    new_id,
)
from ..notes.decide import Decider
from ..notes.reconcile import Reconciler
from ..params import check_expected, clean_params, describe_changes, params_sha
from ..policy.conditions import Where
from ..policy.intake import default_user
from ..policy.pitch import Pitch
from ..policy.quorum import Count
from ..policy.rules import Policy, Proposal, RuleFunction, Ruling
from ..policy.trust import UntrustedVaultError
from ..policy.verdict import counted
from ..store import JournalStore
from ..times import utcnow
from .always import Allows
from .deadlines import Deadlines
from .execution import Execution
from .rules_in_force import check_trust, read_rules, record_policy, vault_root
from .submission import Submissions
from .verify import verify_vault
from .waiting import Waiting

log = logging.getLogger(__name__)


class Engine:
    """One vault folder: its journal, its rules, its notes, and the listeners to its events."""

    def __init__(
        self,
        path: str | Path,
        *,
        clock: Callable[[], datetime] = utcnow,
        ids: Callable[[str, datetime], str] = new_id,
        journal: JournalStore | None = None,
    ) -> None:
        self.root = vault_root(path)
        self._clock = clock
        self.ids = ids  # how a new request is named
        check_trust(self.root)  # before anything is created or chmodded through a link
        self.policy, self.notify, text = read_rules(self.root)
        # the SQLite file in .hitl/, or the server $HITL_VAULT_JOURNAL names (journal/pg_host)
        self.journal: JournalStore = journal or open_journal(self.root)
        record_policy(self.journal, text, self.now())
        self.functions: list[RuleFunction] = []
        self.handlers: dict[str, Callable[[Request], Any]] = {}
        rules = lambda: self.policy  # noqa: E731 - the rules in force, reloaded at times
        self._decider = Decider(self.journal, rules, self.functions)
        self.notes = Reconciler(self.root, self.journal, self._decider)
        self.events = Events(self.journal)
        self._submissions = Submissions(
            self.journal, self.notes, rules, self.functions, ids, self.now, self.publish
        )
        self._deadlines = Deadlines(self.journal, self._decider.plan, self.publish)
        self._execution = Execution(
            self.journal, self.notes.later_in_note, rules, self.functions, self.publish, self.now
        )
        self._waiting = Waiting(self.root, self.refresh, self.now, self.journal.watch)
        state = self.root / STATE_DIR if journal is None else None  # where the gate looks
        self.allows = Allows(self.journal, rules, self.functions, self.now, state)

    # --- events -------------------------------------------------------------------

    def listen(
        self, listener: Listener, statuses: Iterable[Status | str] = (), *, every: bool = False
    ) -> Listener:
        """Call ``listener`` once for each transition (into ``statuses``) from now on; with
        ``every``, for each journal entry (votes, escalations, edits) too."""
        return self.events.listen(listener, statuses, every=every)

    def publish(self) -> int:
        """Hand what the journal recorded since the last call to the listeners, once each
        (see :meth:`Events.publish`); the count of entries."""
        return self.events.publish()

    def __repr__(self) -> str:
        return f"Engine({str(self.root)!r})"

    def now(self) -> datetime:
        return self._clock()

    def reload_policy(self, *, check_urls: bool = False) -> Policy:
        """Read hitl-vault.yaml again; on error the old rules and notification targets stay
        and the error is raised. ``check_urls``: Apprise must read each ``notify:`` URL.

        A rules file anyone (or another user) may write is refused like a broken one.
        Every change of the rules in force is journaled with its hash and a short diff.
        """
        try:
            check_trust(self.root)
        except UntrustedVaultError as e:
            raise RulesError(RULES_FILE, str(e), "fix who may write it") from None
        self.policy, self.notify, text = read_rules(self.root, check_urls=check_urls)
        record_policy(self.journal, text, self.now())
        return self.policy

    def close(self) -> None:
        self._waiting.close()
        self.journal.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- rules ------------------------------------------------------------------

    def evaluate(
        self, action: str, params: Mapping[str, Any] | None = None, *, requested_by: str = ""
    ) -> Ruling:
        """What the rules say about an action, without creating anything."""
        check_action(action)
        proposal = Proposal(action, clean_params(params), "", requested_by)
        return self.policy.evaluate(proposal, self.functions)

    # --- requests ---------------------------------------------------------------

    def submit(
        self,
        action: str,
        params: Mapping[str, Any] | None = None,
        *,
        summary: str = "",
        timeout: str | float | None = None,
        requested_by: str | None = None,
        carried_by_requester: bool = False,
        source: str | None = None,
        context: str | None = None,
        retry: tuple[str, str] | None = None,
        pitch: Pitch | None = None,
        where: Where | None = None,
        origin: Origin | None = None,
        credential: str | None = None,
    ) -> Request:
        """Propose an action; returns ``pending`` at once, or what an allow/block rule decided.

        ``context`` is what the requester tells the approver (see :meth:`Vault.submit`);
        ``pitch``: its reasoning, confidence, alternatives, risk factors and diff.
        ``source`` (Inbox proposals): a key recorded with the request, once (a second submit
        with it raises :class:`DuplicateError`). ``retry``: (the retried request, who retries it),
        linked in both; ``origin``: the token that asked through the service; ``where``: what the
        gate resolved (``path:``); ``credential``: the one it asked with, kept in its entries."""
        request = self._submissions.submit(
            action, params, summary=summary, timeout=timeout, requested_by=requested_by,
            carried_by_requester=carried_by_requester, source=source, context=context,
            retry=retry, pitch=pitch, where=where, origin=origin, credential=credential,
        )  # fmt: skip
        if retry is not None:
            self.show_in_note(retry[0], request.created)
        return request

    def retry(self, request_id: str, by: str | None = None) -> Request:
        """A new request from a failed or timed-out one: the same action, params (those
        that ran, or as last recorded), summary, context and requester, decided by the
        rules again. Both notes link to each other; ``by`` is who retried it."""
        request = self._submissions.retry(self.get(request_id), by or default_user())
        self.show_in_note(request_id, request.created)
        return request

    def get(self, request_id: str) -> Request:
        """The request, its history as the rules count it: a ``via`` detail stands only
        where the service's user recorded it (``verify`` names any other)."""
        request = self.journal.get(request_id)
        if request is None:
            raise RequestNotFoundError(request_id)
        return self._located(self._decider.counting(request))

    def decided_uid(self, request_id: str) -> int | None:
        """The real user id of the process that recorded the decision (``decided_by`` is only
        the name it claimed); None before a decision, or where the system has no user ids."""
        return self.journal.decision_uid(request_id)

    def _located(self, request: Request) -> Request:
        path = self.notes.locate(request.id, str(request.path) if request.path else None)
        return replace(request, path=path)

    def list(self, status: Status | str | None = None, limit: int | None = None) -> list[Request]:
        """Requests, newest first (their ``history`` is left empty; ``get`` one for it)."""
        wanted = Status.named(status) if status is not None else None
        return [
            replace(r, path=self.root / r.path if r.path else None)
            for r in self.journal.requests(wanted, limit)
        ]

    def approve(
        self,
        request_id: str,
        by: str | None = None,
        reason: str = "",
        expect: str | None = None,
        params: Mapping[str, Any] | None = None,
        *,
        proof: Proof | None = None,
        spend: Callable[[], None] | None = None,
    ) -> Request:
        """Approve a pending request, exactly as setting ``status: approved`` in its note would.

        What runs is what ``show`` printed: params edited in the note since they were
        recorded are refused (:class:`ParamsChangedError`) unless ``expect`` is (a prefix
        of at least 8 characters of) the hash ``show`` printed for them; with ``expect``,
        any other params are refused. ``params``: run these instead (all of them), judged
        as an edit of the note's params saved with the approval; ``expect`` then names the
        params they were edited from. Returns the request as the approval left it.

        ``proof``: who the service proved decides, and through which channel (only the
        service hands one; ``by`` is then its name). The history says ``by alice via api``
        and rules with ``authenticated:`` count it; without it they refuse an approval
        (:class:`UnprovenDecisionError`, listed under Needs attention). ``spend``: called in
        the decision's transaction (a decision link is spent there, so it decides once).
        """
        edited = None if params is None else clean_params(params)
        return self._decide(request_id, Status.APPROVED, by, reason, expect, edited, proof, spend)

    def reject(
        self, request_id: str, by: str | None = None, reason: str = "", *,
        proof: Proof | None = None, spend: Callable[[], None] | None = None,
    ) -> Request:  # fmt: skip
        """Reject a pending request, exactly as setting ``status: rejected`` in its note would
        (``proof`` and ``spend``: as for :meth:`approve`)."""
        return self._decide(request_id, Status.REJECTED, by, reason, None, None, proof, spend)

    def params_to_run(self, request_id: str) -> tuple[dict[str, Any], str, str]:
        """What approving now would run: the params (the note's, if a human edited them
        there), their hash (``approve --expect``), and how they differ from the params as
        they were asked for ("" when they do not)."""
        params = self.notes.params_shown(self.get(request_id))
        edited = describe_changes(self.journal.created_params(request_id), params)
        return params, params_sha(params), edited

    def _decide(
        self,
        request_id: str,
        to: Status,
        by: str | None,
        reason: str,
        expect: str | None = None,
        given: Mapping[str, Any] | None = None,
        proof: Proof | None = None,
        spend: Callable[[], None] | None = None,
    ) -> Request:
        if by is not None and proof is None:  # a name claimed: it must be one (not "x via api")
            check_name(by, "by")
        request = self.get(request_id)
        if self.notes.note_first(request, self.now()):  # a save made before this decision
            self.publish()
            request = self.get(request_id)
        if request.status is not Status.PENDING:
            raise IllegalTransitionError(request_id, request.status, to)
        if self._deadlines.escalate_if_due(request, self.now()) is not None:
            request = self.get(request_id)
        params: Mapping[str, Any] | None = None  # a rejection runs nothing: its params stand
        if to is Status.APPROVED:
            params, sha, edited = self.params_to_run(request_id)
            if expect is not None or (edited and given is None):
                check_expected(request_id, sha, expect, edited)
            params = params if given is None else given
        now = self.now()
        try:  # judged and read back in one transaction: what it returns is what it decided
            with self.journal.batch():
                if spend is not None:
                    spend()
                request = self.get(request_id)
                done = self._decider.decide(
                    request, to, by=by or default_user(), reason=reason, params=params, now=now,
                    proof=proof,
                )  # fmt: skip
                decided = self.get(request_id)
        except UnprovenDecisionError as e:  # pending; the owner sees the attempt
            self._decider.unproven(request, e, now)
            self.publish()
            self.show_in_note(request_id, now)
            raise
        except RulesError as e:  # a Python rule raised: fail closed, pending, and say so
            what = "approval" if to is Status.APPROVED else "rejection"
            self._decider.rule_failed(request, what, e, now)
            self.publish()
            self.show_in_note(request_id, now)
            raise
        self.publish()
        if done is not None:
            self.show_in_note(request_id, now)
        if done is None or done.to_status is Status.TIMED_OUT:  # too late: it expired
            raise IllegalTransitionError(request_id, decided.status, to)
        return replace(decided, path=self.notes.locate(request_id))  # (carried out since?)

    def votes(self, request: Request) -> Count:
        """Who decides ``request`` under the rules in force and where its votes stand."""
        return counted(self._decider.plan(request), self._decider.counting(request))

    def cancel(
        self, request_id: str, by: str | None = None, *, credential: str | None = None
    ) -> Request:
        """Withdraw a pending request, or an approved one whose action has not started (approved
        → executing checks the status in one transaction: it started first or never starts).
        ``by``: by default the requester, or the user for an approved one; ``credential``: as
        for :meth:`submit`."""
        if by is not None:
            check_name(by, "by", REQUESTER_LIMIT)  # an agent cancels in its requested_by
        request = self.get(request_id)
        now = self.now()
        if request.status is Status.APPROVED:  # the approval's decided_by/_at stay
            done = self.journal.transition(
                request_id, Status.CANCELLED, at=now, by=by or default_user(),
                expect={Status.APPROVED}, details=("withdrawn before its action started",),
                credential=credential,
            )  # fmt: skip
        else:
            done = self.journal.transition(
                request_id, Status.CANCELLED, at=now, by=by or request.requested_by,
                expect={Status.PENDING}, fields={"decided_at": now}, credential=credential,
            )  # fmt: skip
        self.publish()
        if done is None:
            raise IllegalTransitionError(request_id, self.get(request_id).status, Status.CANCELLED)
        self.show_in_note(request_id, now)
        return self.get(request_id)

    def show_in_note(self, request_id: str, now: datetime) -> None:
        """Bring the note up to date at once, unless a daemon will do it once the note is quiet."""
        if self.journal.daemon_running():
            return
        try:
            self.notes.sync_now(request_id, now)
        except NoteError as e:  # the journal has it; the note waits for a fix (see Dashboard.md)
            self.journal.flag(e.where, str(e), now, request_id)
            log.warning("needs attention: %s", e)

    # --- catching up without a daemon ---------------------------------------------

    def refresh(self, request_id: str) -> Request:
        """Apply what the note and the clock say to one request (a human's decision, expiry)."""
        try:
            return self._refresh(request_id)
        finally:
            self.publish()

    def _refresh(self, request_id: str) -> Request:
        request = self.get(request_id)
        now = self.now()
        if self.notes.note_first(request, now):
            self.show_in_note(request_id, now)
            return self.get(request_id)
        if self._deadlines.escalate_if_due(request, now) is not None:
            self.show_in_note(request_id, now)
            request = self.get(request_id)
        if request.status is Status.PENDING and request.expires and request.expires <= now:
            if self.expire(request_id, now) is not None:
                self.show_in_note(request_id, now)
            return self.get(request_id)
        return request

    def escalate(self, request_id: str, now: datetime) -> Transition | None:
        """Nobody decided by ``escalate_after``: ``escalate_to`` may decide too (None: it
        was decided, or escalated, first)."""
        return self._deadlines.escalate(self.get(request_id), now)

    def expire(self, request_id: str, now: datetime) -> Transition | None:
        """pending → timed_out, unless it was decided first (then None)."""
        return self._deadlines.expire(request_id, now)

    # --- waiting ------------------------------------------------------------------

    async def wait(self, request_id: str, timeout: float | None = None) -> Request:
        """Return once the request is no longer pending (see :meth:`hitl_vault.Vault.wait`)."""
        return await self._waiting.wait(request_id, timeout)

    def wait_sync(
        self, request_id: str, timeout: float | None = None, *, outcome: bool = False
    ) -> Request:
        """See :meth:`hitl_vault.Vault.wait_sync`."""
        return self._waiting.wait_sync(request_id, timeout, outcome=outcome)

    def verify(self) -> builtins.list[str]:
        """Every disagreement between the journal's chain, its entries and the notes."""
        return verify_vault(self.journal, self.notes)

    # --- carrying out an approved request ----------------------------------------------

    def start_execution(
        self, request_id: str, by: str, params: Mapping[str, Any] | None = None,
        details: tuple[str, ...] = (),
    ) -> Transition | None:  # fmt: skip
        """approved → executing, right before the action starts (see :meth:`Execution.start`)."""
        return self._execution.start(request_id, by, params, details)

    def finish_execution(
        self,
        request_id: str,
        ok: bool,
        result: str | None = None,
        error: str | None = None,
        *,
        at: datetime | None = None,
    ) -> Transition | None:
        """executing → executed (with its result) or failed (with the error), as of ``at``."""
        return self._execution.finish(request_id, ok, result, error, at=at)

    def done(
        self, request_id: str, result: str | None = None, error: str | None = None,
        by: str | None = None, *, credential: str | None = None,
    ) -> Request:  # fmt: skip
        """See :meth:`hitl_vault.Vault.done` (``credential``: as for :meth:`cancel`)."""
        runs = lambda r: r.action in self.handlers or r.action in self.policy.actions  # noqa: E731
        self._execution.report(request_id, result, error, by, runs, credential)
        self.show_in_note(request_id, self.now())
        return self.get(request_id)

    def unreported(self, request_id: str, now: datetime) -> Transition | None:
        """A handed-out request whose outcome never came (see :meth:`Execution.unreported`)."""
        return self._execution.unreported(request_id, now)
