"""The service log's hash chain, shared by every store: each entry's hash covers its fields
and the entry before it (as the requests' entries, :mod:`hitl_vault.chain`), so a change
to people, credentials or settings edited or removed after it was logged shows in
``verify_chain``. Pure, no I/O; also what a person's and a credential's log lines say."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

from ..chain import GENESIS, entry_hash
from ..identity import Credential, Person
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


def person_details(person: Person) -> tuple[str, ...]:
    """A person's log line: uids, the kinds of channels, and whether disabled."""
    uids = " ".join(str(uid) for uid in person.uids) or "none"
    details = (f"uids {uids}", f"channels {channel_kinds(person.notify)}")
    return (*details, "disabled") if person.disabled else details


def credential_details(credential: Credential) -> tuple[str, ...]:
    """A credential's log line: its id, role, actions and expiry (never its hash)."""
    expires = format_ts(credential.expires) if credential.expires else "never"
    actions = ",".join(credential.actions) if credential.actions is not None else "any"
    return (
        f"id {credential.id}",
        f"role {credential.role}",
        f"actions {actions}",
        f"expires {expires}",
    )
