"""Someone's text that claims a decision's channel, marked as such wherever a note shows it."""

from __future__ import annotations

from ..identity import unclaimed_text

# What follows a phrase in someone's text that reads like a proven decision's record.
NOT_A_RECORD = " **(not a record: someone's text)**"


def unclaimed(shown: str) -> str:
    """``shown`` (text from outside, already escaped) with :data:`NOT_A_RECORD` after each
    phrase that claims a channel (``approved by alice via api``, look-alike letters too:
    see :func:`~hitl_vault.identity.channel_claims`): only a ``## History`` line
    hitl-vault writes from the journal says how a decision was made, and someone's text
    that says it too (a summary, a context, a param, a reason) is marked, so nobody
    mistakes it for one. A page that escapes text itself calls
    :func:`~hitl_vault.identity.unclaimed_text` instead."""
    return unclaimed_text(shown, NOT_A_RECORD)
