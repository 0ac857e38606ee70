"""Reading ``actions:`` in ``hitl-vault.yaml``: how the daemon carries out each approved
action (an argv it runs, or a Python function it calls), every problem with its line and
the fix. :mod:`hitl_vault.policy.rulesfile` reads the rest of the file."""

from __future__ import annotations

import re
import shlex
from typing import Any

import yaml

from ..errors import UsageError
from ..model import check_action
from .rules import ActionSpec
from .yamlnodes import NodeReader

_ACTION_FIELDS = {"run": "run", "python": "python", "timeout": "duration", "idempotent": "boolean"}
_BARE_WORD = re.compile(r"[\w./@%+=-]+")
ACTION_NAME_FIX = "use letters, digits, '-', '_' or '.', starting with a letter or digit"


def _argv_fix(command: Any) -> str:
    """How to write a shell-like command string as an argv list."""
    try:
        words = shlex.split(command) if isinstance(command, str) else []
    except ValueError:
        words = []
    words = words or ["python3", "scripts/pay.py"]
    shown = ", ".join(w if _BARE_WORD.fullmatch(w) else f'"{w}"' for w in words)
    return f"write it as a list: run: [{shown}] (a shell is never used)"


class ActionsReader(NodeReader):
    """Reads ``actions:`` into an ActionSpec per action, raising RulesError at the line."""

    def actions(self, node: Any) -> dict[str, ActionSpec]:
        fix = "write each action's name, then run: [...] or python: module:function under it"
        specs: dict[str, ActionSpec] = {}
        for name, key_node, value in self.pairs(node, "actions", fix):
            try:
                check_action(name)
            except UsageError:
                problem = f'"{name}" is not a valid action name'
                raise self.error(key_node, problem, ACTION_NAME_FIX) from None
            specs[name] = self.action_spec(name, key_node, value)
        return specs

    def action_spec(self, name: str, key_node: Any, node: Any) -> ActionSpec:
        what = f"action {name}"
        how = "give it run: [program, arg, ...] or python: package.module:function"
        fields = self.fields(
            self.pairs(node, what, how, tuple(_ACTION_FIELDS)), what, _ACTION_FIELDS
        )
        if "run" in fields and "python" in fields:
            raise self.error(key_node, f"{what} has both run and python", "keep only one of them")
        if "run" not in fields and "python" not in fields:
            raise self.error(key_node, f"{what} has neither run nor python", how)
        return ActionSpec(name=name, **fields)

    def run(self, node: Any, what: str) -> tuple[str, ...]:
        if isinstance(node, yaml.ScalarNode):
            value = self.scalar(node, what, _argv_fix(None))
            raise self.error(node, f"{what} is a single string, not a list", _argv_fix(value))
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.error(node, f"{what} must be a non-empty list", _argv_fix(None))
        argv = tuple(self.scalar(item, what, _argv_fix(None)) for item in node.value)
        for item, value in zip(node.value, argv, strict=True):
            if not isinstance(value, str):
                raise self.error(item, f"{what}: {value!r} is not text", f'quote it: "{value}"')
        if not argv[0].strip():
            raise self.error(node, f"{what}: the program is empty", _argv_fix(None))
        return argv
