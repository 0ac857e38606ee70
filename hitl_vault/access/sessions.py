"""Signing in to the web inbox: one-time sign-in links and browser sessions.

``hitl-vault token login NAME`` makes a link for an enabled person, to the public URL that
``serve --public-url`` recorded (never an address from the synced ``hitl-vault.yaml``:
whoever could change it would collect the links). The link is valid for
:data:`LINK_VALID` and signs in once. A person also signs in with their own approver
token. Either way they get a session: a random secret in a cookie, kept in the store as
its SHA-256 only, for :data:`SESSION_LIFETIME` (never past the token's own expiry), until
they sign out, until ``people disable`` ends it or their entry in people changes, or until
the token it was opened with is revoked. Each sign-in is in the service log and told to the
person's own channels, so that nobody signs in as them unseen: on a thread of its own
(:class:`Notices`), never the service's, and a notice that fails is logged, not retried.
The pages (:mod:`hitl_vault.web.inbox`) set the cookie and bind their forms' CSRF tokens to
the session.
"""

from __future__ import annotations

import base64
import logging
import queue
import re
import secrets
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from shlex import quote

from ..errors import AccessError, NotAuthenticatedError, UsageError
from ..identity import Person, Principal, Role, Session, SignInLink
from ..notify.send import SEND_TIMEOUT, Message, send_within
from ..store import JournalStore
from ..times import format_ts
from .names import check_name
from .people import People, Sender
from .tokens import Entropy, digest

SESSION_LIFETIME = timedelta(hours=12)
LINK_VALID = timedelta(minutes=10)
LOGIN_PATH = "/login/"  # a sign-in link is the public URL, this, and its secret
PUBLIC_URL = "public_url"  # the store setting ``serve --public-url`` records
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 random bytes, url-safe, no padding
SIGNED_IN_BY_LINK = "sign-in link"
_FIX = "ask the service's owner for a new one (hitl-vault token login NAME)"
NOTICES_WAITING = 100  # sign-in notices waiting to be sent at most; more are dropped (logged)

log = logging.getLogger(__name__)


def send_in_time(url: str, message: Message) -> str | None:
    """Send as the daemon's notifier does: given up after its send timeout."""
    return send_within(url, message, SEND_TIMEOUT)


class Notices:
    """Sends sign-in notices on a thread of its own, one at a time (each bounded by the
    send timeout), so that a channel that hangs holds no sign-in and no service thread.
    At most ``waiting`` wait; one more is dropped and logged. The thread ends when none
    waits, and the next notice starts another."""

    def __init__(self, waiting: int = NOTICES_WAITING) -> None:
        self._queue: queue.Queue[Callable[[], None]] = queue.Queue(waiting)
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def put(self, job: Callable[[], None]) -> bool:
        """Run ``job`` on the notices' thread; False (and not run) if too many wait."""
        with self._lock:
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                return False
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="hitl-sign-in-notices", daemon=True
                )
                self._thread.start()
        return True

    def _run(self) -> None:
        while True:
            with self._lock:  # put() starts another thread only once this one has ended
                try:
                    job = self._queue.get_nowait()
                except queue.Empty:
                    self._thread = None
                    return
            try:
                job()
            except Exception:  # a bug: the next notice is still sent
                log.error("telling a person of a sign-in failed", exc_info=True)


NOTICES = Notices()  # the process's one sender of sign-in notices


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
    """A new session: its record, and the secret its cookie holds (never stored)."""

    session: Session
    secret: str


