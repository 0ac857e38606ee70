"""``hitl-vault mcp``: the vault as a Model Context Protocol server over stdio.

The only module that imports the ``mcp`` SDK (the optional extra
``hitl-vault[mcp]``). Four tools ask and wait; nothing here runs an action: the
daemon runs approved requests whose action has an executor, and the agent does the
others itself once approved. A wait returns, still pending if nobody decided, after
at most :data:`MAX_WAIT` seconds, since clients cancel a tool call after about a
minute; the agent calls ``wait_for_approval`` again.

What a tool does with the journal and the notes runs in a worker thread, never on the
event loop: a request that waits for another process's write to the journal holds no
other call. On the SQLite journal, requests are submitted through a vault of their own (a
second connection to the journal, with the served vault's clock, ids and Python rules):
the journal serves one call of a connection at a time, so a submit waiting for the write
lock would hold every read behind it, while reads on another connection go on (SQLite's
WAL lets readers through a writer). Any other store is used through the vault served.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import anyio.to_thread
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from .. import __version__
from ..errors import RequestNotFoundError, UsageError, VaultError, WaitTimeoutError
from ..journal.sqlite import Journal
from ..layout import RULES_FILE
from ..model import Request, Status
from ..shapes import listed_json, outcome, request_json
from ..vault import Vault

# The longest one wait_for_approval call waits: clients cancel a tool call after about 60 s.
MAX_WAIT = 45.0
# How often a wait tells the client it is still waiting.
PROGRESS_EVERY = 10.0
# How many requests list_requests returns when not told (newest first), and at most.
DEFAULT_LIMIT = 50
MAX_LIMIT = 1000

T = TypeVar("T")

_INSTRUCTIONS = """\
A human approves or rejects actions in a vault of notes (hitl-vault). Before an action
that needs approval, call request_approval; while the status is "pending", call
wait_for_approval with its id again and again (each call returns after at most 45 s).
Do the action only once the status is "approved", with the params in the result (the
human may have edited them); never after "rejected", "timed_out" or "cancelled". When
"executor" is true the vault's daemon runs the action itself: do not do it as well."""


def wait_used(seconds: float) -> float:
    """How long ``wait_for_approval`` waits when asked for ``seconds``: no more than
    :data:`MAX_WAIT`, and 0 (an answer at once) for zero, a negative number or NaN."""
    if math.isnan(seconds):
        return 0.0
    return min(max(seconds, 0.0), MAX_WAIT)


def requester(client_name: str | None) -> str:
    """``requested_by`` for a request made through this server: ``mcp:<client name>`` when
    the client said its name when it connected, else ``mcp``."""
    name = " ".join((client_name or "").split())[:80]
    return f"mcp:{name}" if name else "mcp"


async def off_loop(call: Callable[..., T], *args: object) -> T:
    """``call(*args)`` in a worker thread: the event loop goes on serving other calls meanwhile."""
    return await anyio.to_thread.run_sync(call, *args)


class RulesFile:
    """Reloads ``hitl-vault.yaml`` into each of the server's vaults before a tool call when
    the file changed since the rules in force were read (its size, times or inode differ:
    one ``stat``)."""

    def __init__(self, vault: Vault, *more: Vault) -> None:
        self._vault = vault
        self._vaults = (vault, *more)
        self._lock = threading.Lock()  # tool calls run in worker threads
        # Read once more on the first call: the file may have changed since the vault read it.
        self._seen: tuple[int, ...] | None = ()

    @staticmethod
    def stamp(root: Path) -> tuple[int, ...] | None:
        """What identifies the file's current version; None when there is none."""
        try:
            st = os.stat(root / RULES_FILE)
        except FileNotFoundError:
            return None
        except OSError:  # unreadable: reloading says why
            return (-1,)
        return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)

    def current(self) -> None:
        """Bring the rules up to date; :class:`RulesError` (the old rules stay in force)
        while the file does not read, so the next call tries again."""
        with self._lock:
            stamp = self.stamp(self._vault.root)  # before reading: a later change is seen next
            if stamp != self._seen:
                for vault in self._vaults:
                    vault.engine.reload_policy()
                self._seen = stamp


