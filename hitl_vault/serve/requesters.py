"""Names that channels other than the service write as ``requested_by``, which an agent
token must not hold.

An agent token sees, waits on and cancels the requests whose ``requested_by`` is its
name. Other channels write that field too, with no credential behind it: the Inbox
(``inbox``, or what a dropped note says), ``hitl-vault mcp`` (``mcp``, ``mcp:CLIENT``), the
local gate (``AGENT:SESSION``) and the CLI (``--by``, else the OS user). An agent token
holding one of those names would see (params and all) and could cancel every request that
channel makes. The service refuses such a token its requests (403, with the fix), so it
is of no use, whatever ``token add`` let through. What this cannot tell apart is an Inbox
note or ``submit --by NAME`` that names an existing agent on purpose: that needs the
store to record which credential asked for a request.
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
    """Why an agent named ``name`` would see requests other channels make, or None."""
    kept = same_name(name)
    if kept in CHANNELS:
        return f"{kept!r} is what a channel other than the service writes as requested_by"
    if ":" in kept:
        return "a name with ':' is the form the local gate and hitl-vault mcp write"
    if kept in _os_users():
        return "it is the OS user's name, which `hitl-vault submit` writes without --by"
    return None
