"""The five MCP tools as agents see them: their names, arguments and descriptions, the
instructions the server gives, and what an answer says the agent should do next.

``hitl-vault mcp`` (:mod:`.mcp_server`, over stdio and a local vault) and MCP over HTTP
(:mod:`.mcp_http`, an agent's token through the service) both build their server here, so
an agent finds the same tools on either. Each gives the tools a :class:`ToolCalls` that
does the work. A wait returns, still pending if nobody decided, after at most
:data:`MAX_WAIT` seconds, since clients cancel a tool call after about a minute; the agent
calls ``wait_for_approval`` again.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar, cast

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

from .. import __version__
from ..errors import VaultError
from ..model import Request, Status
from ..shapes import outcome
from .mcp_shapes import (
    Action,
    Limit,
    Params,
    ReportedError,
    ReportedResult,
    RequestId,
    RequestList,
    RequestShape,
    StatusFilter,
    Summary,
    Timeout,
    WaitSeconds,
    Why,
)

# The longest one wait_for_approval call waits: clients cancel a tool call after about 60 s.
MAX_WAIT = 45.0
# How often a wait tells the client it is still waiting.
PROGRESS_EVERY = 10.0
# How many requests list_requests returns when not told (newest first), and at most.
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

_INSTRUCTIONS = """\
A human approves or rejects actions in a vault of notes (hitl-vault). Before an action
that needs approval, call request_approval; while the status is "pending", call
wait_for_approval with its id again and again (each call returns after at most 45 s).
Do the action only once the status is "approved", with the params in the result (the
human may have edited them); never after "rejected", "timed_out" or "cancelled". When
"executor" is true the vault's daemon runs the action itself: do not do it as well.
Otherwise, once you have done it, call report_result with what it did (or the error)."""


def wait_used(seconds: float) -> float:
    """How long ``wait_for_approval`` waits when asked for ``seconds``: no more than
    :data:`MAX_WAIT`, and 0 (an answer at once) for zero, a negative number or NaN."""
    if math.isnan(seconds):
        return 0.0
    return min(max(seconds, 0.0), MAX_WAIT)


T = TypeVar("T")


async def off_loop(call: Callable[..., T], *args: object) -> T:
    """``call(*args)`` in a worker thread: the event loop goes on serving other calls meanwhile."""
    return await anyio.to_thread.run_sync(call, *args)


def next_step(request: Request, note: str | None, executor: bool) -> str:
    """One sentence for the agent: what the status means for what it does now."""
    status = request.status
    if status is Status.PENDING:
        where = f" in {note}" if note else ""
        return (
            f"A human decides{where}. Call wait_for_approval with this id (again while it says "
            "pending); do not do the action before it is approved."
        )
    if status is Status.APPROVED:
        who = (
            f"approved by {request.decided_by}"
            if request.decided_by
            else (f"allowed at once by rule {request.rule}, no human asked")
        )
        if executor:
            return (
                f"{_first_up(who)}. The vault's daemon runs it (`hitl-vault run` or `serve` "
                "must be running); do not do it yourself. get_request shows when it is executed."
            )
        return (
            f"{_first_up(who)}. Go ahead: do it with the params in this result, then call "
            "report_result with what it did (or the error)."
        )
    if status is Status.EXECUTING and request.carried_by_requester:
        return "Handed to you: once done, call report_result with what it did (or the error)."
    if status is Status.EXECUTING:
        return "Approved; the vault's daemon is running it now. Do not do it yourself."
    if status is Status.EXECUTED:
        by = "its requester" if request.carried_by_requester else "the vault's daemon"
        return f"Approved and done by {by}; its output is in result."
    return f"{_first_up(outcome(request))}. Do not do the action."


def _first_up(text: str) -> str:
    return text[:1].upper() + text[1:]


class ToolCalls(Protocol):
    """What the five tools do for one call; ``ctx`` is the call's MCP context (who asks, and
    the channel progress goes back on). Each returns the tool's answer as a JSON object and
    raises :class:`VaultError` for a bad argument, which the tool reports as its error."""

    async def request_approval(
        self,
        ctx: Context[Any, Any],
        action: str,
        params: dict[str, Any],
        summary: str,
        context: str | None,
        timeout: str | float | None,
    ) -> dict[str, Any]: ...

    async def wait_for_approval(
        self, ctx: Context[Any, Any], request_id: str, wait_seconds: float
    ) -> dict[str, Any]: ...

    async def get_request(self, ctx: Context[Any, Any], request_id: str) -> dict[str, Any]: ...

    async def list_requests(
        self, ctx: Context[Any, Any], status: str | None, limit: int
    ) -> dict[str, Any]: ...

    async def report_result(
        self, ctx: Context[Any, Any], request_id: str, result: str | None, error: str | None
    ) -> dict[str, Any]: ...


def client_name(ctx: Context[Any, Any]) -> str | None:
    """The name the MCP client gave for itself (when it connected, or with this call)."""
    params = ctx.request_context.session.client_params
    return params.client_info.name if params is not None else None


def new_server() -> MCPServer[Any]:
    """An MCP server named hitl-vault, with the instructions agents read, and no tools yet."""
    return MCPServer(name="hitl-vault", version=__version__, instructions=_INSTRUCTIONS)


def add_tools(server: MCPServer[Any], calls: ToolCalls) -> None:
    """Give ``server`` the five tools, each doing its work through ``calls``: one set of
    names, arguments and descriptions, whether the agent asks over stdio or over HTTP.

    Each answers with structured content matching its output schema (and the same JSON as
    text); the tools that only read say so (``readOnlyHint``)."""

    async def answer(work: Awaitable[dict[str, Any]]) -> Any:
        """The tool's answer; a bad argument or a broken rules file is the tool's error,
        which says which and the fix."""
        try:
            return await work
        except VaultError as e:
            raise ToolError(str(e)) from None

    @server.tool(
        title="Ask a human to approve an action",
        description=(
            "Ask a human to approve an action before you do it. Returns the request at "
            "once: status pending (then call wait_for_approval with its id), approved "
            "(allowed by a rule: go ahead) or rejected (blocked by a rule: reason says why)."
        ),
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=False,
        ),
        structured_output=True,
    )
    async def request_approval(
        action: Action,
        params: Params,
        ctx: Context[Any, Any],
        summary: Summary = "",
        context: Why = None,
        timeout: Timeout = None,
    ) -> RequestShape:
        return cast(
            RequestShape,
            await answer(calls.request_approval(ctx, action, params, summary, context, timeout)),
        )

    @server.tool(
        title="Wait for the human's decision",
        description=(
            "Wait for the human's decision on a request. Returns the request as soon "
            "as it is decided, or still pending after wait_seconds (at most 45, as clients "
            "cancel tool calls after about a minute; 0 answers at once). While the status "
            "is pending, call it again. Sends progress every 10 s while it waits."
        ),
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
        structured_output=True,
    )
    async def wait_for_approval(
        id: RequestId, ctx: Context[Any, Any], wait_seconds: WaitSeconds = 30
    ) -> RequestShape:
        return cast(RequestShape, await answer(calls.wait_for_approval(ctx, id, wait_seconds)))

    @server.tool(
        title="Show one request",
        description="One request, with its history, by the id request_approval returned.",
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
        structured_output=True,
    )
    async def get_request(id: RequestId, ctx: Context[Any, Any]) -> RequestShape:
        return cast(RequestShape, await answer(calls.get_request(ctx, id)))

    @server.tool(
        title="List requests",
        description=(
            "Requests in this vault, newest first, each with its votes and next step: "
            "{requests: [...], more: true when there are more than limit}."
        ),
        annotations=ToolAnnotations(read_only_hint=True, open_world_hint=False),
        structured_output=True,
    )
    async def list_requests(
        ctx: Context[Any, Any], status: StatusFilter = None, limit: Limit = DEFAULT_LIMIT
    ) -> RequestList:
        return cast(RequestList, await answer(calls.list_requests(ctx, status, limit)))

    @server.tool(
        title="Report how an action you did ended",
        description=(
            "Report how an approved action you did yourself ended (one with executor "
            "false), once: give result (the request becomes executed) or error (failed). "
            "Refused for an action the vault's daemon runs, one not approved, or one "
            "reported already."
        ),
        annotations=ToolAnnotations(
            read_only_hint=False,
            destructive_hint=False,
            idempotent_hint=False,
            open_world_hint=False,
        ),
        structured_output=True,
    )
    async def report_result(
        id: RequestId,
        ctx: Context[Any, Any],
        result: ReportedResult = None,
        error: ReportedError = None,
    ) -> RequestShape:
        return cast(RequestShape, await answer(calls.report_result(ctx, id, result, error)))
