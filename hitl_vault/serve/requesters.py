"""Names that channels other than the service write as ``requested_by``, which an agent
token must not hold.

Which requests an agent sees is settled by the store: those a token of its name asked
for (the request keeps the token's id), never one that merely names it, so an Inbox note
or ``submit --by NAME`` naming an agent shows nothing to that agent. A token's name is
still its requests' ``requested_by``, though, and other channels write that field too,
with no credential behind it: the Inbox (``inbox``, or what a dropped note says),
``hitl-vault mcp`` (``mcp``, ``mcp:CLIENT``), the local gate (``AGENT:SESSION``) and the
CLI (``--by``, else the OS user). An agent token holding one of those names would ask in
that channel's name: a person reads its requests as the Inbox's or the owner's, Python
rules take them for that channel's, and an "always" allow given to a local gate session
(``approve --always --session``) would let its calls through. The service refuses such
a token everything (403, with the fix), whatever ``token add`` let through.
"""

from __future__ import annotations

import functools

from ..identity import same_name

# The requesters other channels write (``daemon/inbox.py``, ``agents/mcp_server.py``,
# ``policy/intake.py``'s fallback).
CHANNELS = ("inbox", "mcp", "unknown")


@functools.cache
def _os_users() -> frozenset[str]:
    """The service's OS user, as its uid names it and as $USER says: the CLI's requester
    when ``submit`` is given no ``--by``."""
    from ..access.names import os_user
    from ..policy.intake import default_user

    return frozenset({same_name(os_user()), same_name(default_user())})


def shared(name: str) -> str | None:
    """Why an agent named ``name`` would ask in the name another channel writes, or None."""
    kept = same_name(name)
    if kept in CHANNELS:
        return f"{kept!r} is what a channel other than the service writes as requested_by"
    if ":" in kept:
        return "a name with ':' is the form the local gate and hitl-vault mcp write"
    if kept in _os_users():
        return "it is the OS user's name, which `hitl-vault submit` writes without --by"
    return None
