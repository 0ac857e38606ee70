"""Signed decision links: a person decides one request from a message, once.

A link's secret reads ``<payload>.<signature>``, both URL-safe base64: the payload names the
request, the person, the request's expiry, the SHA-256 of its params (as canonical
JSON, :func:`~hitl_vault.params.params_sha`) and how many times links had been ended when
it was made (:func:`end`), and the signature is their HMAC-SHA256
(256 bits) under the store's link key (:meth:`~hitl_vault.store.JournalStore.link_key`,
made with the store and never logged). Nothing is stored when a link is made, so the same
request, params and person always give the same link: a reminder carries the link the
first message did.

:func:`check` refuses a link, saying why (:class:`LinkProblem`), when it was not made with
this store's key, when it was used already, when its request expired or was decided since,
when the params changed since it was made (an edit in the note), when its person was
disabled, or when it was ended (:func:`end`: every link of the person, or every link, at
once and for good; ``people set --enable`` ends a person's old links, so a person disabled
and enabled again finds none of them working). A link decides once: :func:`spend` marks
it spent inside the decision's own transaction (the engine's ``spend``), so two requests
racing with one link decide once, and a decision that fails leaves the link as it was. The
secret itself is never stored, logged or journaled: only a hash of its signature, once it
is spent.

What a link proves: only that someone holds the person's channel (mail is forwarded; an
ntfy topic name works like a password). A decision made through one is recorded ``by NAME
via link``, and rules with ``authenticated: true`` do not count it as proven; a rule
counts it where it lists the channel: ``authenticated: [link]``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from urllib.parse import quote

from ..errors import UsageError, VaultError
from ..identity import same_name
from ..model import Request, Status
from ..params import params_sha
from ..store import JournalStore
from ..times import format_ts, parse_ts

VERSION = 1
# What the signature covers besides the payload: a key signs nothing but links.
_DOMAIN = b"hitl-vault decision link\n"
_PART = re.compile(r"[A-Za-z0-9_-]{1,1400}")
LONGEST = 2048  # characters: a longer secret is refused unread
CHOICES = ("approve", "reject")


class LinkProblem(StrEnum):
    """Why a link cannot decide."""

    BAD = "bad signature"
    USED = "used"
    EXPIRED = "expired"
    DECIDED = "decided"
    PARAMS_CHANGED = "params changed"
    PERSON_DISABLED = "person disabled"
    ENDED = "ended"


class LinkError(VaultError):
    """A decision link that cannot decide, and why (:attr:`problem`), in words for the
    person holding it."""

    def __init__(self, problem: LinkProblem, detail: str, request_id: str | None = None) -> None:
        self.problem = problem
        self.request_id = request_id
        super().__init__(detail)


@dataclass(frozen=True)
class LinkGrant:
    """What a good link lets its holder do: decide ``request_id`` as ``person``, approving
    exactly the params whose hash is ``params_sha``."""

    request_id: str
    person: str
    params_sha: str
    expires: datetime | None
    spent_as: str  # what the store keeps once it is spent (a hash of the signature)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes | None:
    """``text`` decoded, or None unless it is the one canonical encoding of its bytes (so a
    spent link cannot come back spelled differently)."""
    if not _PART.fullmatch(text):
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _b64(data) == text else None


def _signature(key: bytes, payload: bytes) -> bytes:
    return hmac.new(key, _DOMAIN + payload, hashlib.sha256).digest()


def mint(store: JournalStore, request: Request, person: str, *, now: datetime) -> str:
    """The secret of ``person``'s link to decide ``request`` (pending, with the params the
    store holds now). :class:`LinkError` for a request that is not pending or expired, and
    for a person who is not in ``people`` or is disabled."""
    if request.status is not Status.PENDING:
        raise LinkError(LinkProblem.DECIDED, _decided(request), request.id)
    if request.expires is not None and now >= request.expires:
        raise LinkError(LinkProblem.EXPIRED, _expired(request.id), request.id)
    known = store.person(person)
    if known is None or known.disabled:
        raise LinkError(LinkProblem.PERSON_DISABLED, _disabled(person), request.id)
    expires = format_ts(request.expires) if request.expires is not None else None
    sha = _b64(bytes.fromhex(params_sha(request.params)))
    payload = json.dumps(
        [VERSION, request.id, known.name, expires, sha, _ends(store, known.name)],
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode("utf-8")
    return f"{_b64(payload)}.{_b64(_signature(store.link_key(), payload))}"


def address(public_url: str, secret: str, choice: str | None = None) -> str:
    """The decision page's URL under ``public_url`` (``serve --public-url``); ``choice``
    (``approve`` or ``reject``) preselects that decision, as e-mail's two links do."""
    if choice is not None and choice not in CHOICES:
        raise UsageError("choice", f"{choice!r} is not a decision", "give approve or reject")
    url = f"{public_url.rstrip('/')}/d/{quote(secret, safe='.-_')}"
    return url if choice is None else f"{url}?choice={choice}"


