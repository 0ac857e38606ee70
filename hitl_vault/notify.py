"""Notifications: who to tell about which request, what to say, and sending it with Apprise.

The building blocks only: :func:`parse_notify` reads the ``notify:`` list of
``hitl-vault.yaml`` into :class:`Target` values, :func:`compose` writes the
plain-text :class:`Message` for one event of one request, and :func:`send`
delivers it to one URL. Apprise is imported inside the functions that need it,
so importing this module stays cheap for every CLI command.

Secrets stay out of the rules file and the logs: a URL may hold ``${NAME}``
placeholders, filled from the environment only by :meth:`Target.resolved_url`
at send time. :attr:`Target.shown` is the form to print or log; the resolved
URL is handed to Apprise and to nothing else, and every error text made from
Apprise's log has the URL's secret parts masked.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import json
import logging
import os
import re
import threading
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import PurePath
from types import MappingProxyType
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

import yaml

from .errors import RulesError
from .layout import RULES_FILE
from .model import Request, Status
from .render import _NOT_PRINTABLE_ASCII, _visible, one_line
from .rules import Risk
from .rulesfile import _is_null, _line, _Reader, _suggest


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
_DECIDE_EVENTS = frozenset({Event.PENDING, Event.REMINDER, Event.ESCALATED})

# Every network step of one send (connect, then each read) is bounded by these,
# Apprise's cto= and rto= (a URL that sets them keeps its own). HTTP services give
# up on a receiver that does not answer after CONNECT + READ, 10 s; e-mail applies
# CONNECT_TIMEOUT to each SMTP step (smtplib has one timeout).
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 5.0
MESSAGE_LIMIT = 4000  # title + body, in characters; ntfy takes 4,096 bytes

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_SECRET_KEY = re.compile(r"pass|pwd|token|secret|key", re.IGNORECASE)
# What stands in for ${NAME} when a URL is checked at parse time: tried in turn, as a
# value that one service accepts may be refused by another (Telegram wants "digits:text").
_STAND_INS = ("hitlvault", "1234567890", "1234567890:hitl-vault")
_TARGET_KEYS = ("url", "on", "risk", "rules", "actions")
_URL_FIX = "write it like ntfy://ntfy.sh/my-topic or mailto://me:${SMTP_PASSWORD}@example.com"


# --- targets ---------------------------------------------------------------------


def _placeholders(url: str) -> list[str]:
    return [m.group(1) for m in _PLACEHOLDER.finditer(url)]


def _only_placeholders(text: str) -> bool:
    return bool(text) and not _PLACEHOLDER.sub("", text)


def _split(url: str) -> tuple[str, str, str, str]:
    """(``scheme://``, ``user:pass@`` or "", host and port, the rest) of a URL as written."""
    scheme = _SCHEME.match(url)
    head, rest = (url[: scheme.end()], url[scheme.end() :]) if scheme else ("", url)
    end = min([len(rest)] + [at for at in map(rest.find, "/?#") if at != -1])
    userinfo, at, host = rest[:end].rpartition("@")
    return head, userinfo + at, host, rest[end:]


def _password(url: str) -> str:
    """The literal password of ``user:pass@`` ("" when none, or when it is a ``${NAME}``)."""
    password = _split(url)[1][:-1].partition(":")[2]
    return "" if _only_placeholders(password) else password


def _mask(url: str) -> str:
    """``url`` with the password of ``user:pass@`` and secret-named query values as ``****``."""
    head, userinfo, host, tail = _split(url)
    if _password(url):
        userinfo = userinfo.partition(":")[0] + ":****@"
    path, question, query = tail.partition("?")
    if question:
        items = []
        for item in query.split("&"):
            key, equals, value = item.partition("=")
            if equals and value and _SECRET_KEY.search(key) and not _only_placeholders(value):
                item = f"{key}=****"
            items.append(item)
        tail = f"{path}?{'&'.join(items)}"
    return head + userinfo + host + tail


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
        return _mask(self.url)

    def resolved_url(self, env: Mapping[str, str] | None = None) -> str:
        """The URL with each ``${NAME}`` replaced by its value: for Apprise only, never shown.

        Values are put in as they are, so one that holds ``@ / : ? #`` inside a URL part
        must be percent-encoded in the environment already. A variable that is not set,
        or empty, is a RulesError at this target's line.
        """
        env = os.environ if env is None else env
        missing = sorted({name for name in _placeholders(self.url) if not env.get(name)})
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
        return _PLACEHOLDER.sub(lambda m: env[m.group(1)], self.url)


class _NotifyReader(_Reader):
    """Reads the ``notify:`` list; every problem is a RulesError at its line."""

    def targets(self, node: Any, check_urls: bool) -> tuple[Target, ...]:
        if node is None or _is_null(node):
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
                raise self.error(key_node, problem, _suggest(key, _TARGET_KEYS))
            if key in found:
                problem = f'the key "{key}" appears twice (first at line {_line(found[key][0])})'
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
        line = _line(node) or 0
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
                raise self.error(item, f'unknown event "{word}"', _suggest(word, names))
        return frozenset(out)

    def url(self, node: Any, check: bool) -> str:
        url = self.text(node, "notify url", _URL_FIX).strip()
        shown = _mask(url)
        for name in _placeholders(url):
            if not _NAME.fullmatch(name):
                problem = f'notify url "{shown}": "${{{name}}}" is not a variable name'
                fix = "write ${NAME} with letters, digits and _, starting with a letter or _"
                raise self.error(node, problem, fix)
        if "${" in _PLACEHOLDER.sub("", url):
            raise self.error(node, f'notify url "{shown}" has a "${{" without its "}}"', _URL_FIX)
        scheme = _SCHEME.match(url)
        if scheme is None and not url.startswith("${"):
            raise self.error(node, f'notify url "{shown}" has no scheme://', _URL_FIX)
        if check and scheme is not None:
            bad = _url_problem(url, scheme.group(1))
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
    """The Obsidian vault name (``vault_name:``) for links: one line of text."""
    name = _Reader(where).text(node, "vault_name", "write the vault's name as Obsidian shows it")
    if "\n" in name or name != name.strip():
        problem = f"vault_name {name!r} is not one line without spaces around it"
        raise RulesError(where, problem, "write it on one line", _line(node))
    return name


# --- Apprise, and what it logs --------------------------------------------------

_CAPTURED: contextvars.ContextVar[list[tuple[int, str]] | None] = contextvars.ContextVar(
    "hitl_vault_apprise_log", default=None
)


class _Capture(logging.Filter):
    """Keeps Apprise's records made inside :func:`_apprise_log` (and not passed on).

    The "apprise" logger is lowered to DEBUG while any capture is open, so the
    record that says why a send failed (Apprise logs the socket error at DEBUG)
    exists; records from outside a capture are let through only at the level
    the logger had before, so other users of the logger see no change.
    """

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.open = 0
        self.level = logging.NOTSET
        self.threshold = logging.WARNING

    def filter(self, record: logging.LogRecord) -> bool:
        lines = _CAPTURED.get()
        if lines is None:
            return record.levelno >= self.threshold
        try:
            lines.append((record.levelno, record.getMessage()))
        except Exception:  # a bad format string in a plugin's log call
            lines.append((record.levelno, str(record.msg)))
        return False


_CAPTURE = _Capture()


@contextlib.contextmanager
def _apprise_log() -> Iterator[list[tuple[int, str]]]:
    """Apprise's log lines (level, text) made in this context, including worker threads."""
    logger = logging.getLogger("apprise")
    lines: list[tuple[int, str]] = []
    token = _CAPTURED.set(lines)
    with _CAPTURE.lock:
        if _CAPTURE.open == 0:
            _CAPTURE.level = logger.level
            _CAPTURE.threshold = logger.getEffectiveLevel()
            logger.setLevel(logging.DEBUG)
            logger.addFilter(_CAPTURE)
        _CAPTURE.open += 1
    try:
        yield lines
    finally:
        with _CAPTURE.lock:
            _CAPTURE.open -= 1
            if _CAPTURE.open == 0:
                logger.removeFilter(_CAPTURE)
                logger.setLevel(_CAPTURE.level)
        _CAPTURED.reset(token)


_LOADING = threading.Lock()
_LOADED: list[Any] = []  # the module, once loaded


def _apprise() -> Any:
    """The apprise module, imported on first use, its plugins loaded.

    Loading the plugins takes a tenth of a second, and on Python 3.11 and 3.12 the
    e-mail plugin imports ``imghdr``, which warns that it is deprecated (Apprise shims
    it where it is gone): not ours to act on, so it is silenced for that first load,
    keeping it off the daemon's stderr and out of tests run with warnings as errors.
    Typed as Any so the same code checks against Apprise 1.x (no type information)
    and 2.x.
    """
    with _LOADING:
        if not _LOADED:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                # Apprise 1.x ships no type information (untyped import); 2.x does (unused).
                import apprise  # type: ignore[import-untyped, unused-ignore]

                module: Any = apprise
                with contextlib.suppress(Exception):  # loads every plugin, once
                    module.NotificationManager().schemas()
            _LOADED.append(module)
        return _LOADED[0]


def _asset() -> Any:
    """An Apprise asset that sends in the calling thread (no worker pool left running)."""
    apprise = _apprise()
    try:  # Apprise 2 runs a send in a shared pool to enforce service_timeout; 0 turns it off
        return apprise.AppriseAsset(async_mode=False, service_timeout=0)
    except (TypeError, AttributeError, ValueError):  # Apprise 1.x has no service_timeout
        return apprise.AppriseAsset(async_mode=False)


def _secrets(url: str) -> list[str]:
    """What of a resolved URL may be secret (user, password, path, query values), longest first."""
    try:
        parts = urlsplit(url)
        pieces = [parts.username or "", parts.password or "", *parts.path.split("/")]
        pieces += [value for _, value in parse_qsl(parts.query)]
    except ValueError:  # a port that is not a number, a broken IPv6 host
        pieces = []
    found = {p for p in pieces if len(p) >= 4} | {unquote(p) for p in pieces if len(p) >= 4}
    return sorted(found | {url}, key=len, reverse=True)


def _redact(text: str, secrets: list[str], url: str, shown: str) -> str:
    """``text`` with ``url`` shown as ``shown``, and every secret as ``***``."""
    text = text.replace(url, shown)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


_ERRNO = re.compile(r"\[Errno -?\d+\] [^'\")\]]+")
_TIMED_OUT = re.compile(r"Read timed out\.?(?: \(read timeout=[\d.]+\))?|timed out", re.I)


def _why(lines: list[tuple[int, str]], fallback: str) -> str:
    """One line that says why Apprise did not deliver or load a URL, from what it logged.

    Its warnings (or, when there are none, its errors), then the socket error it
    logs at DEBUG, cut to its core: ``[Errno 111] Connection refused``, ``Read timed out``.
    """
    said: list[str] = []
    for least, most in ((logging.WARNING, logging.ERROR), (logging.ERROR, logging.CRITICAL)):
        said = [t.strip().rstrip(":") for level, t in lines if least <= level < most] or said
        said = list(dict.fromkeys(said))
        if said:
            break
    detail = ""
    for _, text in lines:
        if text.startswith("Socket Exception:"):
            raw = text.split(":", 1)[1].strip()
            match = _ERRNO.search(raw) or _TIMED_OUT.search(raw)
            detail = match.group().strip() if match else re.sub(r"with url: \S+", "", raw)
    why = "; ".join(said) or fallback
    if detail and detail not in why:
        why = f"{why.rstrip('.')} ({detail})"
    return one_line(why, 400)


def _bounded(plugin: Any, url: str) -> None:
    """Put CONNECT_TIMEOUT and READ_TIMEOUT on a plugin unless the URL sets cto= or rto=."""
    query = url.partition("?")[2].lower()
    keys = {item.partition("=")[0] for item in query.split("&")}
    if "cto" not in keys:
        plugin.socket_connect_timeout = CONNECT_TIMEOUT
    if "rto" not in keys:
        plugin.socket_read_timeout = READ_TIMEOUT


def _url_problem(url: str, scheme: str) -> tuple[str, str] | None:
    """(problem, fix) when Apprise cannot read the URL, each ${NAME} filled with stand-ins."""
    apprise = _apprise()
    with contextlib.suppress(Exception):  # in case a later Apprise drops NotificationManager
        schemes = {str(s).lower() for s in apprise.NotificationManager().schemas()}
        if schemes and scheme.lower() not in schemes:
            close = difflib.get_close_matches(scheme.lower(), sorted(schemes), n=1)
            hint = f'did you mean "{close[0]}://"?' if close else "see Apprise's list of services"
            return f'uses "{scheme}://", which Apprise does not know', hint
    asset = _asset()
    said: list[tuple[int, str]] = []  # what Apprise logged about the last try
    candidate = url
    for stand_in in _STAND_INS if _placeholders(url) else ("",):
        candidate = _PLACEHOLDER.sub(stand_in, url)
        with _apprise_log() as log:
            try:
                if apprise.Apprise.instantiate(candidate, asset=asset) is not None:
                    return None
            except Exception as e:  # a plugin that raises instead of logging
                log.append((logging.ERROR, f"{type(e).__name__}: {e}"))
        said = log
    # Shown as written, a literal password masked: the stand-ins are no secret.
    secrets = [p for p in (_password(url),) if p]
    why = _redact(_why(said, "Apprise cannot read it"), secrets, candidate, _mask(url))
    fix = "check it against the Apprise page of that service"
    if _placeholders(url):
        fix += " (each ${NAME} was checked with a stand-in value)"
    return f"is not a URL Apprise can use: {why}", fix


# --- sending ------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """A notification: a one-line title and a plain-text body."""

    title: str
    body: str


def send(url: str, message: Message) -> str | None:
    """Send ``message`` to one resolved Apprise URL, in this thread; None when delivered.

    Otherwise a one-line text saying why, made from Apprise's own log for this send
    (Apprise returns False without raising), with the URL's secret parts masked.
    Never raises for a delivery failure, and logs nothing: Apprise's records made
    during the send are captured, not passed on, as they may quote the URL.
    Each network step is bounded (CONNECT_TIMEOUT, READ_TIMEOUT) unless the URL
    sets ``cto=`` / ``rto=`` itself.
    """
    try:
        apprise = _apprise()
    except ImportError:
        return "Apprise is not installed (pip install apprise)"
    with _apprise_log() as lines:
        try:
            asset = _asset()
            plugin = apprise.Apprise.instantiate(url, asset=asset)
            if plugin is None:
                why = _why(lines, "it cannot read it")
                return "Apprise cannot use this URL: " + _redact(why, _secrets(url), url, "***")
            _bounded(plugin, url)
            sender = apprise.Apprise(asset=asset)
            sender.add(plugin)
            delivered = sender.notify(
                body=message.body, title=message.title, body_format=apprise.NotifyFormat.TEXT
            )
        except Exception as e:
            why = one_line(f"Apprise failed: {type(e).__name__}: {e}", 400)
            return _redact(why, _secrets(url), url, "***")
    if delivered:
        return None
    why = _why(lines, "Apprise reported a failure without saying why")
    return _redact(why, _secrets(url), url, "***")


# --- what the message says ----------------------------------------------------------


def obsidian_uri(vault_name: str, file_rel_path: str | PurePath) -> str:
    """``obsidian://open?vault=NAME&file=PATH``, each value percent-encoded (``/`` too).

    The path is vault-relative with ``/`` between folders and keeps its ``.md``
    (Obsidian accepts it with or without).
    """
    path = PurePath(file_rel_path).as_posix()
    return f"obsidian://open?vault={quote(vault_name, safe='')}&file={quote(path, safe='')}"


def _plain(text: object, limit: int) -> str:
    """Text from outside on one line: no format or control characters, at most ``limit``."""
    flat = " ".join(_NOT_PRINTABLE_ASCII.sub(_visible, str(text)).split())
    return _cut(flat, limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _paragraphs(text: str) -> str:
    """Several lines of text from outside: line breaks kept, nothing invisible."""
    lines = [_NOT_PRINTABLE_ASCII.sub(_visible, line).rstrip() for line in text.splitlines()]
    return "\n".join(lines).strip()


def _minute(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def _headline(event: Event, request: Request) -> str:
    by = f" by {_plain(request.decided_by, 60)}" if request.decided_by else ""
    return {
        Event.PENDING: "waiting for approval",
        Event.REMINDER: "still waiting for approval",
        Event.ESCALATED: "escalated, waiting for approval",
        Event.APPROVED: f"approved{by}",
        Event.REJECTED: f"rejected{by}",
        Event.TIMED_OUT: "timed out, nobody decided",
        Event.CANCELLED: f"cancelled{by}",
        Event.EXECUTED: "executed",
        Event.FAILED: "failed",
    }[event]


def _outcome(event: Event, request: Request) -> list[str]:
    """What came of the request: who decided, why, and what running it gave."""
    who = _plain(request.decided_by, 100) if request.decided_by else "unknown"
    when = f" at {_minute(request.decided_at)}" if request.decided_at else ""
    lines = []
    if event in (Event.APPROVED, Event.REJECTED, Event.CANCELLED):
        lines.append(f"Decided: {event} by {who}{when}")
    elif event in (Event.EXECUTED, Event.FAILED) and request.decided_by:
        lines.append(f"Decided: approved by {who}{when}")
    if request.reason:
        lines.append(f"Reason: {_plain(request.reason, 300)}")
    if event is Event.TIMED_OUT:
        until = f" before {_minute(request.expires)}" if request.expires else ""
        lines.append(f"Outcome: nobody decided{until}; it will never run")
    if event is Event.EXECUTED:
        lines.append(f"Result: {_plain(request.result or '(none)', 400)}")
    if event is Event.FAILED:
        lines.append(f"Error: {_plain(request.error or '(not recorded)', 400)}")
    return lines


def compose(
    event: Event | str,
    request: Request,
    *,
    note: str,
    vault_name: str,
    why: str = "",
    context: str = "",
) -> Message:
    """The plain-text message for one event of one request, at most MESSAGE_LIMIT characters.

    ``note`` is the note's vault-relative path, ``why`` the rule's explanation and
    ``context`` what the agent said about it. When it is too long, params are cut
    first (the last line then says "…and N more"), then the context.
    """
    event = Event(str(event))
    summary = request.summary or request.action
    title = f"[{request.risk}] {_plain(summary, 150)} — {_headline(event, request)}"
    rule = _plain(request.rule, 100) or "(none)"
    head = [_plain(summary, 300), "", f"Action: {_plain(request.action, 64)}"]
    # The note's form "Matched rule `x`: <why>" need not name the rule twice.
    reason = re.sub(rf"^Matched rule `{re.escape(request.rule)}`(?:: |\.$)", "", why.strip())
    tail = [f"Rule: {rule}" + (f" — {_plain(reason, 400)}" if reason else "")]
    if request.requested_by:
        tail.append(f"Requested by: {_plain(request.requested_by, 100)}")
    if event in _DECIDE_EVENTS:
        tail.append(f"Decide by: {_minute(request.expires)}" if request.expires else "No expiry")
    tail += _outcome(event, request)
    end = [""]
    if event in _DECIDE_EVENTS:
        end += [
            "To decide: set status: approved or status: rejected in the note, or run",
            f"  hitl-vault approve {request.id}",
            f"  hitl-vault reject {request.id}",
        ]
    end += [f"Note: {note}", f"Open in Obsidian: {obsidian_uri(vault_name, note)}"]
    params = [
        f"- {_plain(key, 60)}: {_plain(_value(value), 200)}"
        for key, value in request.params.items()
    ]
    story = _paragraphs(context)

    def body(shown: int, context_text: str) -> str:
        lines = list(head)
        if params:
            lines.append("Params:")
            lines += params[:shown]
            if shown < len(params):
                lines.append(f"…and {len(params) - shown} more")
        lines += tail
        if context_text:
            lines += ["", "Context:", context_text]
        return "\n".join(lines + end)

    room = MESSAGE_LIMIT - len(title)
    if len(body(len(params), story)) <= room:
        return Message(title, body(len(params), story))
    low, high = 0, len(params)  # the most params that fit with the whole context
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if len(body(mid, story)) <= room else (low, mid - 1)
    if len(body(low, story)) <= room:
        return Message(title, body(low, story))
    spare = room - len(body(0, ""))
    if story and spare > len("\n\nContext:\n") + 20:
        text = body(0, _cut(story, spare - len("\n\nContext:\n")))
    else:
        text = body(0, "")
    return Message(title, _cut(text, room))
