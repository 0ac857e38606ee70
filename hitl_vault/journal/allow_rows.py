"""How an "always" allow is written down: the service-log lines that record it, shared by
both stores (the allow itself is :class:`~hitl_vault.policy.always.Allow`)."""

from __future__ import annotations

from ..policy.always import Allow
from ..times import format_ts


def allow_details(allow: Allow) -> tuple[str, ...]:
    """What the service log says of a new allow: what it lets through, for whom, until when."""
    details = [allow.describe(), f"until {format_ts(allow.until)}", f"from {allow.request_id}"]
    if allow.session is not None:
        details.append(f"only for {allow.session}")
    return tuple(details)
