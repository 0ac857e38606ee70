"""MCP over Streamable HTTP: the tools of ``hitl-vault mcp`` for agents holding a token.

The service mounts :func:`mcp_http_app` at ``/mcp``. Every HTTP request carries
``Authorization: Bearer <token>``; the token is checked on each one, as the REST API
checks it (401 without a detail for none, an unknown, revoked or expired one; 429 while
the address is refused after repeated failures; 403 for an approver's token, since an MCP
client is an agent). The tools then act for that token's principal through the service
(:class:`Desk`), as the REST API does: ``requested_by`` is the token's name, which no
argument overrides; its ``--actions`` limit applies; it sees, waits on and lists its own
requests only. What reads the store runs on the service's threads, never on the event
loop; a wait holds no thread.

Stateless Streamable HTTP: each POST is served on its own, and nothing about an agent is
kept between requests. A restarted service answers the same agent at once (a stateful
session would be lost with the process, and the SDK's client does not open another), each
request is checked against the token as it stands (a revoked token stops at the next
call, not at the end of a session), and an open wait costs no session. A client that says
its name with each call (protocol 2026-07-28 and later) has it recorded as the
principal's ``client_name``; one that said it only when it connected has none.

This module imports the ``mcp`` SDK: without the ``mcp`` extra, importing it raises
:class:`ImportError` (``e.name`` is ``mcp`` or one of its modules, never ``hitl_vault``).
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import json
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from typing import Any, Protocol, TypeVar

from mcp.server.mcpserver import Context
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings

from ..errors import RequestNotFoundError, UsageError, VaultError
from ..identity import Principal, Role
from ..model import Request, Status
from ..policy.pitch import Pitch, make_pitch
from .mcp_tools import (
    MAX_LIMIT,
    PROGRESS_EVERY,
    add_tools,
    client_name,
    new_server,
    next_step,
    wait_used,
)

# Where the gate leaves the caller for the tools: a key of the request's ASGI scope.
PRINCIPAL = "hitl_vault.principal"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
T = TypeVar("T")
# A wait the service ends this much before its time, still pending, was ended by a stop.
EARLY = 0.05


class Desk(Protocol):
    """What MCP over HTTP asks of the service (``serve.service.Service``). The calls that
    name a caller let the service decide what that caller may do; each raises a
    :class:`VaultError` that says why not. All but :meth:`call` and :meth:`wait` may block
    on the store: they run through :meth:`call`."""

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """``fn(*args, **kwargs)`` on one of the service's threads, awaited."""

    def authenticate(self, secret: str, client: str) -> Principal | None:
        """The principal a bearer token proves, asked from address ``client``; None for an
        unknown, revoked or expired token (a failure counted against ``client``)."""

    def refused_for(self, client: str) -> float:
        """Seconds ``client``'s failed sign-ins are still answered 429 (0: not refused); a
        valid token is never refused."""

    def submit(
        self,
        who: Principal,
        action: str,
        params: dict[str, Any],
        *,
        summary: str,
        context: str | None,
        timeout: str | float | None,
        pitch: Pitch | None = None,
    ) -> Request:
        """A new request in ``who``'s name (``requested_by`` is its name)."""

    def get(self, who: Principal, request_id: str) -> Request:
        """One of ``who``'s requests; :class:`RequestNotFoundError` for any other."""

    def done(
        self, who: Principal, request_id: str, result: str | None, error: str | None
    ) -> Request:
        """How one of ``who``'s approved requests without an executor ended, once."""

    def list(
        self, who: Principal, status: Status | None, limit: int | None
    ) -> builtins.list[Request]:
        """``who``'s requests, newest first."""

    async def wait(self, who: Principal, request_id: str, seconds: float) -> Request:
        """One of ``who``'s requests once its status changes, or as it is after ``seconds``."""

    def shown(self, request: Request, who: Principal | None = None) -> dict[str, Any]:
        """The request as ``show --json`` prints it, as ``who`` may see it."""

    def listed(
        self, requests: builtins.list[Request], who: Principal | None = None
    ) -> builtins.list[dict[str, Any]]:
        """Requests as ``list --json`` prints them, as ``who`` may see them."""

    def executes(self, action: str) -> bool:
        """Whether the service's daemon runs ``action`` itself once approved."""


