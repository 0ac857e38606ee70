"""Who is asking and who is answering: people, credentials, and proof of a decision.

A name written in a note, ``--by alice`` or a ``votes:`` line is a claim. A decision
made through the service with an approver credential, a signed-in session, or the
service's Unix socket by an OS user mapped to a person is *proven*: the service
records it with the channel it came through (``via api``), and rules with
``authenticated: true`` count only those. People and credentials live in the store,
set only through the CLI by the service's owner, never in the synced ``hitl-vault.yaml``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Protocol

from .chain import RECORDER_HOST, actor_host
from .errors import UsageError
from .model import Kind, Request, Transition


class Role(StrEnum):
    """What a credential may do: an agent asks, an approver (a person) answers."""

    AGENT = "agent"
    APPROVER = "approver"


# The channels a proven decision comes through, as its history line says (``via api``).
API = "api"  # an approver credential over HTTP (the API and the --server clients)
SESSION = "session"  # a signed-in browser session
SOCKET = "socket"  # the service's Unix socket, the OS user mapped to a person
LINK = "link"  # a signed decision link: proves only that someone holds the person's channel
CHANNELS = (API, SESSION, SOCKET, LINK)
# What ``authenticated: true`` accepts; a link counts only where a rule lists it.
PROVEN = frozenset({API, SESSION, SOCKET})


def same_name(name: str) -> str:
    """A name as compared: Unicode NFKC, without invisible characters (format and control
    characters such as a zero-width space or a soft hyphen), casefolded, stripped
    (``Alice``, ``alice `` and ``al\\u00adice`` are ``alice``). Names are kept as written;
    only comparisons use this."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if unicodedata.category(c) not in _INVISIBLE).strip()


_INVISIBLE = frozenset({"Cc", "Cf", "Cs", "Co", "Cn"})  # control, format, unassigned...
NAME_LIMIT = 64  # characters: a name is shown in notes, lists and messages
REQUESTER_LIMIT = 200  # an agent's requested_by: ``claude-code:<session id>``, ``mcp:<client>``
NAME_FIX = (
    "give a name such as alice, Mary Ann or deploy-bot: letters, digits, spaces and "
    f"punctuation, at most {NAME_LIMIT} characters, and no 'via' after the first word"
)


def name_problem(name: object, limit: int = NAME_LIMIT) -> str | None:
    """What is wrong with ``name`` as a person's or an agent's name, or None when it is one.

    One rule for every name that asks or decides: ``people`` and tokens, ``--by``,
    ``decided_by:`` in a note, ``votes:`` lines, ``Vault.approve(by=...)`` and
    ``requested_by``. A name is not empty, at most :data:`NAME_LIMIT` characters, holds
    only printable characters (no newline, tab, or invisible character such as a
    zero-width space), and never reads like a proven decision's line: ``alice via api``
    would be shown as ``by alice via api``, so no word after the first may be ``via``.
    ``limit``: a longer one for an agent's ``requested_by``, which carries its session.
    """
    if not isinstance(name, str) or not same_name(name):
        return "a name cannot be empty"
    kept = name.strip()
    if not kept.isprintable():
        return (
            f"{kept!r} holds a character that is not printable (a newline, a tab, or an "
            "invisible one such as a zero-width space)"
        )
    if len(kept) > limit:
        return f"{kept[:20]!r}… is longer than {limit} characters"
    if "via" in same_name(kept).split()[1:]:  # ``ｖｉａ`` too
        return f"{kept!r} reads like a proven decision (by NAME via CHANNEL)"
    return None


def check_name(name: str, argument: str = "NAME", limit: int = NAME_LIMIT) -> str:
    """``name`` as it will be kept (stripped), or a :class:`UsageError` naming ``argument``
    and saying what is wrong (see :func:`name_problem`)."""
    problem = name_problem(name, limit)
    if problem is not None:
        raise UsageError(argument, problem, NAME_FIX)
    return name.strip()


@dataclass(frozen=True)
class Person:
    """Someone who may decide: the OS users that are them, the channels that reach them."""

    name: str
    uids: tuple[int, ...] = ()
    notify: tuple[str, ...] = ()  # Apprise URLs, as given (their own, never shared targets)
    disabled: bool = False
    created: datetime | None = None
    changed: datetime | None = None


@dataclass(frozen=True)
class Credential:
    """A bearer token's record. The secret itself is never kept: only its SHA-256."""

    id: str
    name: str  # an agent's name, or a person's for an approver token
    role: Role
    secret_sha: str
    created: datetime
    expires: datetime | None
    actions: tuple[str, ...] | None = None  # an agent token limited to these actions
    revoked: datetime | None = None
    last_used: datetime | None = None  # kept outside the hash chain

    def live(self, now: datetime) -> bool:
        """Not revoked and not expired at ``now``."""
        return self.revoked is None and (self.expires is None or now < self.expires)


