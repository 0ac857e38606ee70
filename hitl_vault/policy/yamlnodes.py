"""Reading composed YAML nodes by hand: each value with its line, and every problem as
``file line N: problem (fix)``; what the rules file and the notify targets share."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import yaml
from yaml.constructor import SafeConstructor

from ..errors import RulesError, UsageError
from ..model import Risk
from ..times import parse_duration
from .conditions import as_text
from .rules import Decision

_PYTHON_RE = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*")


def line_of(node: Any) -> int | None:
    """The 1-based line of a YAML node, event or error mark."""
    mark = getattr(node, "start_mark", node)
    return mark.line + 1 if mark is not None else None


def is_null(node: Any) -> bool:
    return isinstance(node, yaml.ScalarNode) and str(node.tag).endswith(":null")


def suggest(word: str, options: Sequence[str]) -> str:
    """A fix for a word that is not one of ``options``: the closest one, and the list."""
    import difflib  # here: only a mistake needs it, and every command reads the rules

    close = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    listing = ", ".join(options)
    return f'did you mean "{close[0]}"? allowed: {listing}' if close else f"use one of: {listing}"


class NodeReader:
    """Reads composed YAML nodes into values, raising RulesError at the offending line
    (the rules file's reader and the notify targets' reader build on it)."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.constructor = SafeConstructor()

    def error(self, node: Any, problem: str, fix: str) -> RulesError:
        return RulesError(self.where, problem, fix, line_of(node))

    # --- values ------------------------------------------------------------------

    def scalar(self, node: Any, what: str, fix: str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            kind = "list" if isinstance(node, yaml.SequenceNode) else "mapping"
            raise self.error(node, f"{what} must be a single value, not a {kind}", fix)
        try:
            return self.constructor.construct_object(node)
        except yaml.YAMLError as e:
            raise self.error(node, f"{what}: {getattr(e, 'problem', e)}", fix) from None
        except (ValueError, OverflowError) as e:  # 2026-02-30, an int of 5,000 digits
            problem = f"{what}: {str(node.value)[:40]!r} cannot be read ({e})"
            raise self.error(node, problem, "quote it, or write a value that exists") from None

    def text(self, node: Any, what: str, fix: str = "write it as text") -> str:
        value = self.scalar(node, what, fix)
        if not isinstance(value, str) or not value.strip():
            raise self.error(node, f"{what} must be non-empty text, not {value!r}", fix)
        return value

    def words(self, node: Any, what: str, fix: str) -> list[tuple[str, Any]]:
        """A text value or a non-empty list of them, each with its node."""
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items:
            raise self.error(node, f"{what} is an empty list", fix)
        return [(self.text(item, what, fix), item) for item in items]

    def choice(self, node: Any, what: str, names: list[str]) -> str:
        value = self.scalar(node, what, f"use one of: {', '.join(names)}")
        if value not in names:
            raise self.error(
                node, f'{what} "{as_text(value)}" is not valid', suggest(str(value), names)
            )
        return str(value)

    def decision(self, node: Any, what: str) -> Decision:
        return Decision(self.choice(node, what, [str(d) for d in Decision]))

    def risk(self, node: Any, what: str) -> Risk:
        return Risk(self.choice(node, what, [str(r) for r in Risk]))

    def duration(self, node: Any, what: str) -> timedelta:
        fix = "write a duration like 90s, 15m, 1h or 2d"
        value = self.scalar(node, what, fix)
        try:
            return parse_duration(value, what)
        except (UsageError, TypeError):
            problem = f'{what} "{as_text(value)}" is not a positive duration'
            raise self.error(node, problem, fix) from None

    def boolean(self, node: Any, what: str) -> bool:
        value = self.scalar(node, what, "write true or false")
        if not isinstance(value, bool):
            problem = f"{what} must be true or false, not {value!r}"
            raise self.error(node, problem, "write true or false, without quotes")
        return value

    def python(self, node: Any, what: str) -> str:
        """``package.module:function``: a Python function an executor or a rule names."""
        target = self.text(node, what, "write it as package.module:function").strip()
        if not _PYTHON_RE.fullmatch(target):
            problem = f'{what} "{target}" is not in the form package.module:function'
            raise self.error(node, problem, "write it like payments.executor:pay")
        return target

    def pairs(self, node: Any, what: str, fix: str, allowed: Sequence[str] | None = None) -> Any:
        """(key, key node, value node) of a mapping whose keys are text (and ``allowed``)."""
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} must be a mapping of key: value lines", fix)
        out = []
        for key_node, value_node in node.value:
            key = self.scalar(key_node, f"a key in {what}", "write the key as plain text")
            if not isinstance(key, str):
                problem = f"the key {key!r} in {what} is not text"
                raise self.error(key_node, problem, f'quote it: "{key}"')
            if allowed is not None and key not in allowed:
                raise self.error(key_node, f'unknown key "{key}" in {what}', suggest(key, allowed))
            out.append((key, key_node, value_node))
        return out

    def fields(self, pairs: Any, what: str, table: Mapping[str, str]) -> dict[str, Any]:
        """Each value read by the method ``table`` names for its key."""
        return {key: getattr(self, table[key])(value, f"{what} {key}") for key, _, value in pairs}


def check_nodes(text: str, root: Any, where: str, loader: Any) -> None:
    """Refuse anchors and aliases (alias bombs) and duplicate keys (PyYAML keeps the last)."""
    for event in yaml.parse(text, Loader=loader):
        if getattr(event, "anchor", None) is not None:
            problem = "anchors and aliases are not allowed in hitl-vault.yaml"
            raise RulesError(where, problem, "write each value out in full", line_of(event))
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int | None] = {}
            for key, value in node.value:
                ident = (str(key.tag), str(key.value))
                if isinstance(key, yaml.ScalarNode) and ident in seen:
                    problem = f'the key "{key.value}" appears twice (first at line {seen[ident]})'
                    raise RulesError(where, problem, "keep only one of them", line_of(key))
                seen[ident] = line_of(key)
                stack += [key, value]
        elif isinstance(node, yaml.SequenceNode):
            stack += node.value