class Tools:
    """The four tools over one open vault; ``asking``: the vault requests are submitted
    through (another connection to the same folder's journal; ``vault`` when not given).

    Each method but :meth:`wait_for_approval` blocks: the server runs it in a worker thread.
    """

    def __init__(self, vault: Vault, rules: RulesFile, asking: Vault | None = None) -> None:
        self.vault = vault
        self.rules = rules
        self.asking = asking or vault

    # --- what a tool returns ------------------------------------------------------

    def note(self, request: Request) -> str | None:
        if request.path is None:
            return None
        try:
            return request.path.relative_to(self.vault.root).as_posix()
        except ValueError:
            return str(request.path)

    def shown(self, request: Request, **extra: Any) -> dict[str, Any]:
        """The request as ``hitl-vault submit --json`` prints it, plus ``note`` (its path in
        the vault), ``executor`` (whether the daemon runs it once approved) and ``next``
        (what the agent should do now)."""
        executor = request.action in self.vault.policy.actions
        note = self.note(request)
        votes = self.vault.votes(request.id) if request.history else None
        return {
            **request_json(request, votes),
            "note": note,
            "executor": executor,
            "next": next_step(request, note, executor),
            **extra,
        }

    def get(self, request_id: str) -> Request:
        if not request_id.strip():
            raise UsageError("id", "is empty", "pass the id request_approval returned")
        try:
            return self.vault.get(request_id.strip())
        except RequestNotFoundError:
            raise UsageError(
                "id",
                f"no request {request_id!r} in this vault",
                "pass the id request_approval returned, or find it with list_requests",
            ) from None

    # --- the tools ----------------------------------------------------------------

    def request_approval(
        self,
        action: str,
        params: dict[str, Any],
        client: str | None,
        summary: str = "",
        context: str | None = None,
        timeout: str | float | None = None,
    ) -> dict[str, Any]:
        self.rules.current()  # never ask under rules the file no longer says
        request = self.asking.submit(
            action, params, summary=summary, timeout=timeout, requested_by=requester(client),
            context=context,
        )  # fmt: skip
        return self.shown(request)

    async def wait_for_approval(
        self,
        request_id: str,
        wait_seconds: float,
        progress: Callable[[float, float, str], Awaitable[None]],
        clock: Callable[[], float] = time.monotonic,
        every: float = PROGRESS_EVERY,
    ) -> dict[str, Any]:
        """The request once decided, or still pending after ``wait_used(wait_seconds)``;
        ``progress(waited, of, message)`` every ``every`` seconds meanwhile.

        Each step that reads or writes the vault runs in a worker thread, the wait itself
        too (``wait_sync``, one ``every`` at a time, between progress reports)."""
        await off_loop(self.keep_rules_current)
        used = wait_used(wait_seconds)
        request = await off_loop(self.get, request_id)
        started = clock()
        while True:
            chunk = max(0.0, min(every, used - (clock() - started)))
            try:
                request = await off_loop(self.vault.wait_sync, request.id, chunk)
                break
            except WaitTimeoutError:
                waited = clock() - started
                if waited >= used:
                    request = await off_loop(self.vault.get, request.id)
                    break
                await progress(waited, used, f"{request.id}: still pending after {waited:.0f} s")
        waited = round(clock() - started, 1)
        return await off_loop(lambda: self.shown(request, wait_seconds=used, waited=waited))

    def get_request(self, request_id: str) -> dict[str, Any]:
        self.keep_rules_current()
        return self.shown(self.get(request_id))

    def list_requests(self, status: str | None, limit: int) -> dict[str, Any]:
        self.keep_rules_current()
        wanted = Status.named(status) if status not in (None, "") else None
        if not 1 <= limit <= MAX_LIMIT:
            raise UsageError("limit", f"{limit} is out of range", f"pass 1 to {MAX_LIMIT}")
        found = self.vault.list(wanted, limit + 1)
        return {
            "requests": [{**listed_json(r), "note": self.note(r)} for r in found[:limit]],
            "more": len(found) > limit,
        }

    def keep_rules_current(self) -> None:
        """Reload changed rules for reading and waiting; a broken file keeps the old rules
        (as the daemon does) instead of failing a read."""
        with contextlib.suppress(VaultError):  # request_approval says why
            self.rules.current()


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
                f"{_first_up(who)}. The vault's daemon runs it (`hitl-vault run` must be "
                "running); do not do it yourself. get_request shows when it is executed."
            )
        return f"{_first_up(who)}. Go ahead: do it with the params in this result."
    if status is Status.EXECUTING:
        return "Approved; the vault's daemon is running it now. Do not do it yourself."
    if status is Status.EXECUTED:
        return "Approved and done by the vault's daemon; its output is in result."
    return f"{_first_up(outcome(request))}. Do not do the action."


def _first_up(text: str) -> str:
    return text[:1].upper() + text[1:]


