"""``hitl-vault mcp``: the vault as a Model Context Protocol server over stdio.

Loaded only by that command (the SDK is the optional extra ``hitl-vault[mcp]``). The
five tools of :mod:`.mcp_tools` ask and wait; nothing here runs an action: the daemon
runs approved requests whose action has an executor, and the agent does the others
itself once approved. Whoever holds the pipe asks, as ``mcp:<client name>``.

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
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer

from ..errors import RequestNotFoundError, UsageError, VaultError, WaitTimeoutError
from ..journal.sqlite import Journal
from ..model import RULES_FILE, Request, Status
from ..shapes import request_json
from ..vault import Vault
from .mcp_tools import (
    MAX_LIMIT,
    PROGRESS_EVERY,
    add_tools,
    client_name,
    new_server,
    next_step,
    off_loop,
    wait_used,
)


def requester(client_name: str | None) -> str:
    """``requested_by`` for a request made through this server: ``mcp:<client name>`` when
    the client said its name when it connected, else ``mcp``."""
    name = " ".join((client_name or "").split())[:80]
    return f"mcp:{name}" if name else "mcp"


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
    """The five tools over one open vault; ``asking``: the vault requests are submitted
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
        proposal: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        self.rules.current()  # never ask under rules the file no longer says
        request = self.asking.submit(
            action, params, summary=summary, timeout=timeout, requested_by=requester(client),
            context=context, **(proposal or {}),
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
        return {"requests": [self.listed(r) for r in found[:limit]], "more": len(found) > limit}

    def listed(self, request: Request) -> dict[str, Any]:
        """One request as ``list_requests`` shows it: as :meth:`shown`, its votes and next
        step included, without its history."""
        shown = self.shown(self.vault.get(request.id))
        del shown["history"]
        return shown

    def keep_rules_current(self) -> None:
        """Reload changed rules for reading and waiting; a broken file keeps the old rules
        (as the daemon does) instead of failing a read."""
        with contextlib.suppress(VaultError):  # request_approval says why
            self.rules.current()


def _report(tools: Tools, request_id: str, result: str | None, error: str | None) -> dict[str, Any]:
    """``report_result`` over the vault: the request as the outcome left it."""
    request = tools.get(request_id)
    return tools.shown(tools.vault.done(request.id, result=result, error=error))


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
        proposal: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        client = client_name(ctx)
        return await off_loop(
            lambda: self.tools.request_approval(
                action, params, client, summary, context, timeout, proposal
            )
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

    async def report_result(
        self, ctx: Context[Any, Any], request_id: str, result: str | None, error: str | None
    ) -> dict[str, Any]:
        return await off_loop(_report, self.tools, request_id, result, error)


def build_server(vault: Vault, asking: Vault | None = None) -> MCPServer[Any]:
    """The MCP server with its five tools over ``vault`` (already open), submitting through
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
