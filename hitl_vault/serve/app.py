"""The HTTP app: the REST API over a :class:`~hitl_vault.serve.service.Service`, with the
places where the gate over HTTP (``POST /api/v1/gate``) and MCP (``/mcp``) mount.

Bearer tokens only (``Authorization: Bearer ...``; never a cookie, never the URL). Every
answer is JSON; every error is ``{"error": "..."}`` with the status the README lists: 401
(no detail), 403, 404, 409, 413, 422 (the message the CLI gives for the same input), 429.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from .. import __version__
from ..errors import NotAuthenticatedError, TooManyAttemptsError, UsageError
from ..identity import Principal, Role
from ..model import Status
from .answers import Fields, error_response, read_json
from .guard import BODY_LIMIT, READ_TIMEOUT, Guard, allowed_hosts
from .openapi import document
from .service import Service

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
}
_DECISION_FIELDS: Fields = {"decision": str, "reason": str, "expect": str}


def _client(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


async def authenticated(
    service: Service, request: HttpRequest, role: Role | None = None
) -> Principal:
    """The principal of the request's bearer token (401, or 429 after repeated failures);
    ``role``: only that role may go on (403)."""
    return await principal_of(service, request.scope, role)


async def principal_of(service: Service, scope: Scope, role: Role | None = None) -> Principal:
    """:func:`authenticated` for any ASGI scope (the mounted apps)."""
    client = _client(scope)
    left = service.refused_for(client)
    if left > 0:
        raise TooManyAttemptsError(
            f"too many failed sign-ins from {client}: try again in {math.ceil(left)} s"
        )
    header = ""
    for name, value in scope["headers"]:
        if name.lower() == b"authorization":
            header = value.decode("latin-1")
    scheme, _, secret = header.strip().partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise NotAuthenticatedError()
    who = await service.call(service.authenticate, secret.strip(), client)
    if who is None:
        raise NotAuthenticatedError()
    if role is not None and who.role is not role:
        from ..errors import ForbiddenError

        raise ForbiddenError(f"this needs an {role} token; {who.name} holds an {who.role} token")
    return who


def _answering(fn: Endpoint) -> Endpoint:
    """The endpoint's errors as the statuses the README lists."""

    async def endpoint(request: HttpRequest) -> Response:
        try:
            return await fn(request)
        except Exception as e:
            answer = error_response(e)
            if answer is None:
                raise
            return answer

    return endpoint


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
    if not text.isdigit() or not 1 <= int(text) <= MOST_LISTED:
        raise UsageError(
            "limit",
            f"{text!r} is not a number from 1 to {MOST_LISTED}",
            "give the most requests to list",
        )
    return int(text)


class Routes:
    """The REST API's endpoints, each a thin call into the service."""

    def __init__(self, service: Service) -> None:
        self.service = service

    async def submit(self, request: HttpRequest) -> Response:
        s = self.service
        who = await authenticated(s, request)
        body = await read_json(request, _SUBMIT_FIELDS, required=("action",))
        created = await s.call(
            s.submit, who, body["action"], body.get("params") or {},
            summary=body.get("summary", ""), context=body.get("context"),
            timeout=body.get("timeout"),
        )  # fmt: skip
        shown = await s.call(s.shown, created)
        location = f"/api/v1/requests/{created.id}"
        return JSONResponse(shown, status_code=201, headers={"Location": location})

    async def get(self, request: HttpRequest) -> Response:
        s = self.service
        who = await authenticated(s, request)
        seconds = _wait_seconds(request.query_params.get("wait"))
        request_id = request.path_params["id"]
        if seconds > 0:
            found = await s.wait(who, request_id, seconds)
        else:
            found = await s.call(s.get, who, request_id)
        return JSONResponse(await s.call(s.shown, found))

    async def list(self, request: HttpRequest) -> Response:
        s = self.service
        who = await authenticated(s, request)
        status = request.query_params.get("status")
        wanted = Status.named(status) if status is not None else None
        limit = _limit(request.query_params.get("limit"))
        found = await s.call(s.list, who, wanted, limit)
        return JSONResponse(await s.call(s.listed, found))

    async def cancel(self, request: HttpRequest) -> Response:
        s = self.service
        who = await authenticated(s, request)
        await read_json(request, {}, empty=True)
        done = await s.call(s.cancel, who, request.path_params["id"])
        return JSONResponse(await s.call(s.shown, done))

    async def decide(self, request: HttpRequest) -> Response:
        s = self.service
        who = await authenticated(s, request)
        body = await read_json(request, _DECISION_FIELDS, required=("decision",))
        if body["decision"] not in ("approve", "reject"):
            raise UsageError(
                "decision", f"{body['decision']!r} is not a decision", "give approve or reject"
            )
        if body["decision"] == "reject" and "expect" in body:
            raise UsageError("expect", "goes with an approval only", "leave it out of a rejection")
        done = await s.call(
            s.decide, who, request.path_params["id"], body["decision"] == "approve",
            body.get("reason", ""), body.get("expect"),
        )  # fmt: skip
        return JSONResponse(await s.call(s.shown, done))

    async def gate(self, request: HttpRequest, handler: GateHandler) -> Response:
        s = self.service
        who = await authenticated(s, request, Role.AGENT)
        body = await read_json(request, None)
        return JSONResponse(await s.call(handler, who, body))