@dataclass(frozen=True)
class SignInLink:
    """A one-time link that signs a person in to the web inbox (``hitl-vault token login``):
    kept as the SHA-256 of its secret only, valid until ``expires``, used at most once."""

    key: str  # the SHA-256 (hex) of the link's secret
    name: str  # the person's name, as people spells it
    created: datetime
    expires: datetime
    used: datetime | None = None


@dataclass(frozen=True)
class Session:
    """A person signed in to the web inbox: kept as the SHA-256 of its cookie's secret only,
    open until ``expires`` or until ``ended`` (sign-out, or the person disabled); one opened
    with a token never outlives it."""

    key: str  # the SHA-256 (hex) of the cookie's secret
    name: str  # the person's name, as people spells it
    created: datetime
    expires: datetime
    how: str  # how they signed in: ``sign-in link``, ``token 0123456789ab``
    client: str = ""  # where from (an address), as the service saw it
    ended: datetime | None = None
    credential: str = ""  # the id of the token it was opened with ("": a sign-in link)

    @property
    def id(self) -> str:
        """How logs and lists name it: the first 12 hex digits of its hash (never the
        secret)."""
        return self.key[:12]

    def open(self, now: datetime) -> bool:
        """Not ended and not expired at ``now``."""
        return self.ended is None and now < self.expires


@dataclass(frozen=True)
class Principal:
    """Who a request to the service proved to be (from a credential, a session or a socket
    peer), and the details that go in its fields (never in ``requested_by``)."""

    name: str
    role: Role
    via: str  # one of CHANNELS
    credential: str | None = None  # the credential's id, if one was used
    actions: tuple[str, ...] | None = None
    client: str = ""  # where it came from (an address, ``uid 1001``), for messages
    session: str = ""  # the agent's own session id, if it gave one
    client_name: str = ""  # the agent's client (an MCP client's name), if known
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def recorded(self) -> str:
        """The credential, as the journal's entries of what it asked or decided keep it (chain
        version 3): ``token ci-bot (id 1a2b...)`` for a token, ``session alice``, ``link
        alice`` or ``socket alice`` (the person and the channel) otherwise."""
        if self.credential is not None:
            return f"token {self.name} (id {self.credential})"
        return f"{self.via} {self.name}"

    def may_ask(self, action: str) -> bool:
        """Whether this principal may submit ``action`` (an agent limited by ``--actions``)."""
        return self.role is Role.AGENT and (self.actions is None or action in self.actions)


@dataclass(frozen=True)
class Proof:
    """A decision's proof, handed to the engine by the service only: the person it proves,
    and the channel it came through (the history says ``by alice via api``)."""

    name: str
    via: str
    client: str = ""
    credential: str | None = None  # :attr:`Principal.recorded`, kept with the entries

    @property
    def detail(self) -> str:
        """The line the journal keeps with the decision: ``via api``."""
        return f"via {self.via}"


# A decision's claim of a channel in free text, as a history line says one: ``by alice via
# api``, ``alice approved (1 of 2) via socket``, ``voted ... via link``; read in text folded
# by :func:`_folded` (look-alike letters as the Latin ones, blanks as spaces).
_CLAIM = re.compile(
    r"\b(?:by|approved|approvals?|rejected|rejection|voted|decided)\b[^\n]{0,100}?"
    rf"\bvia\s*(?:{'|'.join(CHANNELS)})\b"
)

