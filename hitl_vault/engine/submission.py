"""A new request: the rules decide it at once (allow, block) or ask a human, it is journaled
under a fresh id, and its note is written.

:class:`Submissions` is handed the journal, the notes, the rules in force, this process's
Python rules, the id factory, the clock and a way to tell the listeners.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import ChangedUnderfootError, DuplicateError, NotRetryableError
from ..identity import PUBLIC_URL, REQUESTER_LIMIT, check_name
from ..model import RETRYABLE, Kind, Origin, Request, Status, Transition, check_action
from ..notes.reconcile import Reconciler
from ..notes.render import render_new_note
from ..notes.state import explanation
from ..notes.sync import sha256
from ..params import clean_params
from ..policy.conditions import Where
from ..policy.intake import Asked, ask, check_context, check_size, default_user
from ..policy.pitch import Pitch
from ..policy.quorum import count
from ..policy.rules import Policy, Proposal, RuleFunction, code_matches
from ..store import JournalStore
from ..times import parse_duration


class Submissions:
    """Turns proposals into requests: journaled, and shown in a new note."""

    def __init__(
        self,
        journal: JournalStore,
        notes: Reconciler,
        policy: Callable[[], Policy],
        functions: Sequence[RuleFunction],
        ids: Callable[[str, datetime], str],
        now: Callable[[], datetime],
        publish: Callable[[], object],
    ) -> None:
        self._journal = journal
        self._notes = notes
        self._policy = policy
        self._functions = functions
        self._ids = ids
        self._now = now
        self._publish = publish

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
        """Propose an action; returns ``pending`` at once, or what an allow/block rule decided
        (see :meth:`hitl_vault.engine.Engine.submit`)."""
        check_action(action)
        params = clean_params(params)
        context = check_context(context)
        limit = parse_duration(timeout, "timeout") if timeout is not None else None
        if requested_by:  # one rule for names (an agent's carries its session: longer)
            check_name(requested_by, "requested_by", REQUESTER_LIMIT)
        proposal = Proposal(
            action,
            params,
            summary,
            requested_by or default_user(),
            confidence=pitch.confidence if pitch else None,
            where=where,
        )
        code = code_matches(proposal, self._functions)  # each Python rule called once
        now = self._now()
        asked = ask(
            self._policy(),
            proposal,
            code,
            asked_timeout=limit,
            now=now,
            carried_by_requester=carried_by_requester,
            context=context,
            pitch=pitch,
            allows=self._journal.allows(now),  # "always" allows: approve --always
        )
        if retry is not None:
            asked = _linked(asked, *retry)
        if origin is not None:
            asked = replace(asked, request=origin.applied(asked.request))
        request, text = self._record(asked, source, credential)
        try:
            path: Path | None = self._notes.write_new(request, text)
        except ChangedUnderfootError:  # a daemon that saw the journal entry wrote it first
            path = self._notes.locate(request.id)
            if path is None:
                raise
        finally:
            self._publish()
        return replace(request, path=path)

    def retry(self, old: Request, by: str) -> Request:
        """A new request from a failed or timed-out one: the same action, params (those
        that ran, or as last recorded), summary, context and requester, decided by the
        rules again, linked to ``old`` in both histories; ``by`` is who retried it."""
        if old.status not in RETRYABLE or old.retried_as is not None:
            raise NotRetryableError(old.id, old.status, old.retried_as)
        if old.carried_by_requester:  # an agent's tool call: only the agent can make it again
            why = (
                f"it is {old.status} and was made by {old.requested_by}, which carries it "
                "out itself: have the agent make the same call again (a new request)"
            )
            raise NotRetryableError(old.id, old.status, why=why)
        return self.submit(
            old.action,
            old.params,
            summary=old.summary,
            requested_by=old.requested_by,
            context=old.context,
            retry=(old.id, by),
            pitch=old.pitch,
            origin=Origin.of(old),  # the agent that asked sees the retry of its request
        )

    def _record(
        self, asked: Asked, source: str | None, credential: str | None = None
    ) -> tuple[Request, str]:
        """Journal the request under a fresh id (its entries keep ``credential``, the one it
        was asked with through the service); the request and its new note's text."""
        explained = explanation(asked.matches, asked.request.rule)
        plan = asked.plan
        none_yet = count(plan, (), requester=asked.request.requested_by)
        names = sorted(none_yet.waiting_for() or ()) if plan.by_votes else []
        pending = plan.by_votes and asked.request.status is Status.PENDING
        waiting = none_yet.progress() if pending else None
        for attempt in range(5):
            request = asked.with_id(self._ids)
            inbox = self._journal.setting(PUBLIC_URL)  # the web inbox the note names
            text = render_new_note(request, explained, names, waiting, plan.authenticated, inbox)
            check_size(text)
            try:
                where = f"{request.status.folder}/{request.id}.md"
                self._journal.create(
                    request, where, source, asked.pinned, credential=credential,
                    note_sha=sha256(text.encode("utf-8")),  # the note written next (write_new)
                )  # fmt: skip
                break
            except DuplicateError as e:  # the random tail of the id repeated: draw again
                if attempt == 4 or e.what.startswith("proposal"):
                    raise
        return request, text


def _linked(asked: Asked, retried: str, by: str) -> Asked:
    """The request linked, in its history, to the one it retries."""
    first = asked.request.history[0]
    link = Transition(
        first.at,
        first.to_status,
        first.to_status,
        by,
        "",
        (f"retry of {retried}",),
        Kind.LINKED,
    )
    made = replace(asked.request, retry_of=retried, history=(first, link))
    return replace(asked, request=made)
