"""Conditions a rule sets on params (``amount: "< 500"``, ``re:``, lists), and which actions
it covers. Pure: no I/O, nothing about files.

A number condition (a comparison, or a plain number) compares numbers: an int or a float,
negative ones too (-100 is below 500), never a bool. Text that reads as a number
(``"499"``, ``" 4.99e2 "``) is not sure to be that number for the program that will run
the action, so it may only make the decision stricter: each ``holds`` takes ``allowing``
(the rule would allow the action), and then such text never meets a number condition (a
``re:`` condition matches text as text all the same); for an ask or block rule it is
compared as the number it reads as, so sending a number as text escapes no stricter rule.
A match that held only so is marked, and ``defaults.min_risk`` never turns it into an
allow (see :meth:`hitl_vault.policy.rules.Policy.applied`).
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

_NUMBER_RE = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")
# Two-character operators first, so "<=" is not read as "<" followed by "=".
OPERATORS: Mapping[str, Callable[[Any, Any], Any]] = MappingProxyType(
    {
        "<=": operator.le,
        ">=": operator.ge,
        "==": operator.eq,
        "!=": operator.ne,
        "<": operator.lt,
        ">": operator.gt,
    }
)


def as_number(value: Any) -> int | float | None:
    """A number, or a string that reads as one; None otherwise (a bool is not a number)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and _NUMBER_RE.fullmatch(text := value.strip()):
        if text.lstrip("+-").isdigit():
            try:
                return int(text)
            except ValueError:  # over Python's 4,300 digits: a float keeps its size and sign
                return float(text)
        return float(text)
    return None


def real_number(value: Any) -> int | float | None:
    """The value if it is an int or a float (not a bool), else None."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    return None


def as_text(value: Any) -> str | None:
    """A scalar as YAML would show it (bools as true/false); None for lists and mappings."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, Mapping | list | tuple | set | frozenset):
        return None
    return str(value)


@dataclass(frozen=True)
class Equals:
    """A plain value: the param equals it (a bool never equals a number; a param "1500"
    equals 1500 only for a rule that does not allow, see the module's docstring)."""

    value: Any

    def holds(self, actual: Any, allowing: bool = False) -> bool:
        expected = self.value
        if isinstance(expected, bool) or isinstance(actual, bool):
            return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
        if isinstance(expected, int | float) or isinstance(actual, int | float):
            left = as_number(expected)
            right = real_number(actual) if allowing else as_number(actual)
            return left is not None and right is not None and left == right
        return bool(expected == actual)

    def describe(self, name: str) -> str:
        return f"{name} = {as_text(self.value)}"


@dataclass(frozen=True)
class Compare:
    """``"< 500"`` and friends: the param must be a number (for a rule that does not allow,
    text that reads as one counts too) and compare so."""

    op: str
    number: int | float
    written: str = field(default="", compare=False)

    def holds(self, actual: Any, allowing: bool = False) -> bool:
        value = real_number(actual) if allowing else as_number(actual)
        return value is not None and bool(OPERATORS[self.op](value, self.number))

    def describe(self, name: str) -> str:
        return f"{name} {self.op} {self.written or self.number}"


@dataclass(frozen=True)
class Matches:
    """``"re:<regex>"``: the param, as text, must match the whole pattern."""

    pattern: re.Pattern[str]

    def holds(self, actual: Any, allowing: bool = False) -> bool:
        text = as_text(actual)
        return text is not None and self.pattern.fullmatch(text) is not None

    def describe(self, name: str) -> str:
        return f"{name} matching re:{self.pattern.pattern}"


@dataclass(frozen=True)
class AnyOf:
    """A list in the rules file: any one of its conditions is enough."""

    options: tuple[Condition, ...]

    def holds(self, actual: Any, allowing: bool = False) -> bool:
        return any(option.holds(actual, allowing) for option in self.options)

    def describe(self, name: str) -> str:
        values = [as_text(o.value) for o in self.options if isinstance(o, Equals)]
        if len(values) == len(self.options):
            return f"{name} in [{', '.join(str(v) for v in values)}]"
        return "(" + " or ".join(o.describe(name) for o in self.options) + ")"


Condition = Equals | Compare | Matches | AnyOf


@dataclass(frozen=True)
class ActionMatcher:
    """Which actions a rule applies to: any of these names, or a full match of any pattern."""

    names: frozenset[str] = frozenset()
    patterns: tuple[re.Pattern[str], ...] = ()

    def matches(self, action: str) -> bool:
        return action in self.names or any(p.fullmatch(action) for p in self.patterns)


INSIDE_PROJECT = "inside-project"


@dataclass(frozen=True)
class Where:
    """Where a tool call works, as the gate resolved it: the project (the call's folder)
    and every path the call names, each absolute with links followed and ``..`` taken (a
    path that may land in two places, as the kernel and as a path-tidying agent open it,
    is here twice). The gate finds these; the rules only compare them."""

    project: str
    paths: tuple[str, ...] = ()


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


@dataclass(frozen=True)
class PathCondition:
    """``path:`` on a rule: ``inside-project`` (every path the call names lands inside its
    project; a call that names none works in its folder) or ``"re:<regex>"`` (some path
    it names, resolved, full-matches). Only a call through the gate has a :class:`Where`:
    anywhere else (submit, MCP, ``rules check``, re-checking an approval) it never holds."""

    inside_project: bool = False
    pattern: re.Pattern[str] | None = None

    def holds(self, where: Where | None) -> bool:
        if where is None:
            return False
        if self.inside_project:
            return all(_under(p, where.project) for p in where.paths)
        return self.pattern is not None and any(self.pattern.fullmatch(p) for p in where.paths)

    def describe(self) -> str:
        if self.inside_project:
            return "every path inside the project"
        return f"a path matching re:{self.pattern.pattern if self.pattern else ''}"
