"""Signing in to the web inbox: one-time sign-in links and browser sessions.

``hitl-vault token login NAME`` makes a link for an enabled person, to the public URL that
``serve --public-url`` recorded (never an address from the synced ``hitl-vault.yaml``:
whoever could change it would collect the links). The link is valid for
:data:`LINK_VALID` and signs in once. A person also signs in with their own approver
token. Either way they get a session: a random secret in a cookie, kept in the store as
its SHA-256 only, for :data:`SESSION_LIFETIME`, until they sign out, or until ``people
disable`` ends it. Each sign-in is in the service log and told to the person's own
channels, so that nobody signs in as them unseen. The pages (:mod:`hitl_vault.web.inbox`)
set the cookie and bind their forms' CSRF tokens to the session.
"""

from __future__ import annotations

import base64
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from shlex import quote

from ..errors import AccessError, NotAuthenticatedError, UsageError
from ..identity import Person, Principal, Role, Session, SignInLink
from ..notify.send import send
from ..store import JournalStore
from ..times import format_ts
from .names import check_name
from .people import People, Sender, Told
from .tokens import Entropy, digest

SESSION_LIFETIME = timedelta(hours=12)
LINK_VALID = timedelta(minutes=10)
LOGIN_PATH = "/login/"  # a sign-in link is the public URL, this, and its secret
PUBLIC_URL = "public_url"  # the store setting ``serve --public-url`` records
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 random bytes, url-safe, no padding
SIGNED_IN_BY_LINK = "sign-in link"
_FIX = "ask the service's owner for a new one (hitl-vault token login NAME)"


class SignInError(NotAuthenticatedError):
    """A sign-in link that signs nobody in, and why; ``unknown``: not one this service made
    (a guess, which counts as a failed sign-in from its address)."""

    def __init__(self, message: str, *, unknown: bool = False) -> None:
        self.unknown = unknown
        super().__init__(message)


def _secret(entropy: Entropy) -> str:
    return base64.urlsafe_b64encode(entropy(32)).decode()[:43]


def _key(secret: object) -> str | None:
    """The store's key for a secret someone sent (None: not one hitl-vault makes)."""
    if not isinstance(secret, str) or _SECRET.fullmatch(secret) is None:
        return None
    return digest(secret)


def _enabled(store: JournalStore, name: str) -> Person:
    person = store.person(name)
    if person is None:
        raise AccessError(
            name, "is not in people", f"add them first: hitl-vault people add {quote(name)}"
        )
    if person.disabled:
        raise AccessError(
            person.name,
            "is disabled, and a disabled person signs in nowhere",
            f"enable them again first: hitl-vault people set {quote(person.name)} --enable",
        )
    return person


def login_link(
    store: JournalStore,
    name: str,
    *,
    now: datetime,
    by: str,
    entropy: Entropy = secrets.token_bytes,
) -> tuple[SignInLink, str]:
    """A one-time sign-in link for the enabled person ``name``, recorded and logged, and its
    address (shown once: only its hash is kept). :class:`UsageError` when no public URL is
    recorded; :class:`AccessError` for a name not in people, or disabled."""
    name = check_name(name)
    public = store.setting(PUBLIC_URL)
    if not public:
        raise UsageError(
            "token login",
            "no public URL is recorded, so a sign-in link would have no address",
            "start the service once with the address people reach it at: hitl-vault serve "
            "--public-url https://vault.example.com",
        )
    person = _enabled(store, name)
    secret = _secret(entropy)
    at = now.replace(microsecond=0)
    link = SignInLink(digest(secret), person.name, at, at + LINK_VALID)
    store.add_sign_in_link(link, now, by)
    return link, public.rstrip("/") + LOGIN_PATH + secret


@dataclass(frozen=True)
class SignedIn:
    """A new session: its record, the secret its cookie holds (never stored), and the
    channels told of it."""

    session: Session
    secret: str
    told: tuple[Told, ...] = ()


