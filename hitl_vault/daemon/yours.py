"""Telling a person of a decision or a vote recorded in their name, at their own channels
(shared targets are not told): which request, which decision, through which channel and
from where, so that someone who did not decide learns it at once."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

from .. import events
from ..identity import same_name
from ..model import Kind, Request, Status, Transition
from ..notes.decide import counted_proofs
from ..notify.message import in_your_name
from ..notify.send import PLACEHOLDER, placeholders
from ..store import JournalStore
from .asking import Item, Send

# The outbox event of a decision told to the person it names: ``in your name #3``, the
# entry's place in the request's history (so each is told once, to each of their channels).
YOURS = "in your name #"


class InTheirName:
    """Tells people of the decisions and votes recorded in their name."""

    def __init__(
        self, journal: JournalStore, wording: Callable[[Request], tuple[str, str, str]]
    ) -> None:
        self.journal = journal
        self._wording = wording  # (the note's path, the rule's "why", the vault's name)

    def items(self, heard: events.Event) -> list[Item]:
        """An approval, rejection or vote recorded in the name of someone in ``people``: one
        item for each of their own channels."""
        step = heard.transition
        if not _decided(step):
            return []
        person = self.journal.person(step.by)
        wanted = person is not None and bool(person.notify)
        request = self.journal.get(heard.request_id) if wanted else None  # with its history
        if person is None or request is None:
            return []
        place = _place(request.history, step)
        if place is None:
            return []
        earlier = request.history[place - 1] if place else None
        if step.kind is Kind.TRANSITION and earlier is not None and _their_vote(earlier, step):
            return []  # the vote that decided it was told already
        return [(request.id, f"{YOURS}{place}", url) for url in person.notify]

    def prepare(self, request_id: str, event: str, channel: str) -> tuple[Send | str, str]:
        """(the message for one channel as ``people`` has them now, or why not: ``skip:``
        for a channel taken out since; the person's name)."""
        request = self.journal.get(request_id)
        if request is not None:  # a "via api" another user's process wrote is no proof
            request = counted_proofs(self.journal, request)
        place = int(event[len(YOURS) :])
        step = request.history[place] if request and place < len(request.history) else None
        person = self.journal.person(step.by) if step is not None else None
        if request is None or step is None or person is None or channel not in person.notify:
            return "skip: not one of their channels now", step.by if step else ""
        missing = [name for name in placeholders(channel) if not os.environ.get(name)]
        if missing:
            return f"needs {', '.join(missing)}, which is not set", person.name
        url = PLACEHOLDER.sub(lambda m: os.environ[m.group(1)], channel)
        note, _, vault_name = self._wording(request)
        message = in_your_name(request, step, note=note, vault_name=vault_name)
        return Send(url, message), person.name


def _decided(step: Transition) -> bool:
    """An approval, a rejection or a vote a person made (or someone made in their name)."""
    if step.kind is Kind.VOTED:
        return True
    return (
        step.kind is Kind.TRANSITION
        and step.from_status is Status.PENDING
        and step.to_status in (Status.APPROVED, Status.REJECTED)
        and bool(step.by)
    )


def _place(history: Sequence[Transition], step: Transition) -> int | None:
    """Where ``step`` is in ``history`` (the last such entry), or None."""
    return next((i for i in range(len(history) - 1, -1, -1) if history[i] == step), None)


def _their_vote(vote: Transition, step: Transition) -> bool:
    """``vote`` is the same person's vote that made the decision ``step``, at once."""
    same = same_name(vote.by) == same_name(step.by)
    return vote.kind is Kind.VOTED and vote.at == step.at and same
