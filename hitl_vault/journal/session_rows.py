"""How the web inbox's sign-in links and sessions are written down in the service log,
shared by both stores: what each line says (an id made from the secret's hash, never the
secret or the hash whole, and the SHA-256 of the row as written), and the check that holds
the stores' tables against the log, as :mod:`.service_chain` does for people and tokens: a
session or a link written behind the log's back (a way to sign in as anyone) shows in
``verify``. Pure, no I/O."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable

from ..identity import Session, SignInLink
from ..times import format_ts
from .service_chain import ROW, ServiceRow

LINK_MADE = "sign-in link made"
LINK_USED = "sign-in link used"
SIGNED_IN = "signed in"
SESSION_ENDED = "session ended"


def _sha(values: list[object]) -> str:
    text = json.dumps(values, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def link_row(link: SignInLink) -> str:
    """The SHA-256 of a sign-in link's row as written: every column, when it was used too
    (a used link set unused again behind the log's back would sign someone in again)."""
    used = None if link.used is None else format_ts(link.used)
    return _sha([link.key, link.name, format_ts(link.created), format_ts(link.expires), used])


def session_row(session: Session) -> str:
    """The SHA-256 of a session's row as written: every column, its end too."""
    s = session
    ended = None if s.ended is None else format_ts(s.ended)
    return _sha(
        [s.key, s.name, format_ts(s.created), format_ts(s.expires), s.how, s.client, ended,
         s.credential]
    )  # fmt: skip


def link_details(link: SignInLink) -> tuple[str, ...]:
    """A new sign-in link: which one (the first 12 hex digits of its hash), until when."""
    return (f"link {link.key[:12]}", f"expires {format_ts(link.expires)}", ROW + link_row(link))


def used_details(link: SignInLink) -> tuple[str, ...]:
    """A sign-in link used: which one, and the hash of its row as spent."""
    return (f"link {link.key[:12]}", ROW + link_row(link))


def session_details(session: Session) -> tuple[str, ...]:
    """A sign-in: the session, how they signed in, from where, until when."""
    where = (f"from {session.client}",) if session.client else ()
    return (
        f"session {session.id}",
        f"with {session.how}",
        *where,
        f"expires {format_ts(session.expires)}",
        ROW + session_row(session),
    )


def end_details(ended: Session, why: str) -> tuple[str, ...]:
    """A session's end: which one, why (signed out, the person disabled), and the hash of
    its row as ended."""
    return (f"session {ended.id}", *((why,) if why else ()), ROW + session_row(ended))


def _logged(rows: Iterable[ServiceRow], events: tuple[str, ...], word: str) -> dict[str, str]:
    """The last row hash the log gives each link or session (by its id), from ``events``."""
    found: dict[str, str] = {}
    for row in rows:
        if row.event not in events:
            continue
        try:
            details = json.loads(row.details)
        except ValueError:
            continue  # the chain's check names the entry
        if not isinstance(details, list):
            continue
        texts = [d for d in details if isinstance(d, str)]
        ids = [d[len(word) + 1 :] for d in texts if d.startswith(word + " ")]
        hashes = [d[len(ROW) :] for d in texts if d.startswith(ROW)]
        if ids and hashes:
            found[ids[0]] = hashes[-1]
    return found


def session_problems(
    rows: Iterable[ServiceRow], sessions: Iterable[Session], links: Iterable[SignInLink]
) -> list[str]:
    """Every session and sign-in link in the store that is not what the service log
    (all of ``rows``, in order) says, or that the log has and the store lost."""
    rows = list(rows)
    return _compare(
        "session",
        _logged(rows, (SIGNED_IN, SESSION_ENDED), "session"),
        {s.id: (s.name, session_row(s)) for s in sessions},
    ) + _compare(
        "sign-in link",
        _logged(rows, (LINK_MADE, LINK_USED), "link"),
        {k.key[:12]: (k.name, link_row(k)) for k in links},
    )


def _compare(kind: str, logged: dict[str, str], kept: dict[str, tuple[str, str]]) -> list[str]:
    outside = "(changed outside hitl-vault: check who can write the store)"
    problems: list[str] = []
    for short, (name, row) in kept.items():
        if short not in logged:
            problems.append(f"{kind} {short} ({name}): not in the service log {outside}")
        elif logged[short] != row:
            problems.append(
                f"{kind} {short} ({name}): differs from the service log's last entry {outside}"
            )
    for short in sorted(logged.keys() - kept.keys()):
        problems.append(f"{kind} {short}: in the service log but gone from the store {outside}")
    return problems