# Letters that look like the Latin ones of the words a claim is made of (by, approved,
# rejected, voted, via, api, session, socket, link): Cyrillic, Greek, Armenian, Cherokee,
# Coptic, small capitals... as Unicode's confusables list (TR39) maps them, checked before
# and after casefolding (a capital Greek nu looks like N, a small one like v). NFKD has
# already made full-width and mathematical letters plain ones.
_LOOK_ALIKES = {
    "a": "\u0430\u03b1\u0251\u237a\u0410\u0391\u13aa\u15c5",
    "b": "\u044c\u0184\u0185\u13cf\u15af\u1472\u0412\u0392\u13f4\u15f7",
    "c": "\u0441\u03f2\u03c2\u1d04\u2ca5\u0421\u03f9\u13df",
    "d": "\u0501\u146f\ua4d2\u13e7\u13a0\u15ea",
    "e": "\u0435\u04bd\u212e\uab32\u0415\u0395\u13ac",
    "i": "\u0456\u03b9\u0269\u0131\u04cf\ua647\u0406\u0399\u04c0\u2373",
    "j": "\u0458\u03f3\u0408\u037f\u13ab",
    "k": "\u043a\u03ba\u041a\u039a\u13e6",
    "l": "\u01c0\u05d5\u2223\u13de\u14aa1",
    "n": "\u0578\u0274\u039d",
    "o": "\u043e\u03bf\u03c3\u0585\u1040\u1d0f\u2c9f\u0966\u09e6\u041e\u039f\u0555\u0d20" + "0",
    "p": "\u0440\u03c1\u03f1\u2ca3\u0420\u03a1\u13e2",
    "r": "\u0433\u1d26\u2c85\u13a1\u01a6\u1587",
    "s": "\u0455\ua731\u01bd\u0405\u13da\u054f",
    "t": "\u0442\u03c4\u0422\u03a4\u13a2",
    "v": "\u03bd\u0475\u1d20\u2228\u13d9\u0474",
    "y": "\u0443\u03b3\u04af\u028f\u10e7\u0263\u0423\u03a5\u04ae",
}
_LATIN = {look: latin for latin, looks in _LOOK_ALIKES.items() for look in looks}
# ASCII folded as :func:`_folded` folds it: control characters as spaces, 0 and 1 as o and l.
_ASCII = str.maketrans(
    {**{chr(c): " " for c in (*range(32), 127) if chr(c) != "\n"}, "0": "o", "1": "l"}
)
# What a ``v`` may read as before the look-alikes are made Latin: text with none claims nothing.
_V = frozenset("v" + _LOOK_ALIKES["v"] + _LOOK_ALIKES["v"].casefold())
# Letters and signs that show as a blank (Hangul fillers, the braille blank): read as spaces.
_BLANKS = frozenset("\u115f\u1160\u3164\uffa0\u2800\u180e")


def _folded(text: str, hidden: str) -> tuple[str, list[int]]:
    """``text`` as a claim is looked for in it: each character NFKD'd, its look-alikes of
    Latin letters made Latin, casefolded; spaces, blank letters and control characters a
    space; combining marks dropped; invisible characters (a zero-width space, a tag)
    ``hidden`` (``""`` or ``" "``: they may join a word or split two). With, for each
    folded character, the offset after its own in ``text``."""
    folded: list[str] = []
    where: list[int] = []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKD", ch):  # ``ṽ``: v and its accent
            for d in _LATIN.get(c) or c.casefold():
                kind = unicodedata.category(d)
                if d == "\n":
                    e = d
                elif d in _BLANKS or kind[0] == "Z" or kind == "Cc" or d.isspace():
                    e = " "
                elif kind in ("Mn", "Me"):
                    e = ""
                elif kind in _INVISIBLE:
                    e = hidden
                else:
                    e = _LATIN.get(d, d)
                folded += e
                where += [i + 1] * len(e)
    return "".join(folded), where


def channel_claims(text: str) -> list[int]:
    """Where, in ``text``, a phrase ends that claims a decision was proven through a channel
    (``approved by alice via api``), found however it is written: in full-width letters,
    with look-alike letters from other scripts (a Cyrillic ``і`` in ``via``), with blank
    letters for spaces or invisible characters inside or between its words (see
    :func:`_folded`): the end offsets, in order.

    Only the service records a proof, in a history step's details (:func:`proven_by`);
    the same words in a summary, a context or a reason are someone's text, and whatever
    shows them must not let them pass for a record."""
    if text.isascii():  # one character each, nothing hidden: folded at C speed
        folded = text.lower().translate(_ASCII)
        return [m.end() for m in _CLAIM.finditer(folded)]
    if _V.isdisjoint(unicodedata.normalize("NFKD", text).casefold()):  # no ``via`` at all
        return []
    ends: set[int] = set()
    for hidden in ("", " "):
        folded, where = _folded(text, hidden)
        ends.update(where[m.end() - 1] for m in _CLAIM.finditer(folded))
    return sorted(_past_marks(text, end) for end in ends)


def _past_marks(text: str, end: int) -> int:
    """``end`` moved past the combining marks and invisible characters that follow it (they
    belong to the letter before)."""
    while end < len(text) and unicodedata.category(text[end]) in ("Mn", "Me", *_INVISIBLE):
        end += 1
    return end


# What follows such a phrase in text shown as it is (a page escapes it itself).
NOT_A_RECORD = " (not a record: someone's text)"


def unclaimed_text(text: str, mark: str = NOT_A_RECORD) -> str:
    """``text`` with ``mark`` after each phrase that claims a channel
    (:func:`channel_claims`), so that nobody takes someone's text for a record: as a note
    shows it (its mark in bold), and as a page may, for a template that escapes the result
    (Jinja's autoescape: ``{{ r.summary | unclaimed }}``)."""
    for end in reversed(channel_claims(text)):
        text = text[:end] + mark + text[end:]
    return text