class ToolCalls(Protocol):
    """What the four tools do for one call; ``ctx`` is the call's MCP context (who asks, and
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


class LocalCalls:
    """The tools over an open vault (``hitl-vault mcp``): whoever holds the stdio pipe asks,
    as ``mcp:<client name>``. The work of each call runs off the event loop."""

    def __init__(self, tools: Tools) -> None:
        self.tools = tools

    async def request_approval(
        self,
        ctx: Context[Any, Any],
        action: str,
        params: dict[str, Any],
        summary: str,
        context: str | None,
        timeout: str | float | None,
    ) -> dict[str, Any]:
        client = client_name(ctx)
        return await off_loop(
            lambda: self.tools.request_approval(action, params, client, summary, context, timeout)
        )

    async def wait_for_approval(
        self, ctx: Context[Any, Any], request_id: str, wait_seconds: float
    ) -> dict[str, Any]:
        return await self.tools.wait_for_approval(request_id, wait_seconds, ctx.report_progress)

    async def get_request(self, ctx: Context[Any, Any], request_id: str) -> dict[str, Any]:
        return await off_loop(self.tools.get_request, request_id)

    async def list_requests(
        self, ctx: Context[Any, Any], status: str | None, limit: int
    ) -> dict[str, Any]:
        return await off_loop(self.tools.list_requests, status, limit)


def client_name(ctx: Context[Any, Any]) -> str | None:
    """The name the MCP client gave for itself (when it connected, or with this call)."""
    params = ctx.request_context.session.client_params
    return params.client_info.name if params is not None else None


def new_server() -> MCPServer[Any]:
    """An MCP server named hitl-vault, with the instructions agents read, and no tools yet."""
    return MCPServer(name="hitl-vault", version=__version__, instructions=_INSTRUCTIONS)


def add_tools(server: MCPServer[Any], calls: ToolCalls) -> None:
    """Give ``server`` the four tools, each doing its work through ``calls``: one set of
    names, arguments and descriptions, whether the agent asks over stdio or over HTTP."""

    async def answer(work: Awaitable[dict[str, Any]]) -> str:
        """The tool's JSON answer; a bad argument or a broken rules file is the tool's error,
        which says which and the fix."""
        try:
            return json.dumps(await work, indent=2, ensure_ascii=False)
        except VaultError as e:
            raise ToolError(str(e)) from None

    @server.tool(
        description=(
            "Ask a human to approve an action before you do it. `action`: a short name "
            "(letters, digits, '-', '_', '.'), e.g. deploy or send_email; `params`: what "
            "exactly would be done (a JSON object); `summary`: one line the human reads "
            "first; `context`: why you ask; `timeout`: how long the request may wait for a "
            "decision (90s, 15m, 1h, 2d; the rules may set a shorter one). Returns the "
            "request as JSON at once: status pending (then call wait_for_approval with its "
            "id), approved (allowed by a rule: go ahead) or rejected (blocked by a rule: "
            "reason says why)."
        ),
        structured_output=False,
    )
    async def request_approval(
        action: str,
        params: dict[str, Any],
        ctx: Context[Any, Any],
        summary: str = "",
        context: str | None = None,
        timeout: str | float | None = None,
    ) -> str:
        return await answer(calls.request_approval(ctx, action, params, summary, context, timeout))

    @server.tool(
        description=(
            "Wait for the human's decision on a request. Returns the request as JSON as soon "
            "as it is decided, or still pending after wait_seconds (at most 45, as clients "
            "cancel tool calls after about a minute; 0 answers at once). While the status "
            "is pending, call it again. Sends progress every 10 s while it waits."
        ),
        structured_output=False,
    )
    async def wait_for_approval(id: str, ctx: Context[Any, Any], wait_seconds: float = 30) -> str:
        return await answer(calls.wait_for_approval(ctx, id, wait_seconds))

    @server.tool(
        description="One request as JSON, with its history, by the id request_approval returned.",
        structured_output=False,
    )
    async def get_request(id: str, ctx: Context[Any, Any]) -> str:
        return await answer(calls.get_request(ctx, id))

    @server.tool(
        description=(
            "Requests in this vault, newest first, as JSON: {requests: [...], more: true when "
            "there are more than limit}. `status`: only those with this status (pending, "
            "approved, rejected, timed_out, cancelled, executing, executed, failed); "
            f"`limit`: how many (default {DEFAULT_LIMIT}, at most {MAX_LIMIT})."
        ),
        structured_output=False,
    )
    async def list_requests(
        ctx: Context[Any, Any], status: str | None = None, limit: int = DEFAULT_LIMIT
    ) -> str:
        return await answer(calls.list_requests(ctx, status, limit))


def build_server(vault: Vault, asking: Vault | None = None) -> MCPServer[Any]:
    """The MCP server with its four tools over ``vault`` (already open), submitting through
    ``asking`` (see :class:`Tools`)."""
    server = new_server()
    add_tools(
        server, LocalCalls(Tools(vault, RulesFile(vault, *([asking] if asking else [])), asking))
    )
    return server


@contextlib.contextmanager
def serving(vault: Vault) -> Iterator[MCPServer[Any]]:
    """The server :func:`serve` runs over ``vault``. On the SQLite journal, requests are
    submitted through a second connection to the same file (see :class:`Tools`), opened
    with the vault's clock, ids and Python rules; on any other store through ``vault``
    itself, which has no second connection to open."""
    engine = vault.engine
    if type(engine.journal) is not Journal:
        yield build_server(vault)
        return
    second = Journal(engine.journal.path)
    with Vault(vault.root, clock=engine.now, ids=engine.ids, journal=second) as asking:
        asking.engine.functions.extend(engine.functions)  # the rules it was given, in order
        yield build_server(vault, asking)


def serve(vault: Vault) -> None:
    """Serve ``vault`` over stdin/stdout until the client closes the connection."""
    with serving(vault) as server, contextlib.suppress(KeyboardInterrupt):
        server.run("stdio")  # Ctrl-C in a terminal: no traceback
