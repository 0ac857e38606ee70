"""The journal's hash chain: each entry's hash covers its fields and the entry before it,
so an entry edited, removed or inserted after it was written shows. Pure, no I/O."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64  # the hash before the first entry


# The chain's versions. 1: an entry's hash covers its fields and, once it was recorded, the
# recorder's uid. 2: it also covers the actor (``host/user``), behind a mark of the version,
# so an actor added to, changed in or taken off an entry shows as an edit. 3: it also covers
# the credential the step was asked or decided with through the service (``token ci-bot
# (id 1a2b...)``, ``session alice``): each version's entries keep verifying as they were made.
CHAIN_VERSION = 3
_V2 = "chain 2"
_V3 = "chain 3"


def entry_hash(
    prev: str,
    fields: Iterable[Any],
    uid: int | None = None,
    actor: str | None = None,
    credential: str | None = None,
) -> str:
    """The chain's link: the previous hash and the entry's fields. An entry with a
    ``credential`` is of version 3 (its hash covers the version, the uid, the actor and the
    credential); one with an ``actor`` only, of version 2; one without either, of version 1
    (``uid`` only when known, so entries written before it was recorded keep their hashes)."""
    if credential is not None:
        values: list[Any] = [*fields, _V3, uid, actor, credential]
    elif actor is not None:
        values = [*fields, _V2, uid, actor]
    else:
        values = [*fields] if uid is None else [*fields, uid]
    text = prev + "\x1f" + "\x1f".join("" if f is None else str(f) for f in values)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _user(uid: int | None) -> str:
    """This process's OS user by name, from the account (never ``$USER``)."""
    if uid is None:
        return "unknown"
    try:
        import pwd  # POSIX only

        return pwd.getpwuid(uid).pw_name
    except (ImportError, KeyError):
        return f"uid {uid}"


# Who records an entry, in every store: the real user id of this process, whatever name it
# claims (None where the platform has none), and its actor, ``host/user``: the host's name
# and that user's, which say who recorded it across the hosts that share one journal.
RECORDER_UID: int | None = os.getuid() if hasattr(os, "getuid") else None


def _host_name() -> str:
    """This machine's name, as :func:`socket.gethostname` gives it: the kernel's node name
    where there is one (without the socket module, which every command would load)."""
    uname = getattr(os, "uname", None)
    if uname is not None:
        return str(uname().nodename)
    import socket  # Windows

    return socket.gethostname()


RECORDER_HOST: str = _host_name() or "localhost"
RECORDER_ACTOR: str = f"{RECORDER_HOST}/{_user(RECORDER_UID)}"


def actor_host(actor: str | None) -> str | None:
    """The host an actor names (``build-1`` of ``build-1/hitl``); None for an entry of
    version 1, which names none."""
    return actor.partition("/")[0] if actor else None


def recorded_by(uid: int | None, actor: str | None, credential: str | None = None) -> str:
    """Who recorded an entry, for people: ``hitl on build-1 (uid 998)``, with ``for token
    ci-bot (id 1a2b...)`` when a credential asked for it (version 3), or, for an entry of
    version 1, ``uid 998`` (its name on this host where known)."""
    if credential:
        return f"{recorded_by(uid, actor)} for {credential}"
    if actor:
        host, _, user = actor.partition("/")
        return f"{user} on {host}" + (f" (uid {uid})" if uid is not None else "")
    if uid is None:
        return "an unknown user"
    try:
        import pwd  # POSIX only

        return f"uid {uid} ({pwd.getpwuid(uid).pw_name})"
    except (ImportError, KeyError):
        return f"uid {uid}"


@dataclass(frozen=True)
class Entry:
    """One row of ``entries``, as stored (see schema.sql)."""

    seq: int
    request_id: str
    at: str
    kind: str
    from_status: str | None
    to_status: str
    by: str
    reason: str
    details: str
    params_sha: str | None
    prev_hash: str
    hash: str
    uid: int | None = None
    actor: str | None = None  # ``host/user`` (NULL in entries of version 1)
    credential: str | None = None  # ``token ci-bot (id ...)`` (only in entries of version 3)

    @property
    def version(self) -> int:
        """The chain version its hash was made under (see :func:`entry_hash`)."""
        return 3 if self.credential is not None else 2 if self.actor is not None else 1

    def intact(self) -> bool:
        """Its content still matches the hash it was written with."""
        fields = (
            self.request_id, self.at, self.kind, self.from_status, self.to_status, self.by,
            self.reason, self.details, self.params_sha,
        )  # fmt: skip
        recorder = (self.uid, self.actor, self.credential)
        return entry_hash(self.prev_hash, fields, *recorder) == self.hash


def decision_entry(entries: Iterable[Entry]) -> Entry | None:
    """The entry that recorded a request's decision (its first move to approved, rejected
    or cancelled), of the request's ``entries`` in order; None before a decision."""
    decided = ("approved", "rejected", "cancelled")
    return next((e for e in entries if e.kind == "transition" and e.to_status in decided), None)


def chain_problems(entries: Iterable[Entry]) -> list[str]:
    """Every break in the chain of ``entries`` (all of them, in order), as a sentence naming
    the entry; [] when intact."""
    problems: list[str] = []
    prev = GENESIS
    for e in entries:
        if e.prev_hash != prev:
            problems.append(
                f"journal entry {e.seq} ({e.request_id}): does not follow entry before it "
                "(an entry was removed or inserted)"
            )
        if not e.intact():
            problems.append(
                f"journal entry {e.seq} ({e.request_id}): its content does not match its hash "
                "(it was edited after it was written)"
            )
        prev = e.hash
    return problems