async def healthz(request: HttpRequest) -> Response:
    """Up and answering; no credentials, nothing about the vault."""
    return JSONResponse({"ok": True, "version": __version__})


class _Authenticated:
    """A mounted app (``/mcp``) behind the service's bearer tokens: only an agent's token
    goes on, its principal in ``scope["state"]["principal"]``."""

    def __init__(self, service: Service, app: ASGIApp) -> None:
        self.service, self.app = service, app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            who = await principal_of(self.service, scope, Role.AGENT)
        except Exception as e:
            answer = error_response(e)
            if answer is None:
                raise
            await answer(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = who
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
    route is not there); ``mcp_app``: the MCP app mounted at ``/mcp`` behind agent tokens;
    ``lifespans``: started with the app, after the service (the MCP session manager's).
    Requests whose Host or Origin is not ``public_url``'s host, this machine's or one of
    ``hosts`` are refused."""
    routes = Routes(service)
    table: list[BaseRoute] = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/openapi.json", _openapi(gate is not None, mcp_app is not None), methods=["GET"]),
        Route("/api/v1/requests", _answering(routes.submit), methods=["POST"]),
        Route("/api/v1/requests", _answering(routes.list), methods=["GET"]),
        Route("/api/v1/requests/{id}", _answering(routes.get), methods=["GET"]),
        Route("/api/v1/requests/{id}/cancel", _answering(routes.cancel), methods=["POST"]),
        Route("/api/v1/requests/{id}/decision", _answering(routes.decide), methods=["POST"]),
    ]
    if gate is not None:
        handler = gate

        async def gating(request: HttpRequest) -> Response:
            return await routes.gate(request, handler)

        table.append(Route("/api/v1/gate", _answering(gating), methods=["POST"]))
    if mcp_app is not None:
        table.append(Mount("/mcp", app=_Authenticated(service, mcp_app)))

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

    app = Starlette(routes=table, lifespan=lifespan)
    app.add_exception_handler(404, _not_found)
    app.add_exception_handler(405, _not_allowed)
    return Guard(
        app, allowed_hosts(public_url, hosts), body_limit=body_limit, read_timeout=read_timeout
    )


def _openapi(gate: bool, mcp: bool) -> Endpoint:
    shown = document(gate=gate, mcp=mcp)

    async def openapi(request: HttpRequest) -> Response:
        return JSONResponse(shown)

    return openapi


async def _not_found(request: HttpRequest, exc: Exception) -> Response:
    return JSONResponse(
        {"error": f"{request.url.path}: no such route (see /openapi.json)"}, status_code=404
    )


async def _not_allowed(request: HttpRequest, exc: Exception) -> Response:
    return JSONResponse(
        {"error": f"{request.method} is not allowed here (see /openapi.json)"}, status_code=405
    )
