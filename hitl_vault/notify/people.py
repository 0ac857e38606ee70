"""What a person's own channels hear of what they may decide now: a request waiting for
them, a reminder, an escalation to them. Addressed to the person ("You may approve ..."),
with a decision link of their own when the service has a public URL; each kind of channel
as suits it (ntfy: buttons; e-mail: an approve and a reject link; any other: the page).

These messages go only to the channels ``hitl-vault people`` keeps for the person, never to
the shared ``notify:`` targets, which get no links; nor does a person's channel that is
also a shared target or another person's (:func:`clash`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from shlex import quote
from urllib.parse import parse_qsl, urlsplit

from ..identity import Person, same_name
from ..model import Request, Transition
from .config import DECIDE_EVENTS, Event
from .message import compose
from .ntfy import MAIL_SCHEMES, SCHEMES, actions, buttons, scheme_of, too_long
from .send import Message

# The outbox event of a message asking one person: ``pending for alice``.
FOR = " for "
NO_LINK = (
    "No decision link: the service has no public address. Its owner gives one with "
    "hitl-vault serve --public-url https://..., and messages carry links from then on."
)
# Why a channel that is not the person's alone gets no link: {clash}, {name}.
SHARED = (
    "No decision link: this channel is not yours alone (it is {clash}), and a link there "
    "would reach whoever reads it. The service's owner gives you one of your own with "
    "hitl-vault people set {name} --notify URL."
)
# Options that carry credentials, not where a message lands.
_CREDENTIALS = frozenset({"token", "auth", "user", "username", "password", "pass", "pwd"})
# Kinds whose URL's user only signs in (elsewhere, as in mailto://alice@..., it may name
# the mailbox or the account the message goes to).
_USER_SIGNS_IN = frozenset({"ntfy", "json", "xml", "form"})


def place(url: str) -> tuple[str, ...]:
    """Where a channel's messages land, to tell two channels that are one place: its kind
    (``ntfys`` as ``ntfy``, ``mailtos`` as ``mailto``), host, port, path and options, less
    what only proves who sends (a password, the user of an ntfy channel or a webhook, a
    ``token=`` option): the same ntfy topic with another token is the same place."""
    text = url.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return (text,)
    scheme = parts.scheme.lower()
    kind = scheme[:-1] if scheme.endswith("s") and len(scheme) > 2 else scheme
    user = "" if kind in _USER_SIGNS_IN else parts.username or ""
    options = sorted(
        (key.lower(), value)
        for key, value in parse_qsl(parts.query, keep_blank_values=True)
        if key.lower() not in _CREDENTIALS
    )
    where = [kind, user, parts.hostname or "", str(port or ""), parts.path.rstrip("/")]
    return (*where, *(f"{key}={value}" for key, value in options))


def clash(url: str, name: str, shared: Iterable[str], people: Iterable[Person]) -> str:
    """What else ``url`` (one of ``name``'s channels) is: ``a notify: target in
    hitl-vault.yaml`` or ``bob's channel``; "" when it is ``name``'s alone."""
    here = place(url)
    if any(place(target) == here for target in shared):
        return "a notify: target in hitl-vault.yaml"
    for other in people:
        if same_name(other.name) != same_name(name) and any(
            place(theirs) == here for theirs in other.notify
        ):
            return f"{other.name}'s channel"
    return ""


@dataclass(frozen=True)
class Link:
    """One person's decision link to one request: the page (``approve`` and ``reject`` open
    it with that choice selected), the one-tap endpoints (``POST``), and the ``secret`` they
    all carry, which no log line, error or journal entry may hold."""

    page: str
    approve: str
    reject: str
    tap_approve: str
    tap_reject: str
    secret: str = field(repr=False)

    def __repr__(self) -> str:
        return "Link(***)"


# Makes a person's link to a request at ``now``: (request, person's name, now); None when
# the service has no public URL recorded (``serve --public-url``).
LinkMaker = Callable[[Request, str, datetime], Link | None]


def asking(event: str, name: str) -> str:
    """The outbox event of ``event`` told to the person ``name``."""
    return f"{event}{FOR}{name}"


def asked(outbox_event: str) -> tuple[Event, str] | None:
    """(event, person's name) of an outbox event made by :func:`asking`, else None."""
    event, found, name = outbox_event.partition(FOR)
    if not found or event not in DECIDE_EVENTS or not name:
        return None
    return Event(event), name


def who_decides(people: Iterable[Person], names: Iterable[str] | None) -> list[Person]:
    """The enabled people with channels among ``names`` (None: every enabled person, as
    for a rule that names no approvers), each once."""
    wanted = None if names is None else {same_name(n) for n in names}
    return [
        p
        for p in people
        if not p.disabled and p.notify and (wanted is None or same_name(p.name) in wanted)
    ]


def escalated_to(step: Transition) -> list[str]:
    """The names an escalation entry made deciders (``to dave, erin``)."""
    detail = step.details[0] if step.details else ""
    names = detail.removeprefix("to ").split(", ")
    return [n for n in names if n and n != "nobody"]


_TITLE = {
    Event.PENDING: "You may approve: ",
    Event.REMINDER: "Reminder, you may approve: ",
    Event.ESCALATED: "Escalated to you: ",
}


@dataclass(frozen=True)
class Asked:
    """A message to one channel of a person, and the ``X-Actions`` of an ntfy one."""

    message: Message
    actions: str | None = None


def ask(
    event: Event,
    request: Request,
    *,
    name: str,
    channel: str,
    link: Link | None,
    token: bool,
    reasons: tuple[bool, bool],
    note: str,
    vault_name: str,
    why: str = "",
    unproven: str = "",
    no_link: str = NO_LINK,
) -> Asked:
    """The message asking ``name`` to decide ``request`` at one of their channels (its URL
    as written). ``token``: the channel is an ntfy one with an access token; ``reasons``:
    whether an approval and a rejection need a reason under its rules; ``unproven``: what
    an approval lacks when its rules' ``authenticated:`` does not count a link (then the
    message offers the link to reject and to read, and says so); ``no_link``: why there
    is no link, said when ``link`` is None."""
    scheme = scheme_of(channel)
    warning = [f"An approval through this link does not count here: it {unproven}."]
    warning = warning if unproven and link is not None else []
    cli = [
        "Or set status: approved or status: rejected in the note, or run",
        f"  hitl-vault approve {request.id} --by {quote(name)}",
        f"  hitl-vault reject {request.id} --by {quote(name)}",
    ]
    if link is None:
        lead = [f"{name}, you may approve or reject this request in the vault {vault_name!r}."]
        how = [no_link, *cli]
    elif scheme in MAIL_SCHEMES:
        lead = [
            f"{name}, you may approve or reject this request in the vault {vault_name!r}.",
            *([] if unproven else [f"Approve: {link.approve}"]),
            f"Reject: {link.reject}",
            "Each link opens the decision page with that choice selected: nothing is decided "
            "until you press the button there.",
            *warning,
        ]
        how = [f"Decision page: {link.page}", *cli]
    else:
        lead = [
            f"{name}, you may approve or reject this request in the vault {vault_name!r}.",
            f"Decide here: {link.page}",
            *warning,
        ]
        how = [
            "The link is yours alone and decides once: do not forward it.",
            *cli,
        ]

    def build(extra: list[str]) -> Message:
        return compose(
            event, request, note=note, vault_name=vault_name, why=why,
            lead=[*lead, *extra], how=how, title_lead=_TITLE[event],
        )  # fmt: skip

    if link is None or scheme not in SCHEMES:
        return Asked(build([]))
    approve_reason, reject_reason = reasons
    shown = buttons(
        cut=False, token=token, approve_reason=approve_reason, reject_reason=reject_reason,
        link_approves=not unproven,
    )  # fmt: skip
    message = build([shown.why_not] if shown.why_not else [])
    if message.cut or too_long(message):  # the phone would not show all that would run
        shown = buttons(cut=True, token=token, approve_reason=True, reject_reason=True)
        message = build([shown.why_not])
    return Asked(message, actions(link.page, link.tap_approve, link.tap_reject, shown))


def needs_reason(require_reason: str) -> tuple[bool, bool]:
    """(an approval needs a reason, a rejection does) under ``require_reason``."""
    return require_reason == "always", require_reason in ("always", "reject")


def channels(people: Sequence[Person], event: str, request_id: str) -> list[tuple[str, str, str]]:
    """The outbox items asking each of ``people`` at each of their channels."""
    return [(request_id, asking(event, p.name), url) for p in people for url in p.notify]
