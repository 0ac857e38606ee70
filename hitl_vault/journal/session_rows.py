"""How the web inbox's sign-in links and sessions are written down in the service log,
shared by both stores: what each line says (an id made from the secret's hash, never the
secret or the hash whole)."""

from __future__ import annotations

from ..identity import Session, SignInLink
from ..times import format_ts

LINK_MADE = "sign-in link made"
SIGNED_IN = "signed in"
SESSION_ENDED = "session ended"


def link_details(link: SignInLink) -> tuple[str, ...]:
    """A new sign-in link: which one (the first 12 hex digits of its hash), until when."""
    return (f"link {link.key[:12]}", f"expires {format_ts(link.expires)}")


def session_details(session: Session) -> tuple[str, ...]:
    """A sign-in: the session, how they signed in, from where, until when."""
    where = (f"from {session.client}",) if session.client else ()
    return (
        f"session {session.id}",
        f"with {session.how}",
        *where,
        f"expires {format_ts(session.expires)}",
    )


def end_details(session: Session, why: str) -> tuple[str, ...]:
    """A session's end: which one, and why (signed out, the person disabled)."""
    return (f"session {session.id}", *((why,) if why else ()))
