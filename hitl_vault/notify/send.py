"""Sending one notification with Apprise, never raising, never logging a secret.

Apprise is imported on first use, so importing this module stays cheap for every CLI
command; every error text made from Apprise's log has the URL's secret parts masked.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import re
import threading
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from ..text import one_line

# One send in all (however many steps, however slowly a receiver trickles) is given up
# after SEND_TIMEOUT by :func:`send_within`: a failed try, tried again later.
SEND_TIMEOUT = 15.0
# Every network step of one send (connect, then each read) is bounded by these,
# Apprise's cto= and rto= (a URL that sets them keeps its own). HTTP services give
# up on a receiver that does not answer after CONNECT + READ, 10 s; e-mail applies
# CONNECT_TIMEOUT to each SMTP step (smtplib has one timeout).
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 5.0

PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_SECRET_KEY = re.compile(r"pass|pwd|token|secret|key", re.IGNORECASE)
# What stands in for ${NAME} when a URL is checked at parse time: tried in turn, as a
# value that one service accepts may be refused by another (Telegram wants "digits:text").
_STAND_INS = ("hitlvault", "1234567890", "1234567890:hitl-vault")


def placeholders(url: str) -> list[str]:
    return [m.group(1) for m in PLACEHOLDER.finditer(url)]


def _split(url: str) -> tuple[str, str, str, str]:
    """(``scheme://``, ``user:pass@`` or "", host and port, the rest) of a URL as written."""
    scheme = SCHEME.match(url)
    head, rest = (url[: scheme.end()], url[scheme.end() :]) if scheme else ("", url)
    end = min([len(rest)] + [at for at in map(rest.find, "/?#") if at != -1])
    userinfo, at, host = rest[:end].rpartition("@")
    return head, userinfo + at, host, rest[end:]


def url_password(url: str) -> str:
    """The literal password of ``user:pass@`` ("" when none, or when it is a ``${NAME}``)."""
    password = _split(url)[1][:-1].partition(":")[2]
    return "" if only_placeholders(password) else password


def mask_url(url: str) -> str:
    """``url`` with the password of ``user:pass@`` and secret-named query values as ``****``."""
    head, userinfo, host, tail = _split(url)
    if url_password(url):
        userinfo = userinfo.partition(":")[0] + ":****@"
    elif _TOKEN_AS_USER.fullmatch(head) and userinfo and not only_placeholders(userinfo[:-1]):
        userinfo = "****@"  # ntfy's ``{token}@host``: an access token where a user would be
    path, question, query = tail.partition("?")
    if question:
        items = []
        for item in query.split("&"):
            key, equals, value = item.partition("=")
            if equals and value and _SECRET_KEY.search(key) and not only_placeholders(value):
                item = f"{key}=****"
            items.append(item)
        tail = f"{path}?{'&'.join(items)}"
    return head + userinfo + host + tail


SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
_TOKEN_AS_USER = re.compile(r"ntfys?://", re.IGNORECASE)


def only_placeholders(text: str) -> bool:
    return bool(text) and not PLACEHOLDER.sub("", text)


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


def url_problem(url: str, scheme: str) -> tuple[str, str] | None:
    """(problem, fix) when Apprise cannot read the URL, each ${NAME} filled with stand-ins."""
    apprise = _apprise()
    with contextlib.suppress(Exception):  # in case a later Apprise drops NotificationManager
        schemes = {str(s).lower() for s in apprise.NotificationManager().schemas()}
        if schemes and scheme.lower() not in schemes:
            import difflib  # here: only a mistake needs it

            close = difflib.get_close_matches(scheme.lower(), sorted(schemes), n=1)
            hint = f'did you mean "{close[0]}://"?' if close else "see Apprise's list of services"
            return f'uses "{scheme}://", which Apprise does not know', hint
    asset = _asset()
    said: list[tuple[int, str]] = []  # what Apprise logged about the last try
    candidate = url
    for stand_in in _STAND_INS if placeholders(url) else ("",):
        candidate = PLACEHOLDER.sub(stand_in, url)
        with _apprise_log() as log:
            try:
                if apprise.Apprise.instantiate(candidate, asset=asset) is not None:
                    return None
            except Exception as e:  # a plugin that raises instead of logging
                log.append((logging.ERROR, f"{type(e).__name__}: {e}"))
        said = log
    # Shown as written, a literal password masked: the stand-ins are no secret.
    secrets = [p for p in (url_password(url),) if p]
    why = _redact(_why(said, "Apprise cannot read it"), secrets, candidate, mask_url(url))
    fix = "check it against the Apprise page of that service"
    if placeholders(url):
        fix += " (each ${NAME} was checked with a stand-in value)"
    return f"is not a URL Apprise can use: {why}", fix


# --- sending ------------------------------------------------------------------------


MESSAGE_LIMIT = 4000  # title + body, in characters; ntfy takes 4,096 bytes


@dataclass(frozen=True)
class Message:
    """A notification: a one-line title and a plain-text body. ``cut``: the body does not
    show every param exactly as it would run (some left out to fit, or shown shortened or
    on one line; the note has them all)."""

    title: str
    body: str
    cut: bool = False


def send(url: str, message: Message, *, hide: Sequence[str] = ()) -> str | None:
    """Send ``message`` to one resolved Apprise URL, in this thread; None when delivered.

    Otherwise a one-line text saying why, made from Apprise's own log for this send
    (Apprise returns False without raising), with the URL's secret parts masked, and
    each text of ``hide`` (a decision link's secret the message carries) as ``***``.
    Never raises for a delivery failure, and logs nothing: Apprise's records made
    during the send are captured, not passed on, as they may quote the URL.
    Each network step is bounded (CONNECT_TIMEOUT, READ_TIMEOUT) unless the URL
    sets ``cto=`` / ``rto=`` itself.
    """
    try:
        apprise = _apprise()
    except ImportError:
        return "Apprise is not installed (pip install apprise)"
    secrets = sorted({*_secrets(url), *(h for h in hide if h)}, key=len, reverse=True)
    with _apprise_log() as lines:
        try:
            asset = _asset()
            plugin = apprise.Apprise.instantiate(url, asset=asset)
            if plugin is None:
                why = _why(lines, "it cannot read it")
                return "Apprise cannot use this URL: " + _redact(why, secrets, url, "***")
            _bounded(plugin, url)
            sender = apprise.Apprise(asset=asset)
            sender.add(plugin)
            delivered = sender.notify(
                body=message.body, title=message.title, body_format=apprise.NotifyFormat.TEXT
            )
        except Exception as e:
            why = one_line(f"Apprise failed: {type(e).__name__}: {e}", 400)
            return _redact(why, secrets, url, "***")
    if delivered:
        return None
    why = _why(lines, "Apprise reported a failure without saying why")
    return _redact(why, secrets, url, "***")


def has_token(url: str) -> bool:
    """Whether Apprise reads an access token in ``url`` (resolved): for ntfy,
    ``ntfy://tk_...@host/topic``, ``?token=`` or ``?auth=token``. False when it cannot
    read the URL at all."""
    try:
        apprise = _apprise()
        with _apprise_log():
            plugin = apprise.Apprise.instantiate(url, asset=_asset())
    except Exception:  # Apprise missing, or a plugin that raises: no token we can vouch for
        return False
    return bool(getattr(plugin, "token", None))


_LEFT = threading.local()  # per sending thread: a send given up on that has not ended yet


def send_within(
    url: str, message: Message, seconds: float = SEND_TIMEOUT, *, hide: Sequence[str] = ()
) -> str | None:
    """:func:`send`, given up after ``seconds`` in all: then a text saying so, as for any
    failure (the outbox tries again later). The send given up on goes on in a thread of
    its own until its socket bounds end it; the next send from the same thread first
    waits (at most ``seconds``) for it to end, so one receiver never has more than one
    connection from a thread at a time."""
    earlier: threading.Thread | None = getattr(_LEFT, "send", None)
    if earlier is not None:
        earlier.join(seconds)
        if earlier.is_alive():
            return f"no answer to an earlier message after {seconds * 2:g} s (send timeout)"
        _LEFT.send = None
    said: list[str | None] = []
    sending = threading.Thread(
        target=lambda: said.append(send(url, message, hide=hide)),
        name="hitl-notify-send",
        daemon=True,
    )
    sending.start()
    sending.join(seconds)
    if sending.is_alive():
        _LEFT.send = sending
        return f"no answer within {seconds:g} s (send timeout)"
    return said[0] if said else "the send ended without a result (a bug)"


# --- what the message says ----------------------------------------------------------