def check(store: JournalStore, secret: str, *, now: datetime) -> LinkGrant:
    """What the link ``secret`` lets its holder do now, or :class:`LinkError` saying why it
    cannot decide (its :class:`LinkProblem`). Reads the store; changes nothing."""
    payload, signature = _opened(store, secret)
    try:
        version, request_id, person, expiry, sha, ends = json.loads(payload)
        digest = _unb64(sha)
        expires = parse_ts(expiry) if expiry is not None else None
        if version != VERSION or digest is None or not isinstance(request_id, str):
            raise ValueError("not a link this version makes")
        if not isinstance(person, str) or not isinstance(ends, list):
            raise ValueError("no person")
    except (ValueError, TypeError):  # signed with our key, yet not ours: refused all the same
        raise LinkError(LinkProblem.BAD, _BAD) from None
    grant = LinkGrant(
        request_id, person, digest.hex(), expires, hashlib.sha256(b"spent " + signature).hexdigest()
    )
    request = store.get(request_id, history=False)
    if request is None:
        raise LinkError(LinkProblem.BAD, _BAD)
    if store.link_spent(grant.spent_as):
        raise LinkError(
            LinkProblem.USED,
            "this link was used already: a link decides once (its decision stands)",
            request_id,
        )
    if request.status is Status.TIMED_OUT or (expires is not None and now >= expires):
        raise LinkError(LinkProblem.EXPIRED, _expired(request_id), request_id)
    if request.status is not Status.PENDING:
        raise LinkError(LinkProblem.DECIDED, _decided(request), request_id)
    known = store.person(person)
    if known is None or known.disabled:
        raise LinkError(LinkProblem.PERSON_DISABLED, _disabled(person), request_id)
    if _ends(store, person) != ends:
        raise LinkError(LinkProblem.ENDED, _ended(person), request_id)
    if params_sha(request.params) != grant.params_sha:
        raise LinkError(LinkProblem.PARAMS_CHANGED, PARAMS_CHANGED, request_id)
    return grant


def spend(store: JournalStore, grant: LinkGrant, now: datetime) -> None:
    """Mark the link spent (call it inside the decision's transaction: the engine's
    ``spend``); :class:`LinkError` if another use spent it first."""
    if not store.spend_link(grant.spent_as, grant.request_id, now):
        raise LinkError(
            LinkProblem.USED,
            "this link was used already: a link decides once (its decision stands)",
            grant.request_id,
        )


def end(store: JournalStore, person: str | None, *, now: datetime, by: str) -> int:
    """End at once and for good every link made so far for ``person``, or with None every
    link of everyone: each is refused from now on (``ended``), the links made after work.
    Kept as a count in the store's settings (``links ended``, ``links ended for NAME``), so
    the change is in the service log with ``by``; the count now is returned."""
    name = _ENDED if person is None else f"{_ENDED} for {same_name(person)}"
    count = _count(store.setting(name)) + 1
    store.set_setting(name, str(count), now, by)
    return count


_ENDED = "links ended"


def _count(value: str | None) -> int:
    return int(value) if value is not None and value.isascii() and value.isdigit() else 0


def _ends(store: JournalStore, person: str) -> list[int]:
    """How many times every link, and every link of ``person``, was ended: a link carries
    both as they were when it was made."""
    everyone = _count(store.setting(_ENDED))
    return [everyone, _count(store.setting(f"{_ENDED} for {same_name(person)}"))]


def _opened(store: JournalStore, secret: str) -> tuple[bytes, bytes]:
    """The payload and signature of a link made with this store's key, else ``BAD``."""
    head, dot, tail = secret.partition(".") if len(secret) <= LONGEST else ("", "", "")
    payload, signature = _unb64(head), _unb64(tail)
    if not dot or payload is None or signature is None or len(signature) != 32:
        raise LinkError(LinkProblem.BAD, _BAD)
    if not hmac.compare_digest(signature, _signature(store.link_key(), payload)):
        raise LinkError(LinkProblem.BAD, _BAD)
    return payload, signature


_BAD = (
    "this is not a decision link of this service, or it was cut short: open the whole link "
    "from the message"
)
PARAMS_CHANGED = (
    "the params changed since this link was sent (edited in the note): what would run now is "
    "not what the link was made for; decide from the newer message, the inbox or the note"
)


def _expired(request_id: str) -> str:
    return f"request {request_id} expired: nothing can decide it any more"


def _decided(request: Request) -> str:
    return f"request {request.id} was decided since this link was sent: it is {request.status} now"


def _ended(person: str) -> str:
    return (
        f"this link was ended since it was sent ({person} was disabled since, or the "
        "service's owner ended their links): decide from a newer message, the inbox or the note"
    )


def _disabled(person: str) -> str:
    return (
        f"{person} may not decide any more (not in people, or disabled): ask the service's "
        "owner (hitl-vault people)"
    )
