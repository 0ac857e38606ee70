"""The HTTP app: the REST API over a :class:`~hitl_vault.serve.service.Service`, with the
places where the gate over HTTP (``POST /api/v1/gate``) and MCP (``/mcp``) mount.

Bearer tokens only (``Authorization: Bearer ...``; never a cookie, never the URL). Every
answer is JSON; every error is ``{"error": "..."}`` with the status the README lists: 401
(no detail), 403, 404, 409, 413, 422 (the message the CLI gives for the same input), 429.
"""

from __future__ import annotations

import asyncio
import math
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..errors import ForbiddenError, NotAuthenticatedError, TooManyAttemptsError, UsageError
from ..identity import Principal, Role
from ..model import Status
from ..policy.pitch import make_pitch
from .answers import Fields, error_response, parse_json
from .guard import BODY_LIMIT, READ_TIMEOUT, Guard, allowed_hosts, logged_path
from .openapi import document
from .service import Service

T = TypeVar("T")

# What the access log says of a request whose client left before its answer (nobody reads it).
CLIENT_GONE = 499

# The longest a long-poll may hold (``?wait=``), and the most requests one list returns.
LONGEST_WAIT = 60.0
MOST_LISTED = 1000
DEFAULT_LISTED = 100

# ``POST /api/v1/gate``: the agent's hook input → the gate's answer (run on a service thread).
GateHandler = Callable[[Principal, dict[str, Any]], dict[str, Any]]
Endpoint = Callable[[HttpRequest], Awaitable[Response]]

_SUBMIT_FIELDS: Fields = {
    "action": str,
    "params": dict,
    "summary": str,
    "context": str,
    "timeout": (str, int, float),
    # The agent's own session id and client name: kept in fields of their own, shown.
    "session": str,
    "client": str,
    # Any JSON here: make_pitch checks them, with the error every entry gives.
    **dict.fromkeys(("reasoning", "confidence", "alternatives", "risk_factors"), (object, bool)),
}
_DECISION_FIELDS: Fields = {"decision": str, "reason": str, "expect": str}
_RESULT_FIELDS: Fields = {"result": str, "error": str}


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def who_is(service: Service, scope: Scope, role: Role | None = None) -> Principal:
    """The principal of the request's bearer token (401; 429 from an address refused
    after repeated failures, a valid token excepted);
    ``role``: only that role may go on (403). It reads the store: call it on a service
    thread (:meth:`Service.call`), with the rest of the request's work."""
    client = _client(scope)
    header = ""
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            header = value.decode("latin-1")
    scheme, _, secret = header.strip().partition(" ")
    # The token first: a valid one is never refused (behind a proxy, every agent shares
    # the proxy's address with whoever guesses). From a refused address, every failure
    # is a 429, a guess as much as no token: the answer says nothing about what was sent.
    left = service.refused_for(client)
    who = None
    if scheme.lower() == "bearer" and secret.strip():
        who = service.authenticate(secret.strip(), client)
    if who is None and left > 0:
        raise TooManyAttemptsError(
            f"too many failed sign-ins from {client}: try again in {math.ceil(left)} s"
        )
    if who is None:
        raise NotAuthenticatedError()
    if role is not None and who.role is not role:
        raise ForbiddenError(f"this needs an {role} token; {who.name} holds an {who.role} token")
    return who


def _answering(fn: Endpoint) -> Endpoint:
    """The endpoint's errors as the statuses the README lists."""

    async def endpoint(request: HttpRequest) -> Response:
        try:
            return await fn(request)
        except ClientDisconnect:  # gone (or its body cut short: the guard answers that)
            return Response(status_code=CLIENT_GONE)
        except Exception as e:
            answer = error_response(e)
            if answer is None:
                raise
            return answer

    return endpoint


def _query(request: HttpRequest, *allowed: str) -> dict[str, str]:
    """The query parameters, none but ``allowed`` (an unknown one is a 422, as a field is)."""
    given = request.query_params
    for name in given:
        if name not in allowed:
            names = ", ".join(allowed) or "none"
            raise UsageError(name, "is not a parameter of this request", f"they are: {names}")
    return {name: given[name] for name in given}


def _wait_seconds(text: str | None) -> float:
    if text is None:
        return 0.0
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= LONGEST_WAIT:  # NaN too
        raise UsageError(
            "wait",
            f"{text!r} is not a number of seconds from 0 to 60",
            "give --wait SECONDS, at most 60, and ask again for longer",
        )
    return seconds


