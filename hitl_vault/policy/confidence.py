"""Rules on the requester's own ``confidence`` (0 to 1): a ``confidence:`` condition takes
the comparisons params numbers take (``"< 0.5"``), and may only ask or block.

The requester asserts its confidence, so it can never earn an allow: an allow rule with
a ``confidence:`` condition is refused when the rules file is read. A request that gave
no confidence matches no ``confidence:`` condition. Pure: no I/O.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .conditions import Condition

if TYPE_CHECKING:
    from .rules import Decision

ALLOW_FIX = (
    "use decision: ask or block with a confidence condition (the requester asserts its "
    "confidence, so it never allows), or remove confidence from this rule"
)


def confidence_holds(condition: Condition | None, confidence: float | None) -> bool:
    """Whether a rule's ``confidence:`` condition (None: it has none) holds for a proposal
    with this confidence; a proposal with none matches no condition."""
    if condition is None:
        return True
    return confidence is not None and condition.holds(confidence)


def confidence_problem(decision: Decision, condition: Condition | None, rule: str) -> str | None:
    """Why a rule with this decision cannot match confidence, or None when it may."""
    if condition is None or str(decision) != "allow":
        return None
    return f"rule {rule} says allow on a confidence condition, which the requester asserts"
