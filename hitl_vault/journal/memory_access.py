"""The in-memory journal's people, credentials, settings and service log (as
:class:`~.sqlite_access.Access` keeps them in SQLite): each change one write with its
service-log entry; marking a credential used wakes no one and logs nothing."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime

from ..chain import GENESIS, RECORDER_UID
from ..errors import DuplicateError
from ..identity import Credential, Person, same_name
from ..store import ServiceEntry
from .memory_state import Memory, State, opt_ts, ts
from .service_chain import (
    ServiceRow,
    credential_details,
    expected_state,
    person_details,
    revocation_details,
    service_problems,
    state_problems,
)


def _stored(c: Credential) -> Credential:
    """A credential as stored: times to the second, actions as a tuple."""
    actions = None if c.actions is None else tuple(c.actions)
    return replace(
        c,
        created=ts(c.created),
        expires=opt_ts(c.expires),
        revoked=opt_ts(c.revoked),
        last_used=opt_ts(c.last_used),
        actions=actions,
    )


class MemoryAccess:
    """The people, credentials, settings and service log of
    :class:`~hitl_vault.testing.MemoryJournal`, on the memory it is handed."""

    def __init__(self, memory: Memory) -> None:
        self._m = memory

    # --- the service log --------------------------------------------------------------------

    def _log(
        self, s: State, at: datetime, by: str, event: str, subject: str, details: tuple[str, ...]
    ) -> ServiceEntry:
        prev = s.service[-1].hash if s.service else GENESIS
        s.service_seq += 1
        row = ServiceRow.make(s.service_seq, prev, at, by, event, subject, details, RECORDER_UID)
        s.service.append(row)
        return row.entry()

    def log_service(
        self, at: datetime, by: str, event: str, subject: str, details: tuple[str, ...] = ()
    ) -> ServiceEntry:
        with self._m.write() as s:
            return self._log(s, at, by, event, subject, tuple(details))

    def service_log(self, limit: int | None = None) -> list[ServiceEntry]:
        with self._m.lock:
            newest = self._m.state.service[::-1]
        return [row.entry() for row in (newest if limit is None else newest[:limit])]

    def service_problems(self) -> list[str]:
        """Every break in the service log's chain, and every person, credential and setting
        that is not what the log says (see :func:`.service_chain.state_problems`)."""
        with self._m.lock:
            s = self._m.state
            rows = list(s.service)
            problems = service_problems(rows, s.service_seq)
            people, credentials, settings = dict(s.people), dict(s.credentials), dict(s.settings)
        keys = [(k, p.name) for k, p in people.items() if k != same_name(p.name)]
        problems += [f"person {name}: kept under another name's key ({k})" for k, name in keys]
        return problems + state_problems(expected_state(rows), people, credentials, settings)

    # --- people ---------------------------------------------------------------------------

    def person(self, name: str) -> Person | None:
        with self._m.lock:
            return self._m.state.people.get(same_name(name))

    def people(self) -> list[Person]:
        with self._m.lock:
            return [p for _, p in sorted(self._m.state.people.items())]

    def save_person(self, person: Person, at: datetime, by: str, event: str) -> None:
        key = same_name(person.name)
        with self._m.write() as s:
            known = s.people.get(key)
            created = known.created if known is not None else ts(person.created or at)
            s.people[key] = replace(
                person,
                uids=tuple(person.uids),
                notify=tuple(person.notify),
                created=created,
                changed=ts(at),
            )
            self._log(s, at, by, event, person.name, person_details(person))

    # --- credentials ----------------------------------------------------------------------

    def credentials(self, name: str | None = None) -> list[Credential]:
        key = None if name is None else same_name(name)
        with self._m.lock:
            found = [
                c
                for c in self._m.state.credentials.values()
                if key is None or same_name(c.name) == key
            ]
        return sorted(found, key=lambda c: c.created)  # stable: oldest first, then as added

    def credential(self, credential_id: str) -> Credential | None:
        with self._m.lock:
            return self._m.state.credentials.get(credential_id)

    def add_credential(self, credential: Credential, at: datetime, by: str) -> None:
        with self._m.write() as s:
            if credential.id in s.credentials:
                raise DuplicateError(f"credential {credential.id}")
            s.credentials[credential.id] = _stored(replace(credential, last_used=None))
            self._log(s, at, by, "token added", credential.name, credential_details(credential))

    def revoke_credentials(self, ids: Iterable[str], at: datetime, by: str, why: str) -> int:
        revoked = 0
        with self._m.write() as s:
            for credential_id in dict.fromkeys(ids):
                c = s.credentials.get(credential_id)
                if c is None or c.revoked is not None:
                    continue
                s.credentials[credential_id] = replace(c, revoked=ts(at))
                details = revocation_details(s.credentials[credential_id], why)
                self._log(s, at, by, "token revoked", c.name, details)
                revoked += 1
        return revoked

    def credential_used(self, credential_id: str, at: datetime) -> None:
        with self._m.lock:  # not a write: nothing to undo, no one to wake
            c = self._m.state.credentials.get(credential_id)
            if c is not None:
                self._m.state.credentials[credential_id] = replace(c, last_used=ts(at))

    # --- settings -------------------------------------------------------------------------

    def setting(self, name: str) -> str | None:
        with self._m.lock:
            return self._m.state.settings.get(name)

    def set_setting(self, name: str, value: str, at: datetime, by: str) -> bool:
        with self._m.write() as s:
            old = s.settings.get(name)
            if old == value:
                return False
            s.settings[name] = value
            was = f"was {old}" if old is not None else "was not set"
            self._log(s, at, by, "setting changed", name, (was, f"now {value}"))
        return True