def _limit(text: str | None) -> int:
    if text is None:
        return DEFAULT_LISTED
    if not (text.isascii() and text.isdigit()) or not 1 <= int(text) <= MOST_LISTED:
        raise UsageError(
            "limit",
            f"{text!r} is not a number from 1 to {MOST_LISTED}",
            "give the most requests to list",
        )
    return int(text)


async def _unless_gone(request: HttpRequest, work: Coroutine[Any, Any, T]) -> T:
    """``work``'s result; if the client hangs up first, ``work`` is cancelled (a long-poll
    nobody waits for any more holds nothing) and :class:`ClientDisconnect` is raised."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_hung_up(request))
    try:
        await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watch):
            if not pending.done():
                pending.cancel()
    if task.done() and not task.cancelled():
        return task.result()
    raise ClientDisconnect()


async def _hung_up(request: HttpRequest) -> None:
    """Returns when the client disconnects (the request's body read and dropped first)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class Routes:
    """The REST API's endpoints: each reads what the client sent on the event loop, then does
    all of its journal work in one call on a service thread (who asks, what they may do,
    the operation, the answer), so a request crosses threads once."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def submit(self, request: HttpRequest) -> Response:
        s, raw = self.service, await request.body()

        def work() -> dict[str, Any]:
            who = who_is(s, request.scope)
            _query(request)
            body = parse_json(raw, _SUBMIT_FIELDS, required=("action",))
            who = replace(
                who, session=body.get("session") or "", client_name=body.get("client") or ""
            )
            pitch = make_pitch(
                reasoning=body.get("reasoning"), confidence=body.get("confidence"),
                alternatives=body.get("alternatives"), risk_factors=body.get("risk_factors"),
            )  # fmt: skip
            made = s.submit(
                who, body["action"], body.get("params") or {},
                summary=body.get("summary") or "", context=body.get("context"),
                timeout=body.get("timeout"), pitch=pitch,
            )  # fmt: skip
            return s.shown_new(made, who)

        shown = await s.call(work)
        location = f"/api/v1/requests/{shown['id']}"
        return JSONResponse(shown, status_code=201, headers={"Location": location})

    async def get(self, request: HttpRequest) -> Response:
        s = self.service
        request_id = request.path_params["id"]

        def asked() -> tuple[Principal, float, Status | None]:
            query = _query(request, "wait", "status")
            since = Status.named(query["status"]) if "status" in query else None
            return who_is(s, request.scope), _wait_seconds(query.get("wait")), since

        who, seconds, since = await s.call(asked)
        if seconds > 0:
            waited = s.wait_shown(who, request_id, seconds, since)
            return JSONResponse(await _unless_gone(request, waited))
        return JSONResponse(await s.call(lambda: s.shown(s.get(who, request_id), who)))

    async def list(self, request: HttpRequest) -> Response:
        s = self.service

        def work() -> list[dict[str, Any]]:
            who = who_is(s, request.scope)
            query = _query(request, "status", "limit")
            status = query.get("status")
            wanted = Status.named(status) if status is not None else None
            return s.listed(s.list(who, wanted, _limit(query.get("limit"))), who)

        return JSONResponse(await s.call(work))

    async def cancel(self, request: HttpRequest) -> Response:
        s, raw = self.service, await request.body()

        def work() -> dict[str, Any]:
            who = who_is(s, request.scope)
            _query(request)
            parse_json(raw, {}, empty=True)
            return s.shown(s.cancel(who, request.path_params["id"]), who)

        return JSONResponse(await s.call(work))

    async def decide(self, request: HttpRequest) -> Response:
        s, raw = self.service, await request.body()

        def work() -> dict[str, Any]:
            who = who_is(s, request.scope)
            _query(request)
            body = parse_json(raw, _DECISION_FIELDS, required=("decision",))
            decision = body["decision"]
            if decision not in ("approve", "reject"):
                raise UsageError(
                    "decision", f"{decision!r} is not a decision", "give approve or reject"
                )
            if decision == "reject" and body.get("expect") is not None:
                raise UsageError(
                    "expect", "goes with an approval only", "leave it out of a rejection"
                )
            done = s.decide(
                who, request.path_params["id"], decision == "approve",
                body.get("reason") or "", body.get("expect"),
            )  # fmt: skip
            return s.shown(done, who)

        return JSONResponse(await s.call(work))

    async def result(self, request: HttpRequest) -> Response:
        s, raw = self.service, await request.body()

        def work() -> dict[str, Any]:
            who = who_is(s, request.scope)
            _query(request)
            body = parse_json(raw, _RESULT_FIELDS)
            result, error = body.get("result"), body.get("error")
            if (result is None) == (error is None):
                raise UsageError("result", "give result or error, one of them", "send one")
            return s.shown(s.done(who, request.path_params["id"], result, error), who)

        return JSONResponse(await s.call(work))

    async def gate(self, request: HttpRequest, handler: GateHandler) -> Response:
        s, raw = self.service, await request.body()

        def work() -> dict[str, Any]:
            who = who_is(s, request.scope, Role.AGENT)
            _query(request)
            return handler(who, parse_json(raw, None))

        return JSONResponse(await s.call(work))


def _healthz(service: Service) -> Callable[[HttpRequest], Awaitable[Response]]:
    async def healthz(request: HttpRequest) -> Response:
        """Up and answering, and whether this host leads; no credentials, nothing about the
        vault's requests."""
        return JSONResponse({"ok": True, "version": __version__, **service.health()})

    return healthz


class _Asgi:
    """An ASGI app as a route's endpoint (a plain function would be taken for a handler)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def build_app(
    service: Service,
    *,
    gate: GateHandler | None = None,
    mcp_app: ASGIApp | None = None,
    lifespans: Sequence[Callable[[], AbstractAsyncContextManager[Any]]] = (),
    public_url: str | None = None,
    hosts: Sequence[str] = (),
    body_limit: int = BODY_LIMIT,
    read_timeout: float = READ_TIMEOUT,
) -> ASGIApp:
    """The service's ASGI app. ``gate``: the handler of ``POST /api/v1/gate`` (none: the
    route is not there); ``mcp_app``: the app mounted at ``/mcp`` (it checks the bearer
    token itself, with :meth:`Service.authenticate`);
    ``lifespans``: started with the app, after the service (the MCP session manager's).
    Requests whose Host or Origin is not ``public_url``'s host, this machine's or one of
    ``hosts`` are refused."""
    routes = Routes(service)
    table: list[BaseRoute] = [
        Route("/healthz", _healthz(service), methods=["GET"]),
        Route("/openapi.json", _openapi(gate is not None, mcp_app is not None), methods=["GET"]),
        Route("/api/v1/requests", _answering(routes.submit), methods=["POST"]),
        Route("/api/v1/requests", _answering(routes.list), methods=["GET"]),
        Route("/api/v1/requests/{id}", _answering(routes.get), methods=["GET"]),
        Route("/api/v1/requests/{id}/cancel", _answering(routes.cancel), methods=["POST"]),
        Route("/api/v1/requests/{id}/decision", _answering(routes.decide), methods=["POST"]),
        Route("/api/v1/requests/{id}/result", _answering(routes.result), methods=["POST"]),
    ]
    if gate is not None:
        handler = gate

        async def gating(request: HttpRequest) -> Response:
            return await routes.gate(request, handler)

        table.append(Route("/api/v1/gate", _answering(gating), methods=["POST"]))
    if mcp_app is not None:  # the one path Streamable HTTP uses (no redirect to /mcp/)
        table.append(Route("/mcp", _Asgi(mcp_app), methods=None))
    # The pages people decide on (hitl_vault.web): loaded with the app, not with the API.
    from ..web.inbox import routes as inbox_routes
    from ..web.pages import routes as page_routes
    from ..web.render import static_routes
    from ..web.safety import FORMS

    table += [*page_routes(service), *inbox_routes(service), *static_routes()]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await service.start()
        try:
            async with AsyncExitStack() as stack:
                for started in lifespans:
                    await stack.enter_async_context(started())
                yield
        finally:
            await service.stop()

    app = Starlette(routes=table, lifespan=lifespan, exception_handlers={500: _bug})
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(405, _not_allowed)
    return Guard(
        app, allowed_hosts(public_url, hosts), body_limit=body_limit, read_timeout=read_timeout,
        forms=FORMS, prefix=urllib.parse.urlsplit(public_url or "").path,
    )  # fmt: skip


def _openapi(gate: bool, mcp: bool) -> Endpoint:
    shown = document(gate=gate, mcp=mcp)

    async def openapi(request: HttpRequest) -> Response:
        return JSONResponse(shown)

    return openapi


async def _bug(request: HttpRequest, exc: Exception) -> Response:
    """A bug's answer (the guard logs its traceback): JSON, as every other answer is."""
    return JSONResponse({"error": "internal error (a bug; the service's log has it)"}, 500)


async def _not_found(request: HttpRequest, exc: Exception) -> Response:
    path = logged_path(request.scope.get("path", ""))  # never a link's secret
    return JSONResponse({"error": f"{path}: no such route (see /openapi.json)"}, status_code=404)


async def _not_allowed(request: HttpRequest, exc: Exception) -> Response:
    return JSONResponse(
        {"error": f"{request.method} is not allowed here (see /openapi.json)"}, status_code=405
    )
