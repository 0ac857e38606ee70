"""People: who may decide, the OS users that are them, and the channels that reach them.

Kept in the store, changed only here (through ``hitl-vault people``) by the service's
owner. Every change goes in the service log with who made it, and is told to the
person's channels, the old ones and the new, so that nobody can quietly redirect where
someone's messages go. Telling is best effort: a channel that is down never fails the
change, and each failure is reported back.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from shlex import quote
from urllib.parse import urlsplit

from ..errors import AccessError, UsageError, VaultError
from ..identity import Person, Role, same_name
from ..model import RULES_FILE
from ..notify.config import read_notify_config
from ..notify.people import clash
from ..notify.send import (
    PLACEHOLDER,
    SCHEME,
    Message,
    mask_url,
    placeholders,
    send,
    url_problem,
)
from ..policy.rulesfile import rules_text
from ..store import JournalStore
from ..times import format_ts
from . import links
from .names import check_name

log = logging.getLogger(__name__)

# Sends one message to one URL: None when delivered, else why not (notify.send.send).
Sender = Callable[[str, Message], str | None]
UID_MAX = 2**32 - 2  # (uid_t)-1 means "no user"


@dataclass(frozen=True)
class Told:
    """One channel told of a change: the URL as shown (secrets masked), and why it was not
    delivered (None: it was)."""

    channel: str
    error: str | None


@dataclass(frozen=True)
class Change:
    """What a change to a person did: the person now, the channels told, the tokens ended."""

    person: Person
    event: str
    told: tuple[Told, ...] = ()
    revoked: int = 0
    ended: int = 0  # sessions of the web inbox ended


def service_uid(store: JournalStore) -> int | None:
    """The uid the service runs as, as ``hitl-vault serve`` recorded it (None: never, or not
    a number)."""
    value = store.setting("service_uid")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def person_for_uid(store: JournalStore, uid: int) -> Person | None:
    """The enabled person the OS user ``uid`` is, or None: nobody's, or a uid more than one
    enabled person has (it proves none of them; logged)."""
    found = [p for p in store.people() if not p.disabled and uid in p.uids]
    if len(found) > 1:
        log.warning(
            "uid %d is the uid of %s at once, so it proves none of them: give it to one "
            "(hitl-vault people set NAME --uid UID)",
            uid,
            " and ".join(p.name for p in found),
        )
        return None
    return found[0] if found else None


def _kinds(urls: Iterable[str]) -> str:
    """Channels as a message names them: their kinds only (never a URL, which holds tokens)."""
    return ", ".join(urlsplit(url).scheme or "?" for url in urls) or "none"


def _uids_text(uids: Iterable[int]) -> str:
    return " ".join(str(uid) for uid in uids) or "none"


def _end_access(store: JournalStore, person: Person, now: datetime, by: str) -> tuple[int, int]:
    """End at once everything that lets ``person`` act through the service: every token of
    theirs and every session they signed in to the web inbox (how many of each were live
    is returned). Their outstanding links die with them: a decision link or a sign-in link
    of a disabled person is refused when it is used (and their decision links stay dead
    once they are enabled again: :meth:`People.set` ends them). Called inside the write that
    disables them, so no use of the old ones slips in between."""
    why = f"{person.name} disabled"
    live = [c.id for c in store.credentials(person.name) if c.revoked is None]
    revoked = store.revoke_credentials(live, now, by, why)
    return revoked, store.end_sessions(person.name, now, by, why)


class People:
    """The people of one store, changed by ``by`` (the OS user name running the command).

    No person may have a uid that can act as anyone on the vault: root's, ``owner_uid``
    (this process's, by default), the uid the service runs as (recorded in the store by
    ``hitl-vault serve``), or the uid that owns the ``vault`` folder. ``send`` sends one
    message; ``env`` fills the ``${NAME}`` of a channel's URL when it is sent.
    """

    def __init__(
        self,
        store: JournalStore,
        *,
        by: str,
        owner_uid: int | None = None,
        vault: Path | None = None,
        send: Sender = send,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self._store = store
        self._by = by
        self._owner = os.getuid() if owner_uid is None else owner_uid
        self._vault = vault
        self._send = send
        self._env = os.environ if env is None else env

    def list(self) -> list[Person]:
        """Everyone, disabled people too, by name."""
        return self._store.people()

    def get(self, name: str) -> Person:
        """The person called ``name``; :class:`AccessError` if there is none."""
        person = self._store.person(name)
        if person is None:
            raise AccessError(
                name.strip(), "is not in people", "see them with hitl-vault people list"
            )
        return person

    def add(
        self, name: str, uids: Iterable[int] = (), notify: Iterable[str] = (), *, now: datetime
    ) -> Change:
        """Add a person. Refused: a name taken by a person or by a live agent token, root's
        uid, the owner's, or a uid that is another person's already."""
        name = check_name(name)
        known = self._store.person(name)
        if known is not None:
            raise AccessError(
                name,
                f"is in people already (as {known.name})",
                f"change them with hitl-vault people set {quote(known.name)}",
            )
        agents = [
            c
            for c in self._store.credentials(name)
            if c.role is Role.AGENT and c.revoked is None and c.live(now)
        ]
        if agents:
            raise AccessError(
                name,
                f"is the name of an agent's token ({agents[0].id}), and a person's name is theirs "
                "alone",
                f"choose another name, or revoke its tokens: hitl-vault token revoke {quote(name)}",
            )
        person = Person(name, self._uids(uids), self._urls(notify, name), created=now, changed=now)
        self._check_uids(person)
        self._store.save_person(person, now, self._by, "person added")
        body = (
            f"{self._by} added you ({name}) to the people of this hitl-vault service at "
            f"{format_ts(now)}: OS users {_uids_text(person.uids)}, channels "
            f"{_kinds(person.notify)}. Decisions made in your name will be told here."
        )
        told = self._tell(person.notify, "hitl-vault: you were added to people", body)
        return Change(self._stored(name), "person added", told)

    def set(
        self,
        name: str,
        uids: Iterable[int] | None = None,
        notify: Iterable[str] | None = None,
        *,
        enable: bool = False,
        now: datetime,
    ) -> Change:
        """Replace a person's uids and/or channels (those given), and enable them again if
        ``enable``; told to the old channels and the new."""
        old = self.get(name)
        if uids is None and notify is None and not enable:
            raise UsageError("people set", "nothing to change", "give --uid, --notify or --enable")
        new = replace(
            old,
            uids=old.uids if uids is None else self._uids(uids),
            notify=old.notify if notify is None else self._urls(notify, old.name),
            disabled=old.disabled and not enable,
        )
        if new == old:
            raise UsageError("people set", f"{old.name} is like this already", "nothing to do")
        self._check_uids(new)
        event = "person enabled" if old.disabled and not new.disabled else "person changed"
        with self._store.batch():
            self._store.save_person(new, now, self._by, event)
            if event == "person enabled":  # the links made before they were disabled stay dead
                links.end(self._store, new.name, now=now, by=self._by)
        lines = [f"{self._by} changed your entry ({old.name}) at {format_ts(now)}:"]
        if new.uids != old.uids:
            lines.append(f"OS users were {_uids_text(old.uids)}, now {_uids_text(new.uids)}")
        if new.notify != old.notify:
            lines.append(f"channels were {_kinds(old.notify)}, now {_kinds(new.notify)}")
        if event == "person enabled":
            lines.append(
                "you are enabled again (tokens revoked before stay revoked, and decision "
                "links sent before stay dead)"
            )
        channels = dict.fromkeys([*old.notify, *new.notify])
        told = self._tell(channels, "hitl-vault: your entry in people changed", "\n".join(lines))
        return Change(self._stored(old.name), event, told)

    def disable(self, name: str, *, now: datetime) -> Change:
        """Disable a person and end, in the same write, every token and session of theirs."""
        old = self.get(name)
        if old.disabled:
            raise AccessError(
                old.name,
                "is disabled already",
                f"enable them again with hitl-vault people set {quote(old.name)} --enable",
            )
        new = replace(old, disabled=True)
        with self._store.batch():
            self._store.save_person(new, now, self._by, "person disabled")
            revoked, ended = _end_access(self._store, new, now, self._by)
        body = (
            f"{self._by} disabled you ({old.name}) at {format_ts(now)}: {revoked} token(s) "
            f"revoked, {ended} session(s) signed out. Nothing can be decided in your name "
            "through the service any more."
        )
        told = self._tell(old.notify, "hitl-vault: you were disabled", body)
        return Change(self._stored(old.name), "person disabled", told, revoked, ended)

    # --- checks and telling -----------------------------------------------------------

    def _stored(self, name: str) -> Person:
        person = self._store.person(name)
        assert person is not None, "saved just now"
        return person

    def _uids(self, uids: Iterable[int]) -> tuple[int, ...]:
        kept = tuple(dict.fromkeys(uids))
        for uid in kept:
            if type(uid) is not int or not 0 <= uid <= UID_MAX:
                raise UsageError("--uid", f"{uid!r} is not a user id", "give a number like 1001")
        return kept

    def _anyone(self) -> dict[int, str]:
        """The uids that can act as anyone on the vault, each with what it is."""
        anyone = {self._owner: "the uid of the service's owner (running this command)"}
        if self._vault is not None:
            with contextlib.suppress(OSError):  # no folder: opening the vault says so
                anyone[self._vault.stat().st_uid] = f"the uid that owns the vault ({self._vault})"
        recorded = service_uid(self._store)
        if recorded is not None:
            anyone[recorded] = "the uid the service runs as (recorded by hitl-vault serve)"
        anyone[0] = "root"
        return anyone

    def _check_uids(self, person: Person) -> None:
        """Refuse a uid that can act as anyone on the vault, and, unless ``person`` is
        disabled, a uid another enabled person has (enabling a person checks again)."""
        anyone = self._anyone()
        for uid in person.uids:
            if uid == 0:
                raise UsageError(
                    "--uid",
                    "0 is root, who can act as anyone: a decision from root proves no person",
                    "give the person's own uid",
                )
            if uid in anyone:
                raise UsageError(
                    "--uid",
                    f"{uid} is {anyone[uid]}, who can act as anyone on the vault: a decision "
                    "from it proves no person",
                    "give the person's own uid (run the service as a user of its own)",
                )
        if person.disabled:
            return  # checked again when they are enabled
        for other in self._store.people():
            shared = sorted(set(other.uids) & set(person.uids))
            if other.disabled or same_name(other.name) == same_name(person.name) or not shared:
                continue
            raise AccessError(
                person.name,
                f"uid {shared[0]} is {other.name}'s already",
                f"take it from them first: hitl-vault people set {quote(other.name)} --uid ...",
            )

    def _shared(self) -> tuple[str, ...]:
        """The ``notify:`` targets' URLs in the vault's rules file (none when it has none,
        or cannot be read: the daemon says why)."""
        if self._vault is None:
            return ()
        try:
            text = rules_text(self._vault / RULES_FILE, RULES_FILE) or ""
            return tuple(target.url for target in read_notify_config(text).targets)
        except VaultError:
            return ()

    def _urls(self, urls: Iterable[str], name: str) -> tuple[str, ...]:
        """``name``'s channels as given, each checked: an Apprise URL, and theirs alone (not
        a ``notify:`` target, not another person's: their decision links would land there)."""
        kept = tuple(dict.fromkeys(url.strip() for url in urls))
        shared, people = self._shared(), self._store.people()
        for url in kept:
            scheme = SCHEME.match(url)
            if scheme is None:
                raise UsageError(
                    "--notify",
                    f'"{mask_url(url)}" is not a URL',
                    "write an Apprise URL like ntfy://ntfy.sh/my-topic or mailto://…",
                )
            problem = url_problem(url, scheme.group(1))
            if problem is not None:
                raise UsageError("--notify", f'"{mask_url(url)}" {problem[0]}', problem[1])
            also = clash(url, name, shared, people)
            if also:
                raise UsageError(
                    "--notify",
                    f'"{mask_url(url)}" is {also}: {name}\'s decision links there would reach '
                    "whoever reads it",
                    f"give {name} a channel of their own: a topic or an address only they read",
                )
        return kept

    def tell(self, person: Person, title: str, body: str) -> tuple[Told, ...]:
        """Tell ``person`` something on their own channels, best effort (a sign-in, say);
        what happened at each."""
        return self._tell(person.notify, title, body)

    def _tell(self, urls: Iterable[str], title: str, body: str) -> tuple[Told, ...]:
        """Send the message to each URL, best effort; what happened at each."""
        message = Message(title, body + "\nIf you did not expect this, tell the service's owner.")
        told = []
        for url in urls:
            missing = sorted({n for n in placeholders(url) if not self._env.get(n)})
            if missing:
                error: str | None = f"needs {', '.join(missing)}, which is not set"
            else:
                error = self._send(PLACEHOLDER.sub(lambda m: self._env[m.group(1)], url), message)
            told.append(Told(mask_url(url), error))
        return tuple(told)
