"""The daemon's notifications: recorded in the journal's outbox, then sent in the background.

The notifier is a durable listener of the events (:meth:`Events.durable`): the
journal keeps its cursor, so requests made while no daemon ran are told about
when it starts, once, and a restart tells nothing twice. For each transition and
target that wants it, :meth:`Notifier.hear` records one notification in the
outbox, in the commit that moves the cursor; :meth:`Notifier.remind` records the
reminders that fell due. :meth:`Notifier.send_due` sends what is due and marks
each sent; a failed send is tried again after 5 s, then at most 30 s apart, for
24 h, then given up and listed under Needs attention. A background thread hands
what is due to one sending thread per target (:class:`~.lanes.Lanes`), so a slow or
dead receiver never delays a decision, an execution or another target's messages;
a send with no answer within :attr:`Notifier.send_timeout` is a failed try.

Besides the shared targets of ``notify:``, people's own channels hear what that person may
decide now (:class:`~.asking.Asking`, with their decision links) and what was decided in
their name (:class:`~.yours.InTheirName`), from the same outbox.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from .. import events
from ..errors import NotLeaderError, RulesError
from ..model import Kind, Request, Status
from ..notes.decide import Decider
from ..notify import send as sending
from ..notify.config import DECIDE_EVENTS, EVENT_OF_STATUS, Event, NotifyConfig, Target
from ..notify.message import compose
from ..notify.people import LinkMaker, asked
from ..notify.send import Message, mask_url, send
from ..policy.rules import Policy, Proposal, RuleFunction, Ruling
from ..store import Outgoing
from .asking import Asking, Send
from .lanes import Lanes
from .yours import YOURS, InTheirName

if TYPE_CHECKING:
    from ..store import JournalStore

log = logging.getLogger(__name__)

CURSOR = "notify"
RETRY_FIRST = timedelta(seconds=5)
RETRY_MAX = timedelta(seconds=30)
GIVE_UP_AFTER = timedelta(hours=24)


def flag_key(target: Target) -> str:
    """Where Needs attention lists notifications to one target that were given up."""
    return f"notify {target.shown}"


class Notifier:
    """Records notifications for one vault and sends them."""

    def __init__(
        self,
        journal: JournalStore,
        feed: events.Events,
        rules: Callable[[], Policy],
        functions: Sequence[RuleFunction],
        notify: Callable[[], NotifyConfig],
        folder_name: str,
        clock: Callable[[], datetime],
        links: LinkMaker | None = None,
    ) -> None:
        self.journal = journal
        # People's own channels: asked what they may decide now, with links from ``links``.
        self.asking = Asking(
            journal, Decider(journal, rules, functions), links, self._wording,
            lambda: [target.url for target in self.config.targets],
        )  # fmt: skip
        self.yours = InTheirName(journal, self._wording)  # decisions made in their name
        self._rules = rules  # the rules in force (they may reload): reminders, the "why"
        self._functions = functions  # the Python rules, as the vault holds them
        self._notify = notify  # ``notify:`` in force (it may reload)
        self._folder_name = folder_name  # the vault's name when ``notify:`` gives none
        self.clock = clock
        self.send_timeout = sending.SEND_TIMEOUT  # one send in all, before it counts as failed
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        # Set while the daemon waits for work: the background thread sends only then, so a
        # decision never waits behind a send (each send is a few ms of this process's time).
        self.idle = threading.Event()
        self.idle.set()
        # On a shared journal, the leader's term (daemon/leader.py sets it): every sending
        # thread marks what it sent as that term's owner, refused once another term leads.
        self.as_owner: Callable[[], AbstractContextManager[None]] = nullcontext
        self.next_reminder: datetime | None = None  # when a reminder falls due next
        self._reminded: set[str] = set()  # recorded already (the journal also keeps each once)
        self._remind_at: dict[str, datetime | None] = {}  # by the rules below
        self._remind_policy: object = None
        # The first time ever, only what is pending then: a notify: added later tells of
        # what follows (with no target, only the cursor moves).
        feed.durable(CURSOR, self.hear, first=self._pending_now)

    @property
    def config(self) -> NotifyConfig:
        return self._notify()

    # --- recording ------------------------------------------------------------------

    def hear(self, heard: events.Event) -> None:
        """One journal entry (as a durable listener): a notification to each target that
        wants it, recorded in the commit that moves the notifier's cursor past it; the
        people who may decide it now asked at their own channels; and a decision or vote
        made in a person's name, told to that person's own channels."""
        step = heard.transition
        self._record(self.yours.items(heard))
        if step.kind is Kind.VOTED:  # a stage met: its next approvers may decide now
            self._record(self.asking.opened(heard.request_id, step))
        if step.kind is Kind.ESCALATED:
            event: Event | None = Event.ESCALATED
        elif step.kind is Kind.TRANSITION:
            event = EVENT_OF_STATUS.get(step.to_status)
        else:
            return
        if event in DECIDE_EVENTS:  # asks no one once decided
            self._record(self.asking.items(heard.request_id, event, step))
        wanting = [t for t in self.config.targets if event in t.events]
        request = heard.request if event is not None and wanting else None
        if request is None or event is None:
            return
        if event in DECIDE_EVENTS and request.status is not Status.PENDING:
            return  # decided while no daemon ran: nobody is asked to decide it now
        self._record([(request.id, event, t.url) for t in wanting if t.wants(event, request)])

    def _pending_now(self) -> None:
        """The first time ever: what waits for a decision now, not the whole history."""
        targets = self.config.targets
        asking = self.asking.anyone()
        pending = self.journal.requests(Status.PENDING) if targets or asking else []
        items: list[tuple[str, str, str]] = [
            (r.id, Event.PENDING, t.url)
            for r in pending
            for t in targets
            if t.wants(Event.PENDING, r)
        ]
        for r in pending if asking else []:
            items += self.asking.items(r.id, Event.PENDING)  # with its votes, if any
        self._record(items)

    def _record(self, items: list[tuple[str, str, str]], at: datetime | None = None) -> int:
        """Put ``items`` in the outbox (each once ever), due ``at``, and wake the sender; how
        many were new. The sender reads the outbox once the commit they are in has landed."""
        new = self.journal.enqueue(items, at or self.clock()) if items else 0
        if new:
            self._wake.set()
        return new

    def remind(self, now: datetime) -> bool:
        """Record the reminders that fell due by ``now``; True if any is new."""
        items, reminded = self._reminders(now, self.config.targets)
        new = self._record(items, now)
        self._reminded |= reminded  # only once the outbox has them
        return new > 0

    def next_wake(self, now: datetime) -> datetime | None:
        """When the next reminder falls due (the notifier's own thread sends on its own)."""
        return self.next_reminder

    def _reminders(
        self, now: datetime, targets: tuple[Target, ...]
    ) -> tuple[list[tuple[str, str, str]], set[str]]:
        """One reminder per pending request and target at ``expires - remind_before``, and the
        requests they remind of; also sets :attr:`next_reminder`, when to look again."""
        reminding = [t for t in targets if Event.REMINDER in t.events]
        self.next_reminder = None
        policy = self._rules()
        if not (policy.defaults.remind_before or any(r.remind_before for r in policy.rules)):
            return [], set()
        if not reminding and not self.asking.anyone():  # nobody to remind
            return [], set()
        if policy is not self._remind_policy:  # rules changed: work the times out again
            self._remind_at, self._remind_policy = {}, policy
        items: list[tuple[str, str, str]] = []
        reminded: set[str] = set()
        waiting = self.journal.expiring()
        live = {request_id for request_id, _ in waiting}  # forget what was decided since
        self._reminded &= live
        self._remind_at = {k: v for k, v in self._remind_at.items() if k in live}
        for request_id, expires in waiting:
            if request_id in self._reminded:
                continue
            if request_id not in self._remind_at:
                self._remind_at[request_id] = self._remind_time(request_id, expires)
            at = self._remind_at[request_id]
            if at is None:
                continue
            if now < at:
                self.next_reminder = min(self.next_reminder or at, at)
                continue
            request = self.journal.get(request_id, history=False)
            reminded.add(request_id)
            if request is not None and now < expires:
                items += [
                    (request_id, Event.REMINDER, t.url)
                    for t in reminding
                    if t.wants(Event.REMINDER, request)
                ]
                items += self.asking.items(request_id, Event.REMINDER)
        return items, reminded

    def _remind_time(self, request_id: str, expires: datetime) -> datetime | None:
        """When the request's reminder is due, by the rules in force (None: no reminder)."""
        request = self.journal.get(request_id, history=False)
        if request is None:
            return None
        before = self._ruling(request).remind_before
        return None if before is None else expires - before

    def _ruling(self, request: Request) -> Ruling:
        """What the rules in force say of the request as it stands."""
        proposal = Proposal(
            request.action, request.params, request.summary, request.requested_by,
            request.confidence,
        )  # fmt: skip
        return self._rules().evaluate(proposal, self._functions)

    # --- sending --------------------------------------------------------------------

    def send_due(self, now: datetime | None = None) -> bool:
        """Send every notification due now, each target's in its own thread, and wait for
        them all; True if any was delivered."""
        lanes = Lanes(self._send, lambda: None)
        lanes.offer(self.journal.outgoing(now or self.clock()))
        lanes.drain()
        return lanes.delivered > 0

    def _polite_send(self, item: Outgoing) -> bool:
        """The background thread's send: only while the daemon is :attr:`idle`."""
        while not self.idle.wait(0.5):
            if self._stop.is_set():
                return False
        return not self._stop.is_set() and self._send(item)

    def _send(self, item: Outgoing) -> bool:
        """Send one, in whichever thread: its marks are the leader's (:attr:`as_owner`)."""
        with self.as_owner():
            try:
                return self._send_one(item)
            except NotLeaderError as e:  # deposed: the next leader sends it (again)
                log.warning("%s: not marked as sent: %s", item.request_id, e)
                return False

    def _send_one(self, item: Outgoing) -> bool:
        if item.event.startswith(YOURS):
            ready, name = self.yours.prepare(item.request_id, item.event, item.target)
            return self._send_person(item, ready, name)
        if (person := asked(item.event)) is not None:
            ready = self.asking.prepare((item.request_id, item.event, item.target), self.clock())
            return self._send_person(item, ready, person[1])
        target = next((t for t in self.config.targets if t.url == item.target), None)
        request = self.journal.get(item.request_id, history=False)
        if target is None or request is None:  # taken out of hitl-vault.yaml since
            self.journal.not_sent(item.id, self.clock(), "no such target now", None)
            return False
        try:
            message = self._message(item.event, request)
            error = sending.send_within(target.resolved_url(), message, self.send_timeout)
        except Exception as e:  # a missing ${NAME}, or a bug: kept, tried again, said
            error = str(e)
        return self._sent(item, error, target.shown, "the target in hitl-vault.yaml")

    def _send_person(self, item: Outgoing, ready: Send | str, name: str) -> bool:
        """A message to one of a person's own channels: sent, or skipped for good (``skip:``,
        say why), or failed (tried again)."""
        if isinstance(ready, str) and ready.startswith("skip: "):  # nothing to tell now
            self.journal.not_sent(item.id, self.clock(), ready.removeprefix("skip: "), None)
            return False
        if isinstance(ready, str):
            error: str | None = ready
        else:
            error = sending.send_within(
                ready.url, ready.message, self.send_timeout, hide=ready.hide
            )
        fix = f"{name}'s channel (hitl-vault people set {name} --notify ...)"
        return self._sent(item, error, mask_url(item.target), fix)

    def _sent(self, item: Outgoing, error: str | None, shown: str, fix: str) -> bool:
        """Mark the send done, or keep it to try again (given up after 24 h, and listed)."""
        now = self.clock()
        key = f"notify {shown}"  # as flag_key(target) names a shared target
        if error is None:
            self.journal.sent(item.id, now)
            self.journal.unflag(key)  # it works again: nothing to fix
            log.info("%s: told %s (%s)", item.request_id, shown, item.event)
            return True
        give_up = now - item.created >= GIVE_UP_AFTER
        retry = None if give_up else now + min(RETRY_FIRST * 2 ** min(item.attempts, 8), RETRY_MAX)
        self.journal.not_sent(item.id, now, error, retry)
        if give_up:
            message = (
                f"notifications to {shown} are failing: {error} (the {item.event} "
                f"notification of {item.request_id} was given up after 24 h; fix {fix} "
                "or its receiver)"
            )
            self.journal.flag(key, message, now, item.request_id)
            log.error("%s", message)
        else:
            log.warning(
                "%s: could not tell %s (%s): %s; trying again", item.request_id,
                shown, item.event, error,
            )  # fmt: skip
        return False

    @staticmethod
    def _note(request: Request) -> str:
        """Where the note is, or is about to be: a daemon moves it once it is quiet."""
        name = request.path.name if request.path else f"{request.id}.md"
        return f"{request.status.folder}/{name}"

    def _wording(self, request: Request) -> tuple[str, str, str]:
        """(the note's path, the rule's "why", the vault's name) for a message about it."""
        name = self.config.vault_name or self._folder_name
        return self._note(request), self._ruling(request).explanation, name

    def _message(self, event: str, request: Request) -> Message:
        why = self._ruling(request).explanation
        return compose(
            event, request, note=self._note(request), why=why,
            vault_name=self.config.vault_name or self._folder_name,
        )  # fmt: skip

    # --- the background thread ----------------------------------------------------------

    def next_due(self, taken: set[int] | None = None) -> datetime | None:
        """When the next notification is due, leaving out those in ``taken`` (in hand)."""
        skip = taken or set()
        pending = self.journal.outgoing(limit=len(skip) + 1)
        return next((item.due for item in pending if item.id not in skip), None)

    def start(self) -> None:
        """Send in the background until :meth:`stop`."""
        self._thread = threading.Thread(target=self._loop, name="hitl-notify", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        """Hand what is due to its target's thread; again when one is done or one is new."""
        lanes = Lanes(self._polite_send, self._wake.set)
        try:
            while not self._stop.is_set():
                self._wake.clear()
                try:
                    taken = lanes.taken()  # before reading: see Lanes.offer
                    lanes.offer(self.journal.outgoing(self.clock(), len(taken) + 100), taken)
                    due = self.next_due(lanes.taken())
                except Exception:  # the journal held too long, or a bug: say so, go on
                    log.exception("error while sending notifications; trying again shortly")
                    due = self.clock() + RETRY_FIRST
                delay = None if due is None else max(0.0, (due - self.clock()).total_seconds())
                self._wake.wait(delay)
        finally:
            if not lanes.stop(2 * self.send_timeout + 1):
                log.warning("a notification send is still in flight; it is tried again later")

    def stop(self) -> None:
        """Stop the threads once the sends in flight end (each within :attr:`send_timeout`;
        what waits behind them stays in the outbox for the next start)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def send_tests(config: NotifyConfig, folder_name: str) -> list[tuple[str, str | None]]:
    """A test message to every target of ``config`` (``notify:`` as just loaded, every URL
    read by Apprise): (the target as shown, None when it was delivered, else why not).
    ``folder_name`` names the vault when ``notify:`` gives no ``vault_name``."""
    name = config.vault_name or folder_name
    message = Message(
        "hitl-vault: test notification",
        f"A test from the vault {name!r}: notifications from hitl-vault reach you here.",
    )
    results: list[tuple[str, str | None]] = []
    for target in config.targets:
        try:
            error = send(target.resolved_url(), message)
        except RulesError as e:  # a ${NAME} that is not set
            error = str(e)
        results.append((target.shown, error))
    return results
