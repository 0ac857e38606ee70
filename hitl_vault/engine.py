"""The engine under a Vault: every operation on requests, for the Vault, the daemon,
its workers and ``approval()``.

It composes the journal (what happened), the rules (what needs a human), the
notes (what the human sees and edits) and, for ``wait``, a watcher, so that
every operation works the same with or without a daemon running. After each
operation it publishes what the journal recorded to the listeners
(:mod:`hitl_vault.events`). Scripts use the small public :class:`~hitl_vault.vault.Vault`.
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

from .errors import (
    ChangedUnderfootError,
    DuplicateError,
    IllegalTransitionError,
    NoteError,
    NotRetryableError,
    NotRunnableError,
    RequestNotFoundError,
    RulesError,
    VaultNotFoundError,
)
from .events import Events, Listener
from .journal.sqlite import Journal
from .layout import JOURNAL_FILE, REQUEST_FOLDERS, RULES_FILE, STATE_DIR
from .model import RETRYABLE, Kind, Request, Status, Transition, check_action, new_id
from .notes.file import read_note
from .notes.reconcile import Reconciler
from .notes.render import render_new_note
from .notes.state import explanation, line_number
from .notify.config import NotifyConfig, read_notify_config
from .params import check_expected, clean_params, describe_changes, note_params, params_sha
from .policy.intake import ask, check_context, check_size, default_user, storable
from .policy.quorum import Count, count
from .policy.rules import Policy, Proposal, RuleFunction, Ruling, code_matches
from .policy.rulesfile import parse_policy, rules_text
from .policy.trust import UntrustedVaultError, check_vault, raise_for
from .policy.verdict import counted, judge_run
from .store import JournalStore
from .text import one_line
from .times import parse_duration, utcnow
from .verify import verify_vault
from .waiting import Waiting

log = logging.getLogger(__name__)


def _storable(text: str | None) -> str | None:
    """Text as UTF-8 can hold it: what cannot be encoded (a lone surrogate) becomes "?"."""
    return None if text is None else storable(text)


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
        root = Path(path).expanduser()
        if not root.is_dir():
            raise VaultNotFoundError(root, "create one with `hitl-vault init PATH`")
        if not (root / RULES_FILE).exists() and not any(
            (root / f).is_dir() for f in REQUEST_FOLDERS
        ):
            raise VaultNotFoundError(
                root, f"it has no {RULES_FILE} and no request folders; run `hitl-vault init {root}`"
            )
        self.root = root.resolve()
        self._clock = clock
        self._ids = ids
        self._check_trust()  # before anything is created or chmodded through a link
        self.policy, self.notify, text = self._read_rules()
        self.journal: JournalStore = journal or Journal(self.root / STATE_DIR / JOURNAL_FILE)
        self._record_policy(text)
        self.functions: list[RuleFunction] = []
        self.handlers: dict[str, Callable[[Request], Any]] = {}
        self.notes = Reconciler(self.root, self.journal, lambda: self.policy, self.functions)
        self.events = Events(self.journal)
        self._waiting = Waiting(self.root, self.refresh, self.now, self.journal.watch)

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

    @property
    def ids(self) -> Callable[[str, datetime], str]:
        """How this engine names a new request (the ``ids`` it was opened with)."""
        return self._ids

    def reload_policy(self, *, check_urls: bool = False) -> Policy:
        """Read hitl-vault.yaml again; on error the old rules and notification targets stay
        and the error is raised. ``check_urls``: Apprise must read each ``notify:`` URL.

        A rules file anyone (or another user) may write is refused like a broken one.
        Every change of the rules in force is journaled with its hash and a short diff.
        """
        try:
            self._check_trust()
        except UntrustedVaultError as e:
            raise RulesError(RULES_FILE, str(e), "fix who may write it") from None
        self.policy, self.notify, text = self._read_rules(check_urls=check_urls)
        self._record_policy(text)
        return self.policy

    def _read_rules(self, *, check_urls: bool = False) -> tuple[Policy, NotifyConfig, str | None]:
        """The rules file's policy and notification targets, and its text to journal (None
        when there is no file)."""
        text = rules_text(self.root / RULES_FILE, RULES_FILE) or ""
        policy = parse_policy(text, RULES_FILE)
        notify = read_notify_config(text, RULES_FILE, check_urls=check_urls)
        return policy, notify, text or None

    def _check_trust(self) -> None:
        report = check_vault(self.root)
        for warning in report.warnings:
            log.warning("%s", warning)
        raise_for(report)

    def _record_policy(self, text: str | None) -> None:
        summary = self.journal.record_policy(text, self.now())
        if summary is not None and summary.startswith("first load"):
            log.info("%s: %s", RULES_FILE, summary)
        elif summary is not None:
            log.info("%s changed:\n%s", RULES_FILE, summary)

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
    ) -> Request:
        """Propose an action; returns ``pending`` at once, or what an allow/block rule decided.

        ``context`` is what the requester tells the approver (see :meth:`Vault.submit`).
        ``source`` (used for Inbox proposals) is a key recorded with the request;
        a second submit with the same key raises :class:`DuplicateError`.
        ``retry``: (the request this one retries, who retries it), linked in both.
        """
        check_action(action)
        params = clean_params(params)
        context = check_context(context)
        limit = parse_duration(timeout, "timeout") if timeout is not None else None
        proposal = Proposal(action, params, summary, requested_by or default_user())
        code = code_matches(proposal, self.functions)  # each Python rule called once
        asked = ask(
            self.policy, proposal, code, asked_timeout=limit, now=self.now(),
            carried_by_requester=carried_by_requester, context=context,
        )  # fmt: skip
        if retry is not None:
            first = asked.request.history[0]
            link = Transition(
                first.at, first.to_status, first.to_status, retry[1], "",
                (f"retry of {retry[0]}",), Kind.LINKED,
            )  # fmt: skip
            made = replace(asked.request, retry_of=retry[0], history=(first, link))
            asked = replace(asked, request=made)
        explained = explanation(asked.matches, asked.request.rule)
        plan = asked.plan
        none_yet = count(plan, (), requester=asked.request.requested_by)
        names = sorted(none_yet.waiting_for() or ()) if plan.by_votes else []
        pending = plan.by_votes and asked.request.status is Status.PENDING
        waiting = none_yet.progress() if pending else None
        for attempt in range(5):
            request = asked.with_id(self._ids)
            text = render_new_note(request, explained, names, waiting)
            check_size(text)
            try:
                where = f"{request.status.folder}/{request.id}.md"
                self.journal.create(request, where, source, asked.pinned)
                break
            except DuplicateError as e:  # the random tail of the id repeated: draw again
                if attempt == 4 or e.what.startswith("proposal"):
                    raise
        try:
            path: Path | None = self.notes.write_new(request, text)
        except ChangedUnderfootError:  # a daemon that saw the journal entry wrote it first
            path = self.notes.locate(request.id)
            if path is None:
                raise
        finally:
            self.publish()
        if retry is not None:
            self.show_in_note(retry[0], request.created)
        return replace(request, path=path)

    def retry(self, request_id: str, by: str | None = None) -> Request:
        """A new request from a failed or timed-out one: the same action, params (those
        that ran, or as last recorded), summary, context and requester, decided by the
        rules again. Both notes link to each other; ``by`` is who retried it."""
        old = self.get(request_id)
        if old.status not in RETRYABLE or old.retried_as is not None:
            raise NotRetryableError(request_id, old.status, old.retried_as)
        if old.carried_by_requester:  # an agent's tool call: only the agent can make it again
            why = (
                f"it is {old.status} and was made by {old.requested_by}, which carries it "
                "out itself: have the agent make the same call again (a new request)"
            )
            raise NotRetryableError(request_id, old.status, why=why)
        return self.submit(
            old.action, old.params, summary=old.summary, requested_by=old.requested_by,
            context=old.context, retry=(old.id, by or default_user()),
        )  # fmt: skip

    def get(self, request_id: str) -> Request:
        request = self.journal.get(request_id)
        if request is None:
            raise RequestNotFoundError(request_id)
        return self._located(request)

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
    ) -> Request:
        """Approve a pending request, exactly as setting ``status: approved`` in its note would.

        What runs is what ``show`` printed: params edited in the note since they were
        recorded are refused (:class:`ParamsChangedError`) unless ``expect`` is (a prefix
        of at least 8 characters of) the hash ``show`` printed for them; with ``expect``,
        any other params are refused. ``params``: run these instead (all of them), judged
        as an edit of the note's params saved with the approval; ``expect`` then names the
        params they were edited from.
        """
        edited = None if params is None else clean_params(params)
        return self._decide(request_id, Status.APPROVED, by, reason, expect, edited)

    def reject(self, request_id: str, by: str | None = None, reason: str = "") -> Request:
        """Reject a pending request, exactly as setting ``status: rejected`` in its note would."""
        return self._decide(request_id, Status.REJECTED, by, reason)

    def params_to_run(self, request_id: str) -> tuple[dict[str, Any], str, str]:
        """What approving now would run: the params (the note's, if a human edited them
        there), their hash (``approve --expect``), and how they differ from the params as
        they were asked for ("" when they do not)."""
        request = self.get(request_id)
        params = dict(request.params)
        if request.path is not None and request.status is Status.PENDING:
            try:
                note = read_note(request.path, self.notes.rel(request.path))
            except NoteError:
                note = None
            if note is not None and isinstance(note.meta.get("params"), dict):
                line = line_number(note, "params")
                params = note_params(note.meta["params"], note.where, line)
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
    ) -> Request:
        request = self.get(request_id)
        if request.status is not Status.PENDING:
            raise IllegalTransitionError(request_id, request.status, to)
        if self._escalate_if_due(request, self.now()) is not None:
            request = self.get(request_id)
        params: Mapping[str, Any] | None = None  # a rejection runs nothing: its params stand
        if to is Status.APPROVED:
            params, sha, edited = self.params_to_run(request_id)
            if expect is not None or (edited and given is None):
                check_expected(request_id, sha, expect, edited)
            params = params if given is None else given
        now = self.now()
        try:
            done = self.notes.decide(
                request, to, by=by or default_user(), reason=reason, params=params, now=now
            )
        except RulesError as e:  # a Python rule raised: fail closed, pending, and say so
            what = "approval" if to is Status.APPROVED else "rejection"
            self.notes.rule_failed(request, what, e, now)
            self.publish()
            self.show_in_note(request_id, now)
            raise
        self.publish()
        if done is not None:
            self.show_in_note(request_id, now)
        if done is None or done.to_status is Status.TIMED_OUT:  # too late: it expired
            raise IllegalTransitionError(request_id, self.get(request_id).status, to)
        return self.get(request_id)

    def votes(self, request: Request) -> Count:
        """Who decides ``request`` under the rules in force and where its votes stand."""
        return counted(self.notes.plan(request), request)

    def cancel(self, request_id: str, by: str | None = None) -> Request:
        """Withdraw a pending request, or an approved one whose action has not started
        (approved → executing checks the status in the same transaction, so the action
        either started first or never starts). ``by``: the requester (pending) or the
        user at the keyboard (approved) unless given."""
        request = self.get(request_id)
        now = self.now()
        if request.status is Status.APPROVED:  # the approval's decided_by/_at stay
            done = self.journal.transition(
                request_id, Status.CANCELLED, at=now, by=by or default_user(),
                expect={Status.APPROVED}, details=("withdrawn before its action started",),
            )  # fmt: skip
        else:
            done = self.journal.transition(
                request_id, Status.CANCELLED, at=now, by=by or request.requested_by,
                expect={Status.PENDING}, fields={"decided_at": now},
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
        if request.status is Status.PENDING and request.path is not None:
            finding = self.notes.inspect(request.path, now)
            if finding is not None and finding.acted is not None:
                self.show_in_note(request_id, now)
                return self.get(request_id)
        if self._escalate_if_due(request, now) is not None:
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
        request = self.get(request_id)
        names = sorted(self.notes.plan(request).escalate_to)
        t = self.journal.record_escalation(request_id, now, "to " + (", ".join(names) or "nobody"))
        self.publish()
        return t

    def _escalate_if_due(self, request: Request, now: datetime) -> Transition | None:
        """The escalation of a pending request that fell due with no daemon to see it."""
        due = request.escalate_at is not None and request.escalate_at <= now
        if request.status is Status.PENDING and due:
            return self.escalate(request.id, now)
        return None

    def expire(self, request_id: str, now: datetime) -> Transition | None:
        """pending → timed_out, unless it was decided first (then None)."""
        t = self.journal.transition(
            request_id, Status.TIMED_OUT, at=now, by="hitl-vault", expect={Status.PENDING}
        )
        self.publish()
        return t

    # --- waiting ------------------------------------------------------------------

    async def wait(self, request_id: str, timeout: float | None = None) -> Request:
        """Return once the request is no longer pending (see :meth:`hitl_vault.Vault.wait`)."""
        return await self._waiting.wait(request_id, timeout)

    def wait_sync(self, request_id: str, timeout: float | None = None) -> Request:
        """``wait`` for code that is not async (it cannot be called from inside an event loop)."""
        return self._waiting.wait_sync(request_id, timeout)

    def verify(self) -> builtins.list[str]:
        """Every disagreement between the journal's chain, its entries and the notes."""
        return verify_vault(self.journal, self.notes)

    # --- carrying out an approved request ----------------------------------------------

    def start_execution(
        self, request_id: str, by: str, params: Mapping[str, Any] | None = None
    ) -> Transition | None:
        """approved → executing, durably, right before the action starts with ``params``.

        None if it is no longer approved (already started, say). Raises
        :class:`NotRunnableError`, recording nothing, unless the journal's own entries
        prove an approval of exactly these params and the note shows no later state
        than the journal. A block rule in force now rejects it instead (that
        transition is returned).
        """
        request = self.journal.get(request_id)
        if request is None:
            raise RequestNotFoundError(request_id)
        if request.status is not Status.APPROVED:
            return None
        run = request.params if params is None else params
        problem = self.journal.unproven(request_id, run) or self.notes.later_in_note(request)
        if problem and self.journal.status_of(request_id) is not Status.APPROVED:
            return None  # cancelled meanwhile (by another process): nothing to run
        if problem:
            raise NotRunnableError(request_id, problem)
        now = self.now()
        blocked = judge_run(self.policy, request, run, self.functions)
        if blocked is not None:
            t = self.journal.transition(
                request_id, Status.REJECTED, at=now, by="hitl-vault", reason=blocked,
                expect={Status.APPROVED}, fields={"reason": blocked},
            )  # fmt: skip
        else:
            t = self.journal.transition(
                request_id, Status.EXECUTING, at=now, by=by, expect={Status.APPROVED}
            )
        self.publish()
        return t

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
        now = at or self.now()
        result, error = _storable(result), _storable(error)  # e.g. a file name's lone surrogate
        if ok:
            details = (f"result: {one_line(result or '', 200)}",) if result else ()
            fields: dict[str, Any] = {"executed_at": now, "result": result or ""}
            to = Status.EXECUTED
        else:
            details = (f"error: {one_line(error or '', 200)}",)
            fields = {"executed_at": now, "error": error or "failed"}
            to = Status.FAILED
        t = self.journal.transition(
            request_id, to, at=now, by="executor", details=details,
            expect={Status.EXECUTING}, fields=fields,
        )  # fmt: skip
        self.publish()
        return t
