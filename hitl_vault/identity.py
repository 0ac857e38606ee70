"""Who is asking and who is answering: people, credentials, and proof of a decision.

A name written in a note, ``--by alice`` or a ``votes:`` line is a claim. A decision
made through the service with an approver credential, a signed-in session, or the
service's Unix socket by an OS user mapped to a person is *proven*: the service
records it with the channel it came through (``via api``), and rules with
``authenticated: true`` count only those. People and credentials live in the store,
set only through the CLI by the service's owner, never in the synced ``hitl-vault.yaml``.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from .model import Kind, Transition


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
    """A name as compared: Unicode NFKC, casefolded, stripped (``Alice`` and ``alice `` are
    ``alice``). Names are kept as written; only comparisons use this."""
    return unicodedata.normalize("NFKC", name).casefold().strip()


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

    @property
    def detail(self) -> str:
        """The line the journal keeps with the decision: ``via api``."""
        return f"via {self.via}"


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
