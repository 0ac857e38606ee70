"""Rules on the requester's own ``confidence`` (0 to 1): a ``confidence:`` condition takes
the comparisons params numbers take (``"< 0.5"``), and may only ask or block.

The requester asserts its confidence, so it can never earn an allow: an allow rule with
a ``confidence:`` condition is refused when the rules file is read. A request that gave
no confidence matches no ``confidence:`` condition. Pure: no I/O.
"""

from __future__ import annotations

from typing import Protocol, TypeVar

from ..errors import RulesError
from .conditions import Condition

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


class _Rule(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def decision(self) -> str: ...
    @property
    def confidence(self) -> Condition | None: ...
    @property
    def line(self) -> int: ...
    @property
    def python(self) -> object: ...


class _Policy(Protocol):
    @property
    def rules(self) -> tuple[_Rule, ...]: ...
    @property
    def source(self) -> str: ...


P = TypeVar("P", bound=_Policy)


def checked_confidence(policy: P) -> P:
    """The policy, once no rule that may allow (an allow rule, or a ``python:`` rule, whose
    function may answer allow) has a ``confidence:`` condition; RulesError naming the file,
    the rule's line and the fix for the first that has one."""
    for rule in policy.rules:
        if rule.confidence is not None and (rule.decision == "allow" or rule.python is not None):
            problem = f"rule {rule.name} allows on confidence, which the requester asserts"
            raise RulesError(policy.source, problem, ALLOW_FIX, rule.line or None)
    return policy
