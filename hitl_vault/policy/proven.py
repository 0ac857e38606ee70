"""Which rules trust a name someone wrote: those that count several approvals without
``authenticated:``. ``serve`` warns about them when it starts.

Under such a rule, a note edit, a ``votes:`` line, ``--by NAME`` or a script's
``Vault.approve(by=...)`` each count as the person named, so whoever can write the
vault (or run code as its owner) can meet a quorum alone, in several names.
"""

from __future__ import annotations

from .rules import Policy

_WHY = (
    "anyone who can write the vault or run code as its owner can vote in any name there "
    "(a note, --by, a script)"
)


def unauthenticated(policy: Policy) -> list[str]:
    """One sentence per rule (or the defaults) with a quorum or stages that does not say
    ``authenticated:``, with the fix; [] when the defaults say it for every rule."""
    defaults = policy.defaults
    if defaults.authenticated is not None:
        return []
    found: list[str] = []
    fix = "add authenticated: true to it (or to defaults) to count only proven approvals"
    if defaults.quorum is not None and defaults.quorum > 1:
        found.append(
            f"{policy.source}: defaults ask for {defaults.quorum} approvals (quorum) without "
            f"authenticated: true: {_WHY}; add authenticated: true under defaults"
        )
    for rule in policy.rules:
        if rule.authenticated is not None:
            continue
        if rule.stages:
            what = f"{len(rule.stages)} stage{'s' if len(rule.stages) > 1 else ''} of approvals"
        elif rule.quorum is not None and rule.quorum > 1:
            what = f"{rule.quorum} approvals (quorum)"
        else:
            continue
        found.append(
            f"{policy.source} line {rule.line}: rule {rule.name} asks for {what} without "
            f"authenticated: true: {_WHY}; {fix}"
        )
    return found
