"""What every HTTP request meets before any route: the Host and Origin check (DNS
rebinding), no token in the URL, the body limit (counted while it is read), one deadline
for the whole body, one access-log line without the query string or a link's secret, the
safe headers on every answer (errors too), the public URL's path prefix as ``root_path``,
and a last net that turns a bug into a logged traceback and a 500 (never the answer to any
input)."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import urllib.parse
from collections.abc import Iterable

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("hitl_vault.serve.access")
bugs = logging.getLogger("hitl_vault.serve")

# A body over this many bytes is refused (413), counted as it arrives.
BODY_LIMIT = 1024 * 1024
# A request whose body has not all arrived this long after its head is answered 408 and
# closed: one deadline for the whole body, however it trickles in (a byte every few seconds
# would hold a connection for hours under a timeout per read). 1 MiB in 10 s is 100 kB/s.
READ_TIMEOUT = 10.0
# Query parameters that would put a secret in URLs, logs and browser history.
SECRET_PARAMS = frozenset({"token", "access_token", "api_key", "apikey", "key", "secret"})
LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


# The path parts after which everything is a secret (a decision link, a one-time sign-in),
# wherever they stand (a proxy may keep a prefix: ``/vault/d/SECRET``); only a link's last
# ``approve`` or ``reject`` right after its secret is logged.
SECRET_PARTS = ("d", "login")
_SHOWN_TAILS = ("approve", "reject")

# Sent with every answer that does not say otherwise (pages, files, the API, errors, the
# guard's own): nothing is cached, sniffed, framed, or told where it came from.
SAFE_HEADERS = (
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("content-security-policy", "default-src 'none'; frame-ancestors 'none'; base-uri 'none'"),
)


def logged_path(path: object) -> str:
    """``path`` as a log (or an error) may show it: ``/d/…`` for a decision link, never its
    secret, nor anything else after ``/d/`` or ``/login/`` but a last approve or reject."""
    parts = str(path).split("/")
    for i, part in enumerate(parts[:-1]):
        if part in SECRET_PARTS and any(parts[i + 1 :]):
            rest = parts[i + 1 :]
            shown = part == "d" and len(rest) == 2 and rest[0] and rest[1] in _SHOWN_TAILS
            tail = [rest[1]] if shown else []
            return "/".join([*parts[: i + 1], "…", *tail])
    return str(path)


def with_safe_headers(headers: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """``headers`` (an ASGI answer's) and each of :data:`SAFE_HEADERS` they do not set."""
    given = {name.lower() for name, _ in headers}
    extra = [(k.encode(), v.encode()) for k, v in SAFE_HEADERS if k.encode() not in given]
    return [*headers, *extra]


def route_path(scope: Scope) -> str:
    """The path the routes see: without the public URL's path prefix (``root_path``) when
    a proxy kept it, as Starlette's routing strips it."""
    path, root = str(scope.get("path", "")), str(scope.get("root_path", ""))
    if root and (path == root or path.startswith(root + "/")):
        return path[len(root) :] or "/"
    return path


class _Cut:
    """Why the guard cut a request's body short (then it answers, not the app)."""

    def __init__(self) -> None:
        self.answer: tuple[int, str, list[tuple[str, str]]] | None = None


def host_only(value: str) -> str:
    """``example.com:8787`` → ``example.com``; ``[::1]:80`` → ``[::1]`` (lowercase)."""
    value = value.strip().lower()
    if value.startswith("["):
        return value.split("]", 1)[0] + "]"
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def allowed_hosts(public_url: str | None, also: Iterable[str] = ()) -> frozenset[str]:
    """The Host names this service answers to: the public URL's, this machine's, ``also``."""
    hosts = set(LOOPBACK_HOSTS)
    if public_url:
        name = urllib.parse.urlsplit(public_url).hostname
        if name:
            hosts.add(f"[{name}]" if ":" in name else name.lower())
    for host in also:
        if host and host not in ("0.0.0.0", "::", "[::]"):
            hosts.add(host_only(host) if not host.count(":") > 1 else f"[{host.strip('[]')}]")
    return frozenset(hosts)


async def _answer(
    send: Send, status: int, error: str, headers: Iterable[tuple[str, str]] = ()
) -> None:
    body = json.dumps({"error": error}).encode()
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
    start = {"type": "http.response.start", "status": status, "headers": with_safe_headers(raw)}
    await send(start)
    await send({"type": "http.response.body", "body": body})


class Guard:
    """The ASGI middleware around the whole app (see the module's docstring)."""

    def __init__(
        self,
        app: ASGIApp,
        hosts: frozenset[str],
        *,
        body_limit: int = BODY_LIMIT,
        read_timeout: float = READ_TIMEOUT,
        forms: Iterable[str] = (),
        prefix: str = "",
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.body_limit = body_limit
        self.read_timeout = read_timeout
        # Pages' form routes (regular expressions, each matching a whole path): a browser
        # posts their forms with ``Origin: null``, since the pages send
        # ``Referrer-Policy: no-referrer``.
        self.forms = tuple(re.compile(form) for form in forms)
        # The public URL's path (``https://host/vault`` → ``/vault``), as ``root_path``: the
        # pages' addresses start with it, and a path that still holds it is routed without.
        self.prefix = prefix.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.prefix and scope["type"] in ("http", "websocket"):
            scope = {**scope, "root_path": self.prefix}
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = [0]
        cut = _Cut()

        async def sending(message: Message) -> None:
            if cut.answer is not None:  # the guard answers this one: the app's words go
                return
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message = {
                    **message,
                    "headers": with_safe_headers(list(message.get("headers", []))),
                }
            await send(message)

        async def answer(code: int, error: str, headers: Iterable[tuple[str, str]] = ()) -> None:
            status[0] = code
            await _answer(send, code, error, headers)

        try:
            refusal = self._refusal(scope)
            if refusal is not None:
                await answer(*refusal)
            else:
                await self.app(scope, self._limited(receive, cut), sending)
        except ClientDisconnect:  # the client left mid-body, or the guard cut it short
            if cut.answer is not None and not status[0]:
                await answer(*cut.answer)
        except Exception:  # a bug, or the app stopped at a body the guard cut short
            if cut.answer is None:
                path = logged_path(scope.get("path"))
                bugs.exception("bug answering %s %s", scope.get("method"), path)
                cut.answer = (500, "internal error (a bug; the service's log has it)", [])
            if not status[0]:
                await answer(*cut.answer)
        else:
            if cut.answer is not None and not status[0]:
                await answer(*cut.answer)
        finally:
            client = scope.get("client")
            log.info(
                "%s %s %s %s",
                client[0] if client else "-",
                scope.get("method"),
                logged_path(scope.get("path")),  # never the query string, nor a link's secret
                status[0] or "-",
            )

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if any(name.lower() in SECRET_PARAMS for name in query):
            return 400, "a token never goes in the URL: send it as 'Authorization: Bearer TOKEN'"
        host = headers.get("host")
        if host is not None and host_only(host) not in self.hosts:
            return 421, "this service does not answer to that Host (see serve --public-url)"
        origin = headers.get("origin")
        if origin is not None and origin != "null":
            name = urllib.parse.urlsplit(origin).netloc
            if host_only(name) not in self.hosts:
                return 403, "requests from that Origin are refused"
        elif origin == "null" and not self._form(route_path(scope)):
            return 403, "requests from that Origin are refused"
        length = headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self.body_limit:
            return 413, f"the body is over {self.body_limit:,} bytes"
        return None

    def _form(self, path: str) -> bool:
        """Whether ``path`` is a page's form, which may come with ``Origin: null``: a page
        that sends no Referer makes the browser hide its own origin too (the Fetch
        standard), so the form's CSRF token, or the link in its URL, is what counts there."""
        return any(form.fullmatch(path) for form in self.forms)

    def _limited(self, receive: Receive, cut: _Cut) -> Receive:
        """``receive`` that counts the body and gives up on one not whole ``read_timeout``
        seconds after the request began: the app is told the client left, and the guard
        answers 413 or 408. Once the body is whole, later calls (a long-poll's watch for a
        disconnect) wait as long as they like."""
        seen = 0
        whole = False
        deadline = asyncio.get_running_loop().time() + self.read_timeout

        async def limited() -> Message:
            nonlocal seen, whole
            if whole or cut.answer is not None:
                return await receive() if cut.answer is None else {"type": "http.disconnect"}
            try:  # (a deadline, not wait_for: no task made for every message)
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                cut.answer = (
                    408,
                    "the body stopped arriving; send it whole",
                    [("connection", "close")],
                )
                return {"type": "http.disconnect"}
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                whole = not message.get("more_body", False)
                if seen > self.body_limit:
                    cut.answer = (
                        413,
                        f"the body is over {self.body_limit:,} bytes",
                        [("connection", "close")],
                    )
                    return {"type": "http.disconnect"}
            return message

        return limited
