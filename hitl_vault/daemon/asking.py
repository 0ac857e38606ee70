"""Asking people at their own channels: who may decide a request now, the outbox items that
ask them, and, when one is sent, the message (with its decision link) and where it goes.

Who may decide now: the approvers the rules name for the stage collecting approvals, or
every enabled person when the rules name none; in either case not those who voted already,
nor the requester under ``prevent_self_approval``. An escalation asks the people it names. Each
is asked once per request and event (the outbox keeps each item once ever), at send time
only if it is still theirs to decide, at the channels ``people`` has for them then.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from shlex import quote

from ..identity import LINK, Person, same_name
from ..model import Request, Status, Transition
from ..notes.decide import Decider
from ..notify.config import Event
from ..notify.ntfy import SCHEMES, scheme_of, with_actions
from ..notify.people import (
    NO_LINK,
    SHARED,
    LinkMaker,
    ask,
    asked,
    channels,
    clash,
    escalated_to,
    needs_reason,
    who_decides,
)
from ..notify.send import PLACEHOLDER, Message, has_token, placeholders
from ..policy.quorum import Count, proof_needed
from ..policy.verdict import counted
from ..store import JournalStore

Item = tuple[str, str, str]  # (request id, outbox event, the channel's URL as written)


@dataclass(frozen=True)
class Send:
    """One message ready to go: the resolved URL (ntfy's buttons in it), the message, and
    the texts no error made of the send may show (the link's secret)."""

    url: str
    message: Message
    hide: tuple[str, ...] = ()

    def __repr__(self) -> str:  # the URL, the body and ``hide`` may all hold the secret
        return f"Send({self.message.title!r}, ***)"


class Asking:
    """Asks the people who may decide a request, at their own channels."""

    def __init__(
        self,
        journal: JournalStore,
        decider: Decider,
        links: LinkMaker | None,
        wording: Callable[[Request], tuple[str, str, str]],
        shared: Callable[[], Iterable[str]] = tuple,
    ) -> None:
        self.journal = journal
        self._decider = decider
        self._links = links  # None: this process makes no links (no service runs)
        self._wording = wording  # (the note's path, the rule's "why", the vault's name)
        self._shared = shared  # the ``notify:`` targets' URLs in force, as written

    def _count(self, request: Request) -> Count:
        """Where the votes leave ``request`` under the rules in force (its history loaded)."""
        plan = self._decider.plan(request, code=False)
        return counted(plan, self._decider.counting(request))

    def _deciders(self, request: Request, event: Event, step: Transition | None) -> list[Person]:
        state = self._count(request)
        names: list[str] | None = state.waiting_for()
        if event is Event.ESCALATED and step is not None:
            told = escalated_to(step)
            keys = {same_name(n) for n in told}
            names = told if names is None else [n for n in names if same_name(n) in keys]
        left_out = state.left_out()  # named or not: never who voted, nor a barred requester
        people = who_decides(self.journal.people(), names)
        return [p for p in people if same_name(p.name) not in left_out]

    def items(self, request_id: str, event: Event, step: Transition | None = None) -> list[Item]:
        """The items asking each person who may decide the request now (none once decided)."""
        if not self.anyone():  # the usual case: nobody has a channel of their own
            return []
        request = self.journal.get(request_id)
        if request is None or request.status is not Status.PENDING:
            return []
        return channels(self._deciders(request, event, step), event, request.id)

    def opened(self, request_id: str, vote: Transition) -> list[Item]:
        """A vote that met a stage asks the next stage's approvers (as a request waiting for
        them: ``pending``); any other vote asks nobody."""
        request = self.journal.get(request_id)
        if request is None or request.status is not Status.PENDING:
            return []
        place = next((i for i, t in enumerate(request.history) if t == vote), None)
        if place is None or not self.anyone():
            return []
        plan = self._decider.plan(request, code=False)
        proven = self._decider.counting(request)  # the whole history: each proof read right
        before = counted(plan, replace(proven, history=proven.history[:place]))
        if counted(plan, proven).stage == before.stage:
            return []
        return channels(self._deciders(request, Event.PENDING, None), Event.PENDING, request.id)

    def anyone(self) -> bool:
        """Whether any enabled person has a channel (else nobody is ever asked)."""
        return bool(who_decides(self.journal.people(), None))

    def prepare(self, item: Item, now: datetime) -> Send | str:
        """The message asking a person at one channel, for the outbox ``item`` (made by
        :meth:`items`), or why it is not sent: decided since, no longer theirs to decide,
        or not one of their channels now (a text starting with ``skip:``: never sent), or
        what failed (a ``${NAME}`` that is not set, a link that could not be made: tried
        again later)."""
        try:
            return self._prepare(item, now)
        except Exception as e:  # a bug, or the store held too long: said, tried again
            return f"could not make the message: {type(e).__name__}: {e}"

    def _prepare(self, item: Item, now: datetime) -> Send | str:
        request_id, outbox_event, channel = item
        found = asked(outbox_event)
        request = self.journal.get(request_id)
        if found is None or request is None or request.status is not Status.PENDING:
            return "skip: decided since, nothing to ask"
        event, name = found
        if request.expires is not None and now >= request.expires:
            return "skip: expired, nothing to ask"
        person = self.journal.person(name)
        if person is None or person.disabled or channel not in person.notify:
            return "skip: not one of their channels now"
        state = self._count(request)
        waiting = state.waiting_for()
        if same_name(name) in state.left_out() or (
            waiting is not None and same_name(name) not in {same_name(n) for n in waiting}
        ):
            return "skip: not theirs to decide now (voted, asked for it, or no approver)"
        missing = [n for n in placeholders(channel) if not os.environ.get(n)]
        if missing:
            return f"needs {', '.join(missing)}, which is not set"
        url = PLACEHOLDER.sub(lambda m: os.environ[m.group(1)], channel)
        # A channel that is a shared target's or another person's too gets no link.
        also = clash(channel, person.name, self._shared(), self.journal.people())
        link = None
        if self._links is not None and not also:
            link = self._links(request, person.name, now)
        no_link = SHARED.format(clash=also, name=quote(person.name)) if also else NO_LINK
        ntfy = link is not None and scheme_of(channel) in SCHEMES
        plan = self._decider.plan(request, code=False)
        proven = plan.authenticated
        unproven = proof_needed(proven) if proven is not None and LINK not in proven else ""
        note, why, vault_name = self._wording(request)
        told = ask(
            event, request, name=person.name, channel=channel, link=link,
            token=ntfy and has_token(url), reasons=needs_reason(str(plan.require_reason)),
            note=note, vault_name=vault_name, why=why, unproven=unproven,
            no_link=no_link,
        )  # fmt: skip
        hide = (link.secret,) if link is not None else ()
        return Send(with_actions(url, told.actions) if told.actions else url, told.message, hide)
