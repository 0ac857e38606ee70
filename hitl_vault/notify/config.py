"""Who to tell about which request: the ``notify:`` list of ``hitl-vault.yaml``.

:func:`parse_notify` reads it into :class:`Target` values, every problem an error
naming the file, the line and the fix. Secrets stay out of the rules file and the
logs: a URL may hold ``${NAME}`` placeholders, filled from the environment only by
:meth:`Target.resolved_url` at send time; :attr:`Target.shown` is the form to print.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import yaml

from ..errors import RulesError
from ..model import RULES_FILE, Request, Risk, Status
from ..policy.yamlnodes import NodeReader, is_null, line_of, suggest
from .send import PLACEHOLDER, SCHEME, mask_url, placeholders, url_problem


class Event(StrEnum):
    """What happened to a request that a person may want to hear about."""

    PENDING = "pending"
    REMINDER = "reminder"  # still pending, nobody decided yet
    ESCALATED = "escalated"  # still pending, told to more people
    APPROVED = "approved"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"
    CANCELLED = "cancelled"
    EXECUTED = "executed"
    FAILED = "failed"


EVENTS: frozenset[str] = frozenset(e.value for e in Event)
# The event a move into each status is (executing is not worth a message).
EVENT_OF_STATUS: Mapping[Status, Event] = MappingProxyType(
    {s: Event(s.value) for s in Status if s.value in EVENTS}
)
DECIDE_EVENTS = frozenset({Event.PENDING, Event.REMINDER, Event.ESCALATED})


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_TARGET_KEYS = ("url", "on", "risk", "rules", "actions")
_URL_FIX = "write it like ntfy://ntfy.sh/my-topic or mailto://me:${SMTP_PASSWORD}@example.com"


# --- targets ---------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """One place to send messages to (an Apprise URL) and which messages it wants.

    ``url`` is as written in the rules file, ``${NAME}`` placeholders and all; the
    filters ``risk``, ``rules`` and ``actions`` are None for "any".
    """

    url: str
    events: frozenset[Event] = frozenset({Event.PENDING})
    risk: frozenset[Risk] | None = None
    rules: frozenset[str] | None = None
    actions: frozenset[str] | None = None
    line: int = 0
    where: str = field(default=RULES_FILE, compare=False)

    def __repr__(self) -> str:  # the shown URL: a Target in a log holds no literal password
        events = ", ".join(sorted(self.events))
        return f"Target({self.shown!r}, events=[{events}], line={self.line})"

    def wants(self, event: Event | str, request: Request) -> bool:
        """Whether this event of this request is one this target asked for."""
        return (
            str(event) in self.events
            and (self.risk is None or request.risk in self.risk)
            and (self.rules is None or request.rule in self.rules)
            and (self.actions is None or request.action in self.actions)
        )

    @property
    def shown(self) -> str:
        """The URL for logs and the CLI: passwords masked, ``${NAME}`` kept as written."""
        return mask_url(self.url)

    def resolved_url(self, env: Mapping[str, str] | None = None) -> str:
        """The URL with each ``${NAME}`` replaced by its value: for Apprise only, never shown.

        Values are put in as they are, so one that holds ``@ / : ? #`` inside a URL part
        must be percent-encoded in the environment already. A variable that is not set,
        or empty, is a RulesError at this target's line.
        """
        env = os.environ if env is None else env
        missing = sorted({name for name in placeholders(self.url) if not env.get(name)})
        if missing:
            names = " and ".join(missing)
            dollars = " and ".join(f"${{{n}}}" for n in missing)
            verb = "is" if len(missing) == 1 else "are"
            raise RulesError(
                self.where,
                f'notify url "{self.shown}" needs {dollars}, which {verb} not set (or empty)',
                f"set {names} in the daemon's environment",
                self.line or None,
            )
        return PLACEHOLDER.sub(lambda m: env[m.group(1)], self.url)


class _NotifyReader(NodeReader):
    """Reads the ``notify:`` list; every problem is a RulesError at its line."""

    def targets(self, node: Any, check_urls: bool) -> tuple[Target, ...]:
        if node is None or is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(node, "notify must be a list", 'start each target with "- url: ..."')
        return tuple(self.target(item, check_urls) for item in node.value)

    def keys(self, node: Any) -> dict[str, tuple[Any, Any]]:
        """key -> (key node, value node); keys read as written (YAML 1.1 makes ``on`` true)."""
        fix = "write each target as a mapping: - url: ntfy://ntfy.sh/my-topic"
        if not isinstance(node, yaml.MappingNode):
            raise self.error(node, "a notify target must be a mapping of key: value lines", fix)
        found: dict[str, tuple[Any, Any]] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise self.error(key_node, "a key in a notify target is not text", fix)
            key = str(key_node.value)
            if key not in _TARGET_KEYS:
                problem = f'unknown key "{key}" in a notify target'
                raise self.error(key_node, problem, suggest(key, _TARGET_KEYS))
            if key in found:
                problem = f'the key "{key}" appears twice (first at line {line_of(found[key][0])})'
                raise self.error(key_node, problem, "keep only one of them")
            found[key] = (key_node, value_node)
        return found

    def target(self, node: Any, check_urls: bool) -> Target:
        found = self.keys(node)
        if "url" not in found:
            raise self.error(node, "a notify target has no url", f"add url: to it; {_URL_FIX}")
        url_node = found["url"][1]
        url = self.url(url_node, check_urls)
        events = frozenset({Event.PENDING})
        if "on" in found:
            events = self.events(found["on"][1])
        risk = rules = actions = None
        if "risk" in found:
            items = self.words(found["risk"][1], "notify risk", "write a risk or a list of them")
            risk = frozenset(self.risk(item, "notify risk") for _, item in items)
        fix = "write a name or a list of names"
        if "rules" in found:
            rules = frozenset(w for w, _ in self.words(found["rules"][1], "notify rules", fix))
        if "actions" in found:
            actions = frozenset(
                w for w, _ in self.words(found["actions"][1], "notify actions", fix)
            )
        line = line_of(node) or 0
        return Target(url, events, risk, rules, actions, line, self.where)

    def events(self, node: Any) -> frozenset[Event]:
        names = [*sorted(EVENTS), "all"]
        fix = f"write an event or a list of them: {', '.join(names)}"
        items = node.value if isinstance(node, yaml.SequenceNode) else [node]
        if not items:
            raise self.error(node, "notify on is an empty list", fix)
        out: set[Event] = set()
        for item in items:
            if not isinstance(item, yaml.ScalarNode):
                raise self.error(item, "notify on: an event must be a single word", fix)
            word = str(item.value).strip()
            if word == "all":
                out.update(Event)
            elif word in EVENTS:
                out.add(Event(word))
            else:
                raise self.error(item, f'unknown event "{word}"', suggest(word, names))
        return frozenset(out)

    def url(self, node: Any, check: bool) -> str:
        url = self.text(node, "notify url", _URL_FIX).strip()
        shown = mask_url(url)
        for name in placeholders(url):
            if not _NAME.fullmatch(name):
                problem = f'notify url "{shown}": "${{{name}}}" is not a variable name'
                fix = "write ${NAME} with letters, digits and _, starting with a letter or _"
                raise self.error(node, problem, fix)
        if "${" in PLACEHOLDER.sub("", url):
            raise self.error(node, f'notify url "{shown}" has a "${{" without its "}}"', _URL_FIX)
        scheme = SCHEME.match(url)
        if scheme is None and not url.startswith("${"):
            raise self.error(node, f'notify url "{shown}" has no scheme://', _URL_FIX)
        if check and scheme is not None:
            bad = url_problem(url, scheme.group(1))
            if bad:
                raise self.error(node, f'notify url "{shown}" {bad[0]}', bad[1])
        return url


def parse_notify(
    node: Any, where: str = RULES_FILE, *, check_urls: bool = True
) -> tuple[Target, ...]:
    """The targets of ``notify:`` (a composed PyYAML node); RulesError at the offending line.

    Each item is a mapping: ``url`` (required), ``on`` (an event, a list of them or
    ``all``; default ``pending``), and the filters ``risk``, ``rules`` and ``actions``
    (a word or a list). With ``check_urls`` (which imports Apprise), Apprise must be
    able to read each URL. A ``${NAME}`` is checked with stand-in values, never with the
    environment: a variable that is not set is reported by :meth:`Target.resolved_url`
    when sending (and by a ``notify test``), not as a bad URL here, and the answer does
    not depend on the shell that reads the file. A URL whose scheme is itself a
    placeholder (``url: ${NTFY_URL}``) is checked only when it is sent.
    """
    return _NotifyReader(where).targets(node, check_urls)


def parse_vault_name(node: Any, where: str = RULES_FILE) -> str:
    """The Obsidian vault name (``notify_vault:``) for links: one line of text."""
    name = NodeReader(where).text(
        node, "notify_vault", "write the vault's name as Obsidian shows it"
    )
    if "\n" in name or name != name.strip():
        problem = f"notify_vault {name!r} is not one line without spaces around it"
        raise RulesError(where, problem, "write it on one line", line_of(node))
    return name


_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class NotifyConfig:
    """Who to tell (``notify:``), and the Obsidian vault name for links (``notify_vault:``)."""

    targets: tuple[Target, ...] = ()
    vault_name: str | None = None


def read_notify_config(
    text: str, where: str = RULES_FILE, *, check_urls: bool = False
) -> NotifyConfig:
    """The ``notify:`` and ``notify_vault:`` keys of a rules file's text; RulesError at the
    offending line. The rest of the file is :func:`~hitl_vault.policy.rulesfile.parse_policy`'s
    (call it first: it reports broken YAML)."""
    try:
        root = yaml.compose(text, Loader=_Loader) if text.strip() else None
    except yaml.YAMLError:  # parse_policy says where
        return NotifyConfig()
    if not isinstance(root, yaml.MappingNode):
        return NotifyConfig()
    targets: tuple[Target, ...] = ()
    name = None
    for key_node, value in root.value:
        if is_null(value):
            continue
        if key_node.value == "notify":
            targets = parse_notify(value, where, check_urls=check_urls)
        elif key_node.value == "notify_vault":
            name = parse_vault_name(value, where)
    return NotifyConfig(targets, name)