class CallerCalls:
    """The five tools, each call made by the principal the gate found for its HTTP request."""

    def __init__(
        self,
        desk: Desk,
        clock: Callable[[], float] = time.monotonic,
        every: float = PROGRESS_EVERY,
    ) -> None:
        self.desk = desk
        self.clock = clock
        self.every = every

    @staticmethod
    def caller(ctx: Context[Any, Any]) -> Principal:
        """Who makes this call: the gate's principal, with the client's name when it gave one."""
        scope = getattr(ctx.request_context.request, "scope", None) or {}
        who = scope.get(PRINCIPAL)
        if not isinstance(who, Principal):  # only reachable past the gate, which sets it
            raise UsageError("Authorization", "no agent token came with this call", "send one")
        name = " ".join((client_name(ctx) or "").split())[:80]
        return dataclasses.replace(who, client_name=name) if name and not who.client_name else who

    def shown(self, request: Request, who: Principal) -> dict[str, Any]:
        """The request as ``show --json`` prints it (as the agent ``who`` may see it), plus
        ``executor`` and ``next`` as ``hitl-vault mcp`` gives them (no ``note``: the agent
        has no access to the vault)."""
        executor = self.desk.executes(request.action)
        return {
            **self.desk.shown(request, who),
            "executor": executor,
            "next": next_step(request, None, executor),
        }

    def get(self, who: Principal, request_id: str) -> Request:
        if not request_id.strip():
            raise UsageError("id", "is empty", "pass the id request_approval returned")
        try:
            return self.desk.get(who, request_id.strip())
        except RequestNotFoundError:
            raise UsageError(
                "id",
                f"no request {request_id!r} of yours",
                "pass the id request_approval returned, or find it with list_requests",
            ) from None

    async def request_approval(
        self,
        ctx: Context[Any, Any],
        action: str,
        params: dict[str, Any],
        summary: str,
        context: str | None,
        timeout: str | float | None,
        proposal: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        who = self.caller(ctx)

        def ask() -> dict[str, Any]:
            pitch = make_pitch(**(proposal or {}))
            request = self.desk.submit(
                who, action, params, summary=summary, context=context, timeout=timeout,
                pitch=pitch,
            )  # fmt: skip
            return self.shown(request, who)

        return await self.desk.call(ask)

    async def wait_for_approval(
        self, ctx: Context[Any, Any], request_id: str, wait_seconds: float
    ) -> dict[str, Any]:
        """The request once decided, or still pending after ``wait_used(wait_seconds)``,
        with progress every ``every`` seconds meanwhile, as ``hitl-vault mcp`` waits."""
        who = self.caller(ctx)
        used = wait_used(wait_seconds)
        request = await self.desk.call(self.get, who, request_id)
        started = self.clock()
        while request.status is Status.PENDING:
            left = used - (self.clock() - started)
            if left <= 0:
                break
            chunk, asked = min(self.every, left), self.clock()
            request = await self.desk.wait(who, request.id, chunk)
            if request.status is Status.PENDING and self.clock() - asked < chunk - EARLY:
                break  # answered early and still pending: the service is stopping
            waited = self.clock() - started
            if request.status is Status.PENDING and waited < used:
                message = f"{request.id}: still pending after {waited:.0f} s"
                await ctx.report_progress(waited, used, message)
        waited = round(self.clock() - started, 1)
        shown = await self.desk.call(self.shown, request, who)
        return {**shown, "wait_seconds": used, "waited": waited}

    async def get_request(self, ctx: Context[Any, Any], request_id: str) -> dict[str, Any]:
        who = self.caller(ctx)
        return await self.desk.call(lambda: self.shown(self.get(who, request_id), who))

    async def report_result(
        self, ctx: Context[Any, Any], request_id: str, result: str | None, error: str | None
    ) -> dict[str, Any]:
        """How an approved request of the agent's own ended (another agent's is not found)."""
        who = self.caller(ctx)

        def report() -> dict[str, Any]:
            request = self.get(who, request_id)
            return self.shown(self.desk.done(who, request.id, result, error), who)

        return await self.desk.call(report)

    async def list_requests(
        self, ctx: Context[Any, Any], status: str | None, limit: int
    ) -> dict[str, Any]:
        who = self.caller(ctx)
        wanted = Status.named(status) if status not in (None, "") else None
        if not 1 <= limit <= MAX_LIMIT:
            raise UsageError("limit", f"{limit} is out of range", f"pass 1 to {MAX_LIMIT}")

        def listed() -> dict[str, Any]:
            found = self.desk.list(who, wanted, limit + 1)
            shown = self.desk.listed(found[:limit], who)
            for request, item in zip(found, shown, strict=False):  # and what to do next
                item["executor"] = executor = self.desk.executes(request.action)
                item["next"] = next_step(request, None, executor)
            return {"requests": shown, "more": len(found) > limit}

        return await self.desk.call(listed)


class McpHttpApp:
    """The ASGI app served at ``/mcp``: the bearer-token gate before the SDK's stateless
    Streamable HTTP transport, whose task group runs inside :meth:`running`: the app that
    mounts this one enters it in its lifespan."""

    def __init__(self, desk: Desk) -> None:
        self.desk = desk
        server = new_server()
        add_tools(server, CallerCalls(desk))
        # Host and Origin are checked by the service for every path, /mcp included.
        server.streamable_http_app(
            stateless_http=True,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        self.manager: StreamableHTTPSessionManager = server.session_manager
        self.serving = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The transport's lifetime: enter it once, in the lifespan, to serve requests."""
        async with self.manager.run():
            self.serving = True
            try:
                yield
            finally:
                self.serving = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # the app that mounts this one has the lifespan
            return
        if not self.serving:  # outside the lifespan: starting up, or shutting down
            await refuse(send, 503, "the MCP transport is not running")
            return
        try:
            who = await self.desk.call(self.who_is, scope)
        except VaultError as e:  # the store cannot be read: say so, as the REST API does
            await refuse(send, 503, str(e))
            return
        if isinstance(who, Principal):
            await self.manager.handle_request({**scope, PRINCIPAL: who}, receive, send)
        else:
            await refuse(send, *who)

    def who_is(self, scope: Scope) -> Principal | tuple[int, str, list[tuple[bytes, bytes]]]:
        """The agent the request's bearer token proves, or the refusal to answer with (as the
        REST API refuses: 401 with no detail, 429 instead while the address is refused,
        403; a valid token is never refused)."""
        client = scope.get("client")
        address = str(client[0]) if client else "unknown"
        left = self.desk.refused_for(address)  # before the token: its failure is a 401
        secret = bearer(scope)
        who = self.desk.authenticate(secret, address) if secret else None
        if who is None and left > 0:  # a valid token is never refused, only failures
            wait = str(math.ceil(left))
            said = f"too many failed sign-ins from {address}: try again in {wait} s"
            return 429, said, [(b"retry-after", wait.encode())]
        if who is None:
            return 401, "unauthorized", [(b"www-authenticate", b"Bearer")]
        if who.role is not Role.AGENT:
            return (
                403,
                f"an MCP client is an agent, and {who.name} holds an {who.role} token: give "
                "the client an agent token (hitl-vault token add NAME --role agent)",
                [],
            )
        return who


def bearer(scope: Scope) -> str:
    """The token of the request's ``Authorization: Bearer`` header; empty when there is none."""
    for key, value in scope.get("headers") or ():
        if key.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


async def refuse(
    send: Send, status: int, error: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer ``status`` with ``{"error": ...}`` and nothing else."""
    body = json.dumps({"error": error}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or []),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def mcp_http_app(desk: Desk) -> McpHttpApp:
    """The app to mount at ``/mcp`` over the service ``desk``; enter ``app.running()`` in the
    service's lifespan (once: a session manager runs only once)."""
    return McpHttpApp(desk)
