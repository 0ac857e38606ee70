"""What every HTTP request meets before any route: the Host and Origin check (DNS
rebinding), no token in the URL, the body limit (counted while it is read), one deadline
for the whole body, one access-log line without the query string, and a last net that turns
a bug into a logged traceback and a 500 (never the answer to any input)."""

from __future__ import annotations

import asyncio
import json
import logging
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


# Paths whose last part is a secret (a decision link, a one-time sign-in): logged without it.
SECRET_PATHS = ("/d/", "/login/")


def logged_path(path: object) -> str:
    """``path`` as a log may show it: ``/d/…`` for a decision link, never its secret."""
    text = str(path)
    for prefix in SECRET_PATHS:
        if text.startswith(prefix) and len(text) > len(prefix):
            rest = text[len(prefix) :]
            tail = rest.partition("/")[2]
            return f"{prefix}…" + (f"/{tail}" if tail else "")
    return text


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
    await send({"type": "http.response.start", "status": status, "headers": raw})
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
    ) -> None:
        self.app = app
        self.hosts = hosts
        self.body_limit = body_limit
        self.read_timeout = read_timeout
        # Pages' form paths (``/d/`` a prefix, ``/login`` exact): a browser posts their forms
        # with ``Origin: null``, since the pages send ``Referrer-Policy: no-referrer``.
        self.forms = tuple(forms)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
        elif origin == "null" and not self._form(str(scope.get("path", ""))):
            return 403, "requests from that Origin are refused"
        length = headers.get("content-length", "")
        if length.isascii() and length.isdigit() and int(length) > self.body_limit:
            return 413, f"the body is over {self.body_limit:,} bytes"
        return None

    def _form(self, path: str) -> bool:
        """Whether ``path`` is a page's form, which may come with ``Origin: null``: a page
        that sends no Referer makes the browser hide its own origin too (the Fetch
        standard), so the form's CSRF token, or the link in its URL, is what counts there."""
        return any(
            path.startswith(form) if form.endswith("/") and len(form) > 1 else path == form
            for form in self.forms
        )

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
            try:
                left = deadline - asyncio.get_running_loop().time()
                message = await asyncio.wait_for(receive(), max(left, 0.0))
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
