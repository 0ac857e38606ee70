"""Bearer tokens: made once, kept as SHA-256 only, checked in constant time, revoked by name
or id.

A token reads ``hv_<id>_<43 characters>``: the id (12 hex digits) says which credential to
look up, and the 43 url-safe characters are 32 random bytes. The store keeps the
SHA-256 of the whole token; the token itself is shown once, at :func:`mint`, and never
stored, logged or journaled. An approver token carries a person's name (from
``people``); an agent token may not carry one, so no agent can pass for a person.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Callable, Iterable
from dataclasses import replace
from datetime import datetime, timedelta
from shlex import quote

from ..errors import AccessError, JournalUnavailableError, UsageError
from ..identity import Credential, Role
from ..model import check_action
from ..store import JournalStore, ServiceEntry
from ..times import format_ts
from .names import check_name

log = logging.getLogger(__name__)

PREFIX = "hv"
DEFAULT_EXPIRY = timedelta(days=90)
# A credential's last use is written at most this often: a long-poll or a gate call that
# comes back within it writes nothing at all.
USED_EVERY = timedelta(minutes=1)
_TOKEN = re.compile(r"hv_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
_ID = re.compile(r"[0-9a-f]{12}")
# What a lookup of an unknown id is compared against, so it costs what a known one does.
_NOBODY = hashlib.sha256(b"no such credential").hexdigest()
# Where the random bytes come from (a test hands its own).
Entropy = Callable[[int], bytes]


def digest(token: str) -> str:
    """The SHA-256 (hex) a token is kept as."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _roled(role: Role | str) -> Role:
    try:
        return Role(role)
    except ValueError:
        roles = " or ".join(r.value for r in Role)
        raise UsageError("--role", f"{role!r} is not a role", f"use {roles}") from None


def _actions(actions: Iterable[str] | None, role: Role) -> tuple[str, ...] | None:
    if actions is None:
        return None
    if role is not Role.AGENT:
        raise UsageError("--actions", "only an agent token is limited to actions", "drop --actions")
    kept = tuple(dict.fromkeys(check_action(a.strip(), "--actions") for a in actions))
    if not kept:
        raise UsageError("--actions", "no action given", "list them like deploy,payment")
    return kept


def _check_owner(store: JournalStore, name: str, role: Role) -> str:
    """The name the token holds: an approver's is an enabled person's (as ``people`` spells
    it); an agent's is nobody's."""
    person = store.person(name)
    if role is Role.APPROVER:
        if person is None:
            raise AccessError(
                name,
                "is not in people, and an approver token is a person's",
                f"add them first: hitl-vault people add {quote(name)} --uid UID",
            )
        if person.disabled:
            raise AccessError(
                name, "is disabled", "a disabled person gets no token; ask the service's owner"
            )
        return person.name
    if person is not None:
        raise AccessError(
            name,
            f"is a person's name ({person.name}), and an agent may not pass for a person",
            "give the agent a name of its own, like deploy-bot",
        )
    return name


def mint(
    store: JournalStore,
    name: str,
    role: Role | str,
    *,
    actions: Iterable[str] | None = None,
    expires: timedelta | None = DEFAULT_EXPIRY,
    now: datetime,
    by: str,
    entropy: Entropy = secrets.token_bytes,
) -> tuple[Credential, str]:
    """A new credential for ``name``, recorded and logged, and its token (shown once).

    ``expires``: how long it is valid (None: until revoked); ``actions``: the only
    actions an agent token may ask for (None: any). Raises :class:`UsageError` for a bad
    argument and :class:`AccessError` for a name that cannot hold this role.
    """
    name = check_name(name)
    role = _roled(role)
    limited = _actions(actions, role)
    if expires is not None and expires <= timedelta(0):
        raise UsageError("--expires", "a token must be valid for some time", "use e.g. 90d")
    name = _check_owner(store, name, role)
    credential_id = entropy(6).hex()
    token = f"{PREFIX}_{credential_id}_{base64.urlsafe_b64encode(entropy(32)).decode()[:43]}"
    at = now.replace(microsecond=0)
    credential = Credential(
        id=credential_id,
        name=name,
        role=role,
        secret_sha=digest(token),
        created=at,
        expires=None if expires is None else at + expires,
        actions=limited,
    )
    store.add_credential(credential, now, by)
    return credential, token


def authenticate(store: JournalStore, token: object, now: datetime) -> Credential | None:
    """The live credential ``token`` is the secret of, or None: malformed, unknown, wrong,
    revoked, expired, or an approver's whose person is disabled or gone. Compared in
    constant time; its last use is recorded outside every chain, at most once a
    :data:`USED_EVERY`."""
    if not isinstance(token, str):
        return None
    found = _TOKEN.fullmatch(token)
    if found is None:
        return None
    credential = store.credential(found.group(1))
    stored = credential.secret_sha if credential is not None else _NOBODY
    if not hmac.compare_digest(digest(token), stored) or credential is None:
        return None
    if not credential.live(now):
        return None
    if credential.role is Role.APPROVER:
        person = store.person(credential.name)
        if person is None or person.disabled:
            return None
    if credential.last_used is None or now - credential.last_used >= USED_EVERY:
        try:
            store.credential_used(credential.id, now)
        except JournalUnavailableError:  # busy just now: the next use records it
            log.debug("could not record the use of credential %s", credential.id, exc_info=True)
        else:
            credential = replace(credential, last_used=now.replace(microsecond=0))
    return credential


def revoke(store: JournalStore, name_or_id: str, now: datetime, by: str) -> int:
    """Revoke one token by its id, or every token of a name; how many were live until now.
    :class:`AccessError` when no token has that id or name."""
    one = store.credential(name_or_id) if _ID.fullmatch(name_or_id) else None
    if one is not None:
        return store.revoke_credentials([one.id], now, by, "revoked by id")
    named = store.credentials(name_or_id)
    if not named:
        raise AccessError(
            name_or_id, "no token has this name or id", "see them with hitl-vault token list"
        )
    live = [c.id for c in named if c.revoked is None]
    return store.revoke_credentials(live, now, by, "revoked by name")


def state(credential: Credential, now: datetime, store: JournalStore) -> str:
    """What a credential is now, as ``token list`` shows it: ``live``, ``revoked``,
    ``expired``, or ``disabled`` (an approver's whose person is disabled or gone)."""
    if credential.revoked is not None:
        return "revoked"
    if not credential.live(now):
        return "expired"
    if credential.role is Role.APPROVER:
        person = store.person(credential.name)
        if person is None or person.disabled:
            return "disabled"
    return "live"


def client_name(client: str) -> str:
    """A client's address as the service log keeps it: one line, at most 200 characters
    (it may come from a header), ``unknown`` when empty."""
    return " ".join(str(client).split())[:200] or "unknown"


def failed(
    store: JournalStore,
    client: str,
    count: int,
    now: datetime,
    by: str = "hitl-vault",
    *,
    since: datetime | None = None,
) -> ServiceEntry:
    """Log one summary of failed authentication: from which client address (one line, at
    most 200 characters), how many times, since when (never the token that was
    presented). One store write: per failure, count with
    :class:`~hitl_vault.access.failures.FailureLog`, which calls this at most once a minute
    per client."""
    details = (f"{count} failed",) + ((f"since {format_ts(since)}",) if since else ())
    return store.log_service(now, by, "auth failed", client_name(client), details)