class Sessions:
    """Sign-ins and sessions of one store, for the web inbox. ``send`` and ``env`` tell a
    person of each sign-in (as :class:`~.people.People` tells of changes), through
    ``notices``."""

    def __init__(
        self,
        store: JournalStore,
        *,
        lifetime: timedelta = SESSION_LIFETIME,
        send: Sender = send_in_time,
        env: Mapping[str, str] | None = None,
        entropy: Entropy = secrets.token_bytes,
        notices: Notices = NOTICES,
    ) -> None:
        self._store = store
        self._lifetime = lifetime
        self._send = send
        self._env = env
        self._entropy = entropy
        self._notices = notices

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
        self._tell(person, session)
        return SignedIn(session, cookie)

    def with_token(self, who: Principal, now: datetime) -> SignedIn:
        """Sign in as ``who``, whom an approver token proved to be (the service checked the
        token, and counts failures): a person's only. The session ends when the token does,
        if that is sooner. :class:`SignInError` for an agent's token, or a person disabled or
        a token revoked meanwhile."""
        if who.role is not Role.APPROVER:
            raise SignInError(
                f"{who.name}'s token is an agent's: an agent asks and never decides, so it "
                "signs nobody in (sign in with your own approver token)"
            )
        credential = self._store.credential(who.credential) if who.credential else None
        if credential is None or not credential.live(now):
            raise SignInError(f"this token of {who.name}'s was revoked or has expired")
        person = self._store.person(who.name)
        if person is None or person.disabled:
            raise SignInError(f"{who.name} is disabled, and a disabled person signs in nowhere")
        how = f"token {credential.id}"
        session, secret = self._open(
            person, how, who.client, now, credential=credential.id, until=credential.expires
        )
        self._tell(person, session)
        return SignedIn(session, secret)

    def find(self, secret: object, now: datetime) -> Session | None:
        """The open session whose cookie holds ``secret``, of an enabled person; None for
        anything else: unknown, ended, expired, its person disabled or their entry in people
        changed since it was opened (as a sign-in link made before then is dead: a session
        opened as they were being disabled does not come back when they are enabled), or
        the token it was opened with revoked or expired."""
        key = _key(secret)
        session = self._store.session(key) if key is not None else None
        if session is None or not session.open(now):
            return None
        person = self._store.person(session.name)
        if person is None or person.disabled:
            return None
        if person.changed is not None and session.created < person.changed:
            return None
        if session.credential:
            credential = self._store.credential(session.credential)
            if credential is None or not credential.live(now):
                return None
        return session

    def sign_out(self, session: Session, now: datetime) -> bool:
        """End ``session`` (logged); False if it had ended already."""
        ended = self._store.end_sessions(session.name, now, session.name, "signed out", session.key)
        return ended > 0

    def _open(
        self,
        person: Person,
        how: str,
        client: str,
        now: datetime,
        *,
        credential: str = "",
        until: datetime | None = None,
    ) -> tuple[Session, str]:
        """A new session of ``person`` (``credential``: the token's id; ``until``: when that
        token expires, which the session never outlives), recorded and logged.
        :class:`SignInError` if the store's write finds them disabled (or changed) since
        they were read: ``people disable`` landed in between."""
        secret = _secret(self._entropy)
        at = now.replace(microsecond=0)
        where = " ".join(client.split())[:200]
        expires = at + self._lifetime if until is None else min(at + self._lifetime, until)
        session = Session(
            digest(secret), person.name, at, expires, how, where, credential=credential
        )
        if not self._store.add_session(session, now, person.name):
            raise SignInError(
                f"{person.name} was disabled, or their entry in people changed, as they signed "
                "in: sign in again (a disabled person signs in nowhere)"
            )
        return session, secret

    def _tell(self, person: Person, session: Session) -> None:
        """Tell the person's own channels of the sign-in, on the notices' thread (best
        effort: the sign-in stands either way; a channel that fails is logged, by its URL
        with its secrets masked, and not tried again)."""
        where = f" from {session.client}" if session.client else ""
        body = (
            f"You ({person.name}) signed in to the hitl-vault inbox with {session.how}{where} "
            f"at {format_ts(session.created)}; the session ends at "
            f"{format_ts(session.expires)} or when you sign out."
        )
        people = People(self._store, by=person.name, send=self._send, env=self._env)

        def tell() -> None:
            for told in people.tell(person, "hitl-vault: you signed in", body):
                if told.error is not None:
                    log.warning(
                        "could not tell %s of their sign-in (session %s) at %s: %s",
                        person.name, session.id, told.channel, told.error,
                    )  # fmt: skip

        if person.notify and not self._notices.put(tell):
            log.warning(
                "did not tell %s of their sign-in (session %s): too many notices wait to be "
                "sent already", person.name, session.id,
            )  # fmt: skip
