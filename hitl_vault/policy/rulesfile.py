"""Reading ``hitl-vault.yaml`` into a :class:`~hitl_vault.policy.rules.Policy`.

:func:`parse_policy` composes the YAML into nodes and reads them by hand so that
every problem is reported with its line and the fix; a bad file raises
:class:`RulesError` rather than yielding half a policy.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from ..durable import read_file
from ..errors import NoteError, RulesError, UsageError
from ..identity import CHANNELS, NAME_FIX, PROVEN, name_problem, same_name
from ..model import check_action
from .actionsfile import ACTION_NAME_FIX, ActionsReader
from .conditions import (
    INSIDE_PROJECT,
    OPERATORS,
    ActionMatcher,
    AnyOf,
    Compare,
    Condition,
    Equals,
    Matches,
    PathCondition,
    as_number,
)
from .confidence import checked_confidence
from .quorum import RequireReason, Stage
from .rules import ActionSpec, Defaults, GateRecord, Mode, Policy, Rule
from .yamlnodes import NodeReader, check_nodes, is_null, line_of, suggest

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# For each mapping in the file: its allowed keys, and the _Reader method that reads each value.
_TOP = {
    "defaults": "defaults",
    "rules": "rules",
    "actions": "actions",
    "groups": "groups",  # named sets of approvers, read first (group:NAME)
    "notify": "elsewhere",  # who to tell: read by hitl_vault.notify.config
    "notify_vault": "elsewhere",
    "mode": "mode",
    "gate": "gate",
}
_DEFAULT_FIELDS = {
    "decision": "decision",
    "timeout": "duration",
    "quiet": "duration",
    "remind_before": "duration",
    "min_risk": "risk",
    "approvers": "approvers",
    "quorum": "quorum",
    "prevent_self_approval": "boolean",
    "require_reason": "require_reason",
    "escalate_after": "duration",
    "escalate_to": "approvers",
    "authenticated": "authenticated",
}
_GATE_FIELDS = {"record": "gate_record"}
_RULE_FIELDS = {
    "name": "name",
    "action": "action",
    "params": "params",
    "decision": "decision",
    "python": "python",  # module:function: it decides
    "on_error": "on_error",  # pending or reject, when the python function fails
    "risk": "risk",
    "timeout": "duration",
    "approvers": "approvers",
    "editable": "boolean",
    "reason": "text",
    "remind_before": "duration",
    "quorum": "quorum",
    "stages": "stages",
    "prevent_self_approval": "boolean",
    "require_reason": "require_reason",
    "escalate_after": "duration",
    "escalate_to": "approvers",
    "authenticated": "authenticated",
    "confidence": "condition",  # only to ask or block: see policy.confidence
    "path": "path",
    "agent_prompt": "agent_prompt",
    "always": "boolean",  # "approve --always" may be used despite a quorum, stages, authenticated
}
# A group's name (``group:finance``): a word, as an action's name is.
_GROUP_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@+-]{0,63}")
_GROUP_FIX = "use letters, digits, '_', '.', '@', '+' or '-', starting with a letter or digit"
_STAGE_FIELDS = {"name": "name", "approvers": "approvers", "quorum": "quorum"}
_CONDITION_FIX = 'write a value, a comparison like "< 500", "re:<regex>", or a list of those'


class _Reader(NodeReader):
    """Reads composed YAML nodes into a Policy, raising RulesError at the offending line."""

    def __init__(self, where: str, root: Path | None = None) -> None:
        super().__init__(where)
        self.group_names: dict[str, frozenset[str]] = {}
        self.root = root

    # --- the sections ------------------------------------------------------------

    def policy(self, root: Any) -> Policy:
        fix = "write a mapping with defaults:, rules: and actions: at the top level"
        pairs = [
            p for p in self.pairs(root, "the top level", fix, tuple(_TOP)) if not is_null(p[2])
        ]
        for key, _, value in pairs:
            if key == "groups":
                self.group_names = self.groups(value)
        found = {
            key: getattr(self, _TOP[key])(value)
            for key, _, value in pairs
            if _TOP[key] not in ("elsewhere", "groups")
        }
        actions = MappingProxyType(found.get("actions", {}))
        return Policy(
            found.get("defaults", Defaults()),
            found.get("rules", ()),
            actions,
            self.where,
            mode=found.get("mode", Mode.ENFORCE),
            gate_record=found.get("gate", GateRecord.BLOCKS),
        )

    def mode(self, node: Any) -> Mode:
        return Mode(self.choice(node, "mode", [str(m) for m in Mode]))

    def gate(self, node: Any) -> GateRecord:
        fix = "write e.g. gate: {record: all}"
        pairs = self.pairs(node, "gate", fix, tuple(_GATE_FIELDS))
        found = self.fields(pairs, "gate", _GATE_FIELDS)
        record: GateRecord = found.get("record", GateRecord.BLOCKS)
        return record

    def gate_record(self, node: Any, what: str) -> GateRecord:
        return GateRecord(self.choice(node, what, [str(r) for r in GateRecord]))

    def defaults(self, node: Any) -> Defaults:
        fix = "write e.g. decision: ask and timeout: 24h under defaults:"
        pairs = self.pairs(node, "defaults", fix, tuple(_DEFAULT_FIELDS))
        fields = self.fields(pairs, "defaults", _DEFAULT_FIELDS)
        self.check_approval(node, "defaults", fields)
        return Defaults(**fields)

    def rules(self, node: Any) -> tuple[Rule, ...]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, "rules must be a list", 'start each rule with "- name: ..."')
        rules: dict[str, Rule] = {}
        for item in node.value:
            rule = self.rule(item)
            if rule.name in rules:
                problem = f'two rules are named "{rule.name}" (lines {rules[rule.name].line} and '
                raise self.error(item, f"{problem}{rule.line})", "give each rule its own name")
            rules[rule.name] = rule
        return tuple(rules.values())

    def rule(self, node: Any) -> Rule:
        fix = "write each rule as a mapping: - name: my-rule, then decision: ask below it"
        pairs = self.pairs(node, "a rule", fix, tuple(_RULE_FIELDS))
        name_node = next((value for key, _, value in pairs if key == "name"), None)
        if name_node is None:
            raise self.error(node, "a rule has no name", "add name: some-name to it")
        name = self.name(name_node, "a rule's name")
        fields = self.fields(pairs, f"rule {name}", _RULE_FIELDS)
        if "python" in fields:
            self.python_rule(node, name, fields)
        elif "on_error" in fields:
            fix = "remove on_error, or add python: module:function"
            raise self.error(node, f"rule {name} has on_error but no python function", fix)
        if "decision" not in fields:
            fix = "add decision: allow, ask or block (or python: module:function)"
            raise self.error(node, f"rule {name} has no decision", fix)
        self.check_approval(node, f"rule {name}", fields)
        return Rule(**fields, line=line_of(node) or 0)

    def python_rule(self, node: Any, name: str, fields: dict[str, Any]) -> None:
        """The function decides: ``decision`` is left to it (ask stands for it until then)."""
        from .pyrules import STANDS_IN, PythonRule  # only a rules file with python: needs it

        if "decision" in fields:
            problem = f"rule {name} has both decision and python"
            raise self.error(node, problem, "remove decision: the function returns it")
        fields["python"] = PythonRule(fields["python"], str(self.root or ""))
        fields["decision"] = STANDS_IN

    def on_error(self, node: Any, what: str) -> Any:
        from .pyrules import ON_ERROR

        return ON_ERROR[self.choice(node, what, list(ON_ERROR))]

    def check_approval(self, node: Any, what: str, fields: Mapping[str, Any]) -> None:
        """A quorum the approvers can reach; an escalation that says when and to whom."""
        quorum, names = fields.get("quorum"), fields.get("approvers")
        if quorum is not None and names is not None and quorum > len(names):
            problem = f"{what} needs {quorum} approvals but names only {len(names)} approvers"
            raise self.error(node, problem, "lower quorum, or add approvers")
        if ("escalate_after" in fields) != ("escalate_to" in fields):
            have, missing = (
                ("escalate_after", "escalate_to")
                if "escalate_after" in fields
                else ("escalate_to", "escalate_after")
            )
            problem = f"{what} has {have} but no {missing}"
            raise self.error(
                node, problem, "give both: escalate_after: 30m and escalate_to: [name]"
            )

    def name(self, node: Any, what: str) -> str:
        name = self.text(node, what, "write a short name like large-payments")
        if "\n" in name or name != name.strip() or name == "defaults":
            fix = "use one line of text, without spaces around it, other than defaults"
            raise self.error(node, f"{what} {name!r} cannot be used", fix)
        return name

    def action(self, node: Any, what: str) -> ActionMatcher:
        names: set[str] = set()
        patterns: list[re.Pattern[str]] = []
        for word, item in self.words(node, what, 'write a name, a list of names, or "re:<regex>"'):
            if word.startswith("re:"):
                patterns.append(self.regex(word, item, what))
                continue
            try:
                names.add(check_action(word))
            except UsageError:
                problem = f'{what} "{word}" is not a valid action name'
                raise self.error(item, problem, ACTION_NAME_FIX + " (or re:<regex>)") from None
        return ActionMatcher(frozenset(names), tuple(patterns))

    def regex(self, word: str, node: Any, what: str) -> re.Pattern[str]:
        try:
            return re.compile(word[3:])
        except re.error as e:
            problem = f'{what}: the regex "{word[3:]}" is invalid ({e})'
            raise self.error(node, problem, "fix the regular expression after re:") from None

    def params(self, node: Any, what: str) -> Mapping[str, Condition]:
        fix = 'write each condition as name: value, e.g. params: {amount: ">= 500"}'
        pairs = self.pairs(node, what, fix)
        return MappingProxyType({k: self.condition(v, f"{what} {k}", True) for k, _, v in pairs})

    def condition(self, node: Any, what: str, top: bool = True) -> Condition:
        if isinstance(node, yaml.MappingNode):
            raise self.error(node, f"{what} is a mapping, which is not a condition", _CONDITION_FIX)
        if isinstance(node, yaml.SequenceNode):
            if not top or not node.value:
                problem = "has a list inside a list" if node.value else "is an empty list"
                raise self.error(node, f"{what} {problem}", _CONDITION_FIX)
            return AnyOf(tuple(self.condition(item, what, False) for item in node.value))
        value = self.scalar(node, what, _CONDITION_FIX)
        if not isinstance(value, str):
            return Equals(value)
        if value.startswith("re:"):
            return Matches(self.regex(value, node, what))
        op = next((op for op in OPERATORS if value.startswith(op)), None)
        if op is None:
            return Equals(value)
        rest = value[len(op) :].strip()
        number = as_number(rest)
        if number is None:
            problem = f'{what}: "{value}" compares with "{rest}", which is not a number'
            fix = f'write a number after {op}, e.g. "{op} 500"; to match text use re:<regex>'
            raise self.error(node, problem, fix)
        return Compare(op, number, rest)

    def path(self, node: Any, what: str) -> PathCondition:
        """``path: inside-project``, or ``path: "re:<regex>"`` on the resolved paths."""
        fix = f'write path: {INSIDE_PROJECT}, or path: "re:<regex>" (matched on resolved paths)'
        value = self.scalar(node, what, fix)
        if value == INSIDE_PROJECT:
            return PathCondition(inside_project=True)
        if isinstance(value, str) and value.startswith("re:"):
            return PathCondition(pattern=self.regex(value, node, what))
        raise self.error(node, f"{what} {value!r} is not a path condition", fix)

    def agent_prompt(self, node: Any, what: str) -> str:
        return self.choice(node, what, ["keep", "skip"])

    def approvers(self, node: Any, what: str) -> frozenset[str]:
        fix = "write a name, or a list of names or groups: approvers: [alice, group:finance]"
        names = self.words(node, what, fix)
        if isinstance(node, yaml.ScalarNode) and "," in names[0][0]:
            raise self.error(node, f'{what} "{names[0][0]}" holds several names', fix)
        found: dict[str, str] = {}  # each person once, as compared (``Alice`` is ``alice``)
        for word, item in names:
            word = word.strip()
            if word.startswith("group:"):
                group = word[len("group:") :].strip()
                if group not in self.group_names:
                    known = sorted(self.group_names)
                    fix = suggest(group, known) if known else "define it under groups: at the top"
                    raise self.error(item, f'{what}: no group named "{group}"', fix)
                for person in self.group_names[group]:
                    found.setdefault(same_name(person), person)
            else:
                person = self.person(word, item, what)
                found.setdefault(same_name(person), person)
        return frozenset(found.values())

    def person(self, word: object, node: Any, what: str) -> str:
        """A person's name, by the one rule ``people add`` follows (printable, at most 64
        characters, no ``via`` after the first word: :func:`~hitl_vault.identity.name_problem`),
        kept as written; every comparison folds it (:func:`~hitl_vault.identity.same_name`)."""
        problem = name_problem(word)
        if problem is not None:
            raise self.error(node, f"{what}: {problem}", NAME_FIX)
        return str(word).strip()

    def groups(self, node: Any) -> dict[str, frozenset[str]]:
        fix = "write each group as name: [alice, bob] under groups:"
        found: dict[str, frozenset[str]] = {}
        for name, key_node, value in self.pairs(node, "groups", fix):
            if not _GROUP_RE.fullmatch(name):
                problem = f'a group name: "{name}" is not a valid group name'
                raise self.error(key_node, problem, _GROUP_FIX)
            people = self.words(value, f"group {name}", fix)
            members: dict[str, str] = {}
            for w, n in people:
                person = self.person(w.strip(), n, f"group {name}")
                members.setdefault(same_name(person), person)
            found[name] = frozenset(members.values())
        return found

    def quorum(self, node: Any, what: str) -> int:
        fix = "write a whole number of approvals, like quorum: 2"
        value = self.scalar(node, what, fix)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
            raise self.error(
                node, f"{what} must be a whole number from 1 to 100, not {value!r}", fix
            )
        return value

    def authenticated(self, node: Any, what: str) -> frozenset[str]:
        """``true`` (api, session or socket) or a list of channels an approval must come
        through; ``false`` says nothing (a rule cannot relax the defaults), so it is refused."""
        fix = f"write authenticated: true, or a list of channels from {', '.join(CHANNELS)}"
        if isinstance(node, yaml.SequenceNode):
            if not node.value:  # an empty set would let no approval count, silently
                raise self.error(node, f"{what} is an empty list", fix)
            return frozenset(self.choice(item, what, list(CHANNELS)) for item in node.value)
        value = self.scalar(node, what, fix)
        if value is True:
            return PROVEN
        if value is False:
            problem = f"{what} is false, which counts any decision, as leaving it out does"
            raise self.error(node, problem, "remove the line, or write authenticated: true")
        raise self.error(node, f"{what} must be true or a list of channels, not {value!r}", fix)

    def require_reason(self, node: Any, what: str) -> RequireReason:
        return RequireReason(self.choice(node, what, [str(r) for r in RequireReason]))

    def stages(self, node: Any, what: str) -> tuple[Stage, ...]:
        fix = "write a list of stages: - {name: lead, approvers: [alice, bob], quorum: 1}"
        if not isinstance(node, yaml.SequenceNode) or not node.value:
            raise self.error(node, f"{what} must be a non-empty list", fix)
        stages: list[Stage] = []
        for i, item in enumerate(node.value, 1):
            where = f"{what} {i}"
            fields = self.fields(
                self.pairs(item, where, fix, tuple(_STAGE_FIELDS)), where, _STAGE_FIELDS
            )
            if "approvers" not in fields:
                raise self.error(item, f"{where} has no approvers", "add approvers: [name, ...]")
            self.check_approval(item, where, fields)
            stage = Stage(fields.get("name", ""), fields["approvers"], fields.get("quorum", 1))
            if stage.name and any(s.name == stage.name for s in stages):
                raise self.error(item, f'{what}: two stages are named "{stage.name}"', "rename one")
            stages.append(stage)
        return tuple(stages)

    def actions(self, node: Any) -> dict[str, ActionSpec]:
        return ActionsReader(self.where).actions(node)


def _empty_policy(where: str) -> Policy:
    return Policy(Defaults(), (), MappingProxyType({}), where)


def parse_policy(text: str, where: str = "hitl-vault.yaml", folder: Path | None = None) -> Policy:
    """The policy the text of a rules file states; raises RulesError with the line and fix.
    ``folder``: the vault's, where ``python:`` rules look for their module too."""
    try:
        root = yaml.compose(text, Loader=_Loader)
        check_nodes(text, root, where, _Loader)
    except yaml.MarkedYAMLError as e:
        problem = f"YAML error: {(e.problem or e.context or 'invalid YAML').strip()}"
        fix = 'fix the YAML syntax; quote values that start with a symbol, e.g. amount: ">= 500"'
        raise RulesError(where, problem, fix, line_of(e.problem_mark or e.context_mark)) from None
    except yaml.YAMLError as e:
        raise RulesError(where, f"YAML error: {e}", "fix the YAML syntax") from None
    if root is None or is_null(root):
        return _empty_policy(where)
    return checked_confidence(_Reader(where, folder).policy(root))


def load_policy(path: Path, where: str | None = None) -> Policy:
    """Read the rules file; a missing file means no rules (everything asks: fail closed)."""
    where = where or str(path)
    text = rules_text(path, where)
    if text is None:
        return _empty_policy(where)
    return parse_policy(text, where, Path(path).absolute().parent)


def rules_text(path: Path, where: str) -> str | None:
    """The rules file's text (None when there is none); RulesError when it cannot be read."""
    try:  # a link is fine here; a pipe, a device or a huge file is refused before reading
        raw = read_file(Path(path), where, follow_links=True)
    except FileNotFoundError:
        return None
    except NoteError as e:
        raise RulesError(where, e.problem, "make it a plain file you may read") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise RulesError(
            where, f"is not UTF-8 (byte {e.start})", "save it as UTF-8", line
        ) from None
