"""The service log's hash chain, shared by every store: each entry's hash covers its fields
and the entry before it (as the requests' entries, :mod:`hitl_vault.chain`), so a change
to people, credentials or settings edited or removed after it was logged shows in
``verify_chain``. Pure, no I/O; also what a person's and a credential's log lines say.

Each change to a person or a credential logs the SHA-256 of the whole row as written
(``row <hex>``: a hash, so neither a secret's hash nor a channel's URL is in the log), and
each change to a setting its new value. :func:`expected_state` replays the log into the
people, credentials and settings it says there are; :func:`state_problems` holds the
store's tables against that, so a row edited, added or removed behind the log's back
shows in ``verify_chain`` too (a credential's ``last_used`` is outside, by design).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from ..chain import GENESIS, entry_hash
from ..identity import Credential, Person, same_name
from ..store import ServiceEntry
from ..times import format_ts, parse_ts


@dataclass(frozen=True)
class ServiceRow:
    """One service-log entry as stored: its fields as text, and its place in the chain."""

    seq: int
    at: str
    by: str
    event: str
    subject: str
    details: str  # a JSON list of strings
    prev_hash: str
    hash: str
    uid: int | None = None

    @staticmethod
    def make(
        seq: int,
        prev: str,
        at: datetime,
        by: str,
        event: str,
        subject: str,
        details: tuple[str, ...],
        uid: int | None,
    ) -> ServiceRow:
        """The next row after the one whose hash is ``prev``."""
        fields = (format_ts(at), by, event, subject, json.dumps(list(details), ensure_ascii=False))
        return ServiceRow(seq, *fields, prev, entry_hash(prev, fields, uid), uid)

    def intact(self) -> bool:
        """Its content still matches the hash it was written with."""
        fields = (self.at, self.by, self.event, self.subject, self.details)
        return entry_hash(self.prev_hash, fields, self.uid) == self.hash

    def entry(self) -> ServiceEntry:
        """What the log shows of it (ValueError for a row hitl-vault did not write)."""
        details = json.loads(self.details)
        if not isinstance(details, list) or not all(isinstance(d, str) for d in details):
            raise ValueError(f"service log entry {self.seq}: details are not a list of text")
        return ServiceEntry(
            self.seq, parse_ts(self.at), self.by, self.event, self.subject, (*details,)
        )


def service_problems(rows: Iterable[ServiceRow], last_seq: int) -> list[str]:
    """Every break in the service log (all of ``rows``, in order), as a sentence naming the
    entry; ``last_seq``: the highest position ever given out, so a removed newest entry
    shows too. [] when intact."""
    problems: list[str] = []
    prev, expected = GENESIS, 1
    for row in rows:
        if row.seq != expected or row.prev_hash != prev:
            problems.append(
                f"service log entry {row.seq} ({row.event} {row.subject}): does not follow the "
                "entry before it (an entry was removed or inserted)"
            )
        if not row.intact():
            problems.append(
                f"service log entry {row.seq} ({row.event} {row.subject}): its content does "
                "not match its hash (it was edited after it was written)"
            )
        prev, expected = row.hash, row.seq + 1
    if last_seq >= expected:
        which = f"entry {last_seq}" if last_seq == expected else f"entries {expected}-{last_seq}"
        problems.append(f"service log {which}: missing (removed after it was written)")
    return problems


def channel_kinds(urls: Iterable[str]) -> str:
    """What a log line says of notification URLs: their kinds only (``json, tgram``), never
    the URLs, which may hold a token."""
    kinds = [urlsplit(url).scheme or "?" for url in urls]
    return ", ".join(kinds) if kinds else "none"


ROW = "row "  # the detail that holds a row's hash: ``row <64 hex digits>``


def _sha(values: list[object]) -> str:
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def person_row(person: Person) -> str:
    """The SHA-256 of a person's row as written: name, uids, channels' URLs, disabled (not
    when it was created or changed, which say nothing about what the person may do)."""
    return _sha([person.name, list(person.uids), list(person.notify), bool(person.disabled)])


def _opt(value: datetime | None) -> str | None:
    return None if value is None else format_ts(value)


def credential_row(credential: Credential) -> str:
    """The SHA-256 of a credential's row as written: id, name, role, the secret's hash,
    created, expiry, actions, revoked (never ``last_used``, which no log entry covers)."""
    c = credential
    actions = None if c.actions is None else list(c.actions)
    return _sha(
        [c.id, c.name, str(c.role), c.secret_sha, format_ts(c.created), _opt(c.expires),
         actions, _opt(c.revoked)]
    )  # fmt: skip


def person_details(person: Person) -> tuple[str, ...]:
    """A person's log line: uids, the kinds of channels, whether disabled, and the row's hash
    (which covers the URLs without showing them)."""
    uids = " ".join(str(uid) for uid in person.uids) or "none"
    disabled = ("disabled",) if person.disabled else ()
    return (
        f"uids {uids}",
        f"channels {channel_kinds(person.notify)}",
        *disabled,
        ROW + person_row(person),
    )


def credential_details(credential: Credential) -> tuple[str, ...]:
    """A credential's log line: its id, role, actions, expiry, and the row's hash (which
    covers the secret's hash without showing it)."""
    expires = format_ts(credential.expires) if credential.expires else "never"
    actions = ",".join(credential.actions) if credential.actions is not None else "any"
    return (
        f"id {credential.id}",
        f"role {credential.role}",
        f"actions {actions}",
        f"expires {expires}",
        ROW + credential_row(credential),
    )


def revocation_details(revoked: Credential, why: str) -> tuple[str, ...]:
    """A revocation's log line: the id, why, and the hash of the row as revoked."""
    reason = (why,) if why else ()
    return (f"id {revoked.id}", *reason, ROW + credential_row(revoked))


@dataclass
class Expected:
    """The people, credentials and settings the service log says there are: each person's
    row hash by the name as compared, each credential's by id, each setting's value."""

    people: dict[str, tuple[str, str]] = field(default_factory=dict)  # key: (name, row hash)
    credentials: dict[str, tuple[str, str]] = field(default_factory=dict)  # id: (name, hash)
    settings: dict[str, str] = field(default_factory=dict)


def _details(row: ServiceRow) -> list[str]:
    try:
        details = json.loads(row.details)
    except ValueError:
        return []  # the chain's check names the entry
    return [d for d in details if isinstance(d, str)] if isinstance(details, list) else []


def expected_state(rows: Iterable[ServiceRow]) -> Expected:
    """Replay the service log (all of ``rows``, in order) into the state it says there is.

    Only entries a change wrote count: a person's or a token's with a ``row`` hash (what
    :meth:`log_service` records by itself, an ``auth failed`` summary, changes no table),
    and ``setting changed`` with its ``now`` value."""
    expected = Expected()
    for row in rows:
        details = _details(row)
        hashes = [d[len(ROW) :] for d in details if d.startswith(ROW)]
        if row.event.startswith("person ") and hashes:
            expected.people[same_name(row.subject)] = (row.subject, hashes[-1])
        elif row.event.startswith("token ") and hashes:
            ids = [d[len("id ") :] for d in details if d.startswith("id ")]
            if ids:
                expected.credentials[ids[0]] = (row.subject, hashes[-1])
        elif row.event == "setting changed":
            now = [d[len("now ") :] for d in details if d.startswith("now ")]
            if now:
                expected.settings[row.subject] = now[-1]
    return expected


def state_problems(
    expected: Expected,
    people: Mapping[str, Person],
    credentials: Mapping[str, Credential],
    settings: Mapping[str, str],
) -> list[str]:
    """Every row of the store's tables that is not what the service log says it is: changed,
    added or removed outside hitl-vault, as a sentence naming it. ``people`` by the name as
    compared, ``credentials`` by id."""
    problems: list[str] = []
    outside = "(changed outside hitl-vault: check who can write the store)"
    for key, person in people.items():
        logged = expected.people.get(key)
        if logged is None:
            problems.append(f"person {person.name}: not in the service log {outside}")
        elif logged[1] != person_row(person):
            problems.append(
                f"person {person.name}: differs from the service log's last entry for them "
                f"{outside}"
            )
    for key, (name, _) in expected.people.items():
        if key not in people:
            problems.append(f"person {name}: in the service log but gone from the store {outside}")
    for credential_id, c in credentials.items():
        logged = expected.credentials.get(credential_id)
        if logged is None:
            problems.append(f"token {credential_id} ({c.name}): not in the service log {outside}")
        elif logged[1] != credential_row(c):
            problems.append(
                f"token {credential_id} ({c.name}): differs from the service log's last entry "
                f"for it {outside}"
            )
    for credential_id, (name, _) in expected.credentials.items():
        if credential_id not in credentials:
            problems.append(
                f"token {credential_id} ({name}): in the service log but gone from the store "
                f"{outside}"
            )
    for name in sorted(settings.keys() | expected.settings.keys()):
        if settings.get(name) != expected.settings.get(name):
            problems.append(f"setting {name}: not what the service log last set it to {outside}")
    return problems
