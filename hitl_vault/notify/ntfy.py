"""ntfy's action buttons on a person's message: Approve and Reject as ``http`` POST actions to
the decision link's one-tap endpoints (``clear=true``: the notification goes once the answer
is in), and Open as a ``view`` action on the decision page.

They travel through Apprise's ntfy plugin, which sends the ``actions=`` of its URL as the
``X-Actions`` header, in ntfy's short form (``http, Approve, URL, method=POST, clear=true;
view, Open, URL``; at most three actions, ntfy's own limit).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

from .send import Message

SCHEMES = frozenset({"ntfy", "ntfys"})
MAIL_SCHEMES = frozenset({"mailto", "mailtos"})
# What ntfy shows as a message: a longer one arrives as an attachment, its text unseen.
MESSAGE_BYTES = 4096
# Apprise's ntfy plugin sends a message as JSON with every non-ASCII character escaped
# (``\u6570``, an emoji as two of them) and sends one over this many characters as an
# attachment instead (its ``ntfy_json_upstream_size_limit``).
JSON_CHARS = 8000
# The longest topic ntfy takes, counted in full so that any topic fits.
TOPIC_CHARS = 64


def scheme_of(url: str) -> str:
    """The scheme of a person's channel, lower case ("" when it has none)."""
    try:
        return urlsplit(url).scheme.lower()
    except ValueError:
        return ""


def too_long(message: Message) -> bool:
    """Whether ntfy would not show ``message`` as text: over :data:`MESSAGE_BYTES` in UTF-8
    (the 4,000 characters messages keep to can be more bytes), or over Apprise's
    :data:`JSON_CHARS` once escaped as Apprise sends it (CJK text and emoji grow
    sixfold), either of which makes it an attachment."""
    if len(message.title.encode()) + len(message.body.encode()) > MESSAGE_BYTES:
        return True
    sent = {"topic": "t" * TOPIC_CHARS, "title": message.title, "message": message.body}
    return len(json.dumps(sent)) > JSON_CHARS


CUT = "the message does not show the params exactly as they would run: open the page"


@dataclass(frozen=True)
class Buttons:
    """Which buttons a message to a person's ntfy channel carries (Open always does)."""

    approve: bool
    reject: bool
    why_not: str = ""  # why a one-tap button was left out, said in the message


def buttons(
    *,
    cut: bool,
    token: bool,
    approve_reason: bool,
    reject_reason: bool,
    link_approves: bool = True,
) -> Buttons:
    """The one-tap buttons the message may carry: none when it is ``cut`` (it does not
    show every param exactly as it would run, or ntfy would not show it as text) or when
    the channel has no access token (ntfy topic names work like passwords: anyone who
    guesses the topic would see them); no one-tap Approve where an approval needs a
    reason or a link's approval does not count (``authenticated:``), no one-tap Reject
    where a rejection needs a reason (the page asks for it)."""
    if cut:
        return Buttons(False, False, CUT)
    if not token:
        return Buttons(False, False, "this ntfy channel has no access token: open the page")
    why = "this request needs a reason: open the page" if approve_reason or reject_reason else ""
    return Buttons(link_approves and not approve_reason, not reject_reason, why)


def _field(url: str) -> str:
    """A URL as one field of ntfy's short form: a comma or a semicolon in it (a public URL's
    path may hold one) would end the field or the action, so they travel percent-encoded."""
    return url.replace(",", "%2C").replace(";", "%3B")


def actions(page: str, approve: str, reject: str, shown: Buttons) -> str:
    """The ``X-Actions`` value: Approve and Reject (as ``shown`` allows), then Open."""
    page, approve, reject = _field(page), _field(approve), _field(reject)
    parts = []
    if shown.approve:
        parts.append(f"http, Approve, {approve}, method=POST, clear=true")
    if shown.reject:
        parts.append(f"http, Reject, {reject}, method=POST, clear=true")
    parts.append(f"view, Open, {page}")
    return "; ".join(parts)


def with_actions(url: str, value: str) -> str:
    """The resolved ntfy ``url`` with ``actions=`` set to ``value`` (Apprise's ntfy plugin
    sends it as ``X-Actions``); the URL's own ``#`` part, if any, stays last. Apprise
    decodes the value twice (reading the query, then the plugin's own unquote), so it is
    encoded twice: a ``%`` in a URL arrives as written."""
    base, hash_mark, fragment = url.partition("#")
    joiner = "&" if "?" in base else "?"
    encoded = quote(quote(value, safe=""), safe="")
    return f"{base}{joiner}actions={encoded}{hash_mark}{fragment}"