def proven_via(details: tuple[str, ...]) -> str | None:
    """The channel a journal entry's details name (``via api``), if any."""
    for detail in details:
        word, _, channel = detail.partition(" ")
        if word == "via" and channel in CHANNELS:
            return channel
    return None


def proven_by(step: Transition) -> str | None:
    """The channel a decision or a vote was proven through (``api``), or None.

    Only a decision (a move) and a vote can be proven, and only the engine writes their
    ``via`` detail, always the last, from the :class:`Proof` the service hands it; what
    any other entry's details say (an ignored note edit's, a note's text) is never read
    as a proof.
    """
    if step.kind not in (Kind.TRANSITION, Kind.VOTED):
        return None
    return proven_via(step.details[-1:])


def proof_details(proof: Proof) -> tuple[str, ...]:
    """The details the engine keeps last with a proven decision or vote: where it came
    from (``from 10.0.0.5``), if the service knew, then ``via api``."""
    client = " ".join(proof.client.split())[:200]
    return ((f"from {client}",) if client else ()) + (proof.detail,)


def proof_in(step: Transition) -> Proof | None:
    """The proof a journaled decision or vote carries (see :func:`proof_details`), or None."""
    via = proven_by(step)
    if via is None:
        return None
    before = step.details[-2] if len(step.details) > 1 else ""
    client = before[len("from ") :] if before.startswith("from ") else ""
    return Proof(step.by, via, client)


# The store setting ``serve`` keeps: the OS user id the service runs as (on the host that
# started it last). A proof in an entry of chain version 1 (no actor) counts only where that
# user's process recorded it (the entry's recorder uid, never a name or a detail the writer
# chose).
SERVICE_UID = "service_uid"
# The store setting ``serve --public-url`` keeps: where people reach the service (its web
# inbox is there), for the notes that name it.
PUBLIC_URL = "public_url"


class Settings(Protocol):
    """The store's settings, as the proof reads them (a JournalStore is one)."""

    def setting(self, name: str) -> str | None: ...

    def set_setting(self, name: str, value: str, at: datetime, by: str) -> bool: ...


def service_uid_on(host: str) -> str:
    """The store setting ``serve`` keeps on ``host``: the uid the service runs as there. A
    proof in an entry of chain version 2 (``host/user``) counts only where its host's
    service user recorded it, so a service on host A and a follower on host B are both the
    service, and no other user on either host is."""
    return f"{SERVICE_UID}@{host}"


def keep_service_uid(journal: Settings, uid: int, at: datetime, by: str) -> None:
    """Keep ``uid`` as the service's user, vault-wide and on this host (``serve`` does at
    start), so that the proofs this host's service records count."""
    journal.set_setting(SERVICE_UID, str(uid), at, by)
    journal.set_setting(service_uid_on(RECORDER_HOST), str(uid), at, by)


def service_uid(setting: str | None) -> int | None:
    """The service's uid from its store setting; None when none is kept (or it is not one)."""
    try:
        return int(setting) if setting is not None else None
    except ValueError:
        return None


def proof_counts(journal: Settings, uid: int | None, actor: str | None) -> bool:
    """Whether a proof recorded by the process of user ``uid`` (``actor``: its
    ``host/user``, None in an entry of chain version 1) counts: only a service process's of
    this vault, whichever host it runs on. Version 2: ``uid`` is the service's user kept for
    the actor's host (:func:`service_uid_on`); version 1: it is :data:`SERVICE_UID`. Nothing
    counts where no service ever ran (on that host)."""
    host = actor_host(actor)
    key = SERVICE_UID if host is None else service_uid_on(host)
    service = service_uid(journal.setting(key))
    return service is not None and uid == service


def proofs_kept(
    journal: Settings, request: Request, recorders: Sequence[tuple[int | None, str | None]]
) -> Request:
    """``request`` as the rules count it: each step's ``via`` detail is kept only where the
    service recorded it (``recorders``: the uid and actor of each history step's entry, in
    order; see :func:`proof_counts`); any other proof is taken off, so it counts as the name
    it claims and no more."""
    if not any(proven_by(t) for t in request.history):
        return request
    if len(recorders) != len(request.history):  # not the same reading: trust no proof
        recorders = [(None, None)] * len(request.history)
    steps = tuple(
        t
        if proven_by(t) is None or proof_counts(journal, *recorder)
        else replace(t, details=t.details[:-1])
        for t, recorder in zip(request.history, recorders, strict=True)
    )
    return replace(request, history=steps)


def false_proof(
    journal: Settings, step: Transition, uid: int | None, actor: str | None
) -> str | None:
    """The channel a journal step claims a proof through although the service did not
    record it (``verify`` names such entries); None when it claims none or it counts."""
    via = proven_by(step)
    return via if via is not None and not proof_counts(journal, uid, actor) else None