class Sessions:
    """Sign-ins and sessions of one store, for the web inbox. ``send`` and ``env`` tell a
    person of each sign-in (as :class:`~.people.People` tells of changes)."""

    def __init__(
        self,
        store: JournalStore,
        *,
        lifetime: timedelta = SESSION_LIFETIME,
        send: Sender = send,
        env: Mapping[str, str] | None = None,
        entropy: Entropy = secrets.token_bytes,
    ) -> None:
        self._store = store
        self._lifetime = lifetime
        self._send = send
        self._env = env
        self._entropy = entropy

    def check_link(self, secret: str, now: datetime) -> Person:
        """The person a one-time link would sign in, changing nothing (the page a link opens
        asks first: mail scanners and chat previews fetch links). :class:`SignInError`
        saying why not: unknown, used already, expired, or its person disabled."""
        key = _key(secret)
        link = self._store.sign_in_link(key) if key is not None else None
        if link is None:
            raise SignInError(
                f"this sign-in link is not one this service made: {_FIX}", unknown=True
            )
        if link.used is not None:
            raise SignInError(
                f"this sign-in link was used already, at {format_ts(link.used)}, and a link "
                f"signs in once: {_FIX}"
            )
        if now >= link.expires:
            raise SignInError(
                f"this sign-in link expired at {format_ts(link.expires)} (a link is valid for "
                f"{int(LINK_VALID.total_seconds() // 60)} minutes): {_FIX}"
            )
        person = self._store.person(link.name)
        if person is None or person.disabled:
            raise SignInError(f"{link.name} is disabled, and a disabled person signs in nowhere")
        if person.changed is not None and link.created < person.changed:
            # Disabled and enabled again since (or given other channels): a link sent before
            # stays dead, as their tokens and decision links do.
            raise SignInError(
                f"this sign-in link was made before {person.name}'s entry in people last "
                f"changed, at {format_ts(person.changed)}: {_FIX}"
            )
        return person

    def with_link(self, secret: str, client: str, now: datetime) -> SignedIn:
        """Sign in with a one-time link's secret, spending it (:meth:`check_link` says why
        not, with :class:`SignInError`)."""
        person = self.check_link(secret, now)
        with self._store.batch():
            if not self._store.spend_sign_in_link(digest(secret), now):  # another tab was first
                raise SignInError(f"this sign-in link was used already: {_FIX}")
            session, cookie = self._open(person, SIGNED_IN_BY_LINK, client, now)
        return SignedIn(session, cookie, self._tell(person, session))

    def with_token(self, who: Principal, now: datetime) -> SignedIn:
        """Sign in as ``who``, whom an approver token proved to be (the service checked the
        token, and counts failures): a person's only. :class:`SignInError` for an agent's
        token, or a person disabled meanwhile."""
        if who.role is not Role.APPROVER:
            raise SignInError(
                f"{who.name}'s token is an agent's: an agent asks and never decides, so it "
                "signs nobody in (sign in with your own approver token)"
            )
        person = self._store.person(who.name)
        if person is None or person.disabled:
            raise SignInError(f"{who.name} is disabled, and a disabled person signs in nowhere")
        session, secret = self._open(person, f"token {who.credential}", who.client, now)
        return SignedIn(session, secret, self._tell(person, session))

    def find(self, secret: object, now: datetime) -> Session | None:
        """The open session whose cookie holds ``secret``, of an enabled person; None for
        anything else (unknown, ended, expired, its person disabled)."""
        key = _key(secret)
        session = self._store.session(key) if key is not None else None
        if session is None or not session.open(now):
            return None
        person = self._store.person(session.name)
        return session if person is not None and not person.disabled else None

    def sign_out(self, session: Session, now: datetime) -> bool:
        """End ``session`` (logged); False if it had ended already."""
        ended = self._store.end_sessions(session.name, now, session.name, "signed out", session.key)
        return ended > 0

    def _open(self, person: Person, how: str, client: str, now: datetime) -> tuple[Session, str]:
        secret = _secret(self._entropy)
        at = now.replace(microsecond=0)
        where = " ".join(client.split())[:200]
        session = Session(digest(secret), person.name, at, at + self._lifetime, how, where)
        self._store.add_session(session, now, person.name)
        return session, secret

    def _tell(self, person: Person, session: Session) -> tuple[Told, ...]:
        """Tell the person's own channels of the sign-in (best effort: it stands either way)."""
        where = f" from {session.client}" if session.client else ""
        body = (
            f"You ({person.name}) signed in to the hitl-vault inbox with {session.how}{where} "
            f"at {format_ts(session.created)}; the session ends at "
            f"{format_ts(session.expires)} or when you sign out."
        )
        people = People(self._store, by=person.name, send=self._send, env=self._env)
        return people.tell(person, "hitl-vault: you signed in", body)
