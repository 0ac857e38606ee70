"""``hitl-vault mcp``, driven as agents drive it: the official MCP client spawns the server
over stdio and calls its four tools (README: "The MCP server")."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.types import Implementation

from hitl_vault import Vault
from hitl_vault.agents.mcp_server import RulesFile, Tools, serving
from hitl_vault.agents.mcp_tools import MAX_WAIT, wait_used
from hitl_vault.testing import MemoryJournal

from .helpers import Clock, set_status

DAY = "20260101T000000Z"


def fixed_ids(tag: str) -> Callable[[str, datetime], str]:
    """Ids ``<DAY>-<action>-<tag>001``, ``...002``, ... in the order they are asked for."""
    count = itertools.count(1)
    return lambda action, now: f"{DAY}-{action}-{tag}{next(count):03d}"


class Server:
    """A connected client session."""

    def __init__(self, session: ClientSession) -> None:
        self.session = session

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """The tool's JSON answer; fails the test if the tool said it failed."""
        result = await self.session.call_tool(tool, arguments)
        text = result.content[0].text  # type: ignore[union-attr]
        assert not result.is_error, text
        data: dict[str, Any] = json.loads(text)
        return data

    async def error(self, tool: str, **arguments: Any) -> str:
        """The tool's error message; fails the test if the tool did not fail."""
        result = await self.session.call_tool(tool, arguments)
        assert result.is_error, result.content
        text: str = result.content[0].text  # type: ignore[union-attr]
        return text


CLIENT = Implementation(name="test-agent", version="1")


@asynccontextmanager
async def mcp_server(
    vault_path: Path, tmp_path: Path, *, process: bool = True
) -> AsyncIterator[Server]:
    """``hitl-vault --vault <vault> mcp`` spawned by the SDK's stdio client, as a client
    named test-agent; its stderr must hold no traceback when it ends.

    ``process=False``: the same server (:func:`serving`, over the vault as the command
    opens it) in this process, through the SDK's in-memory transport, for the tests
    that check what the tools answer rather than the command (starting the command
    costs most of a test's time)."""
    if not process:
        with Vault(vault_path) as vault, serving(vault) as served:
            async with Client(served, client_info=CLIENT) as client:
                yield Server(client.session)
        return
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "hitl_vault", "--vault", str(vault_path), "mcp"],
        cwd=tmp_path,  # so `-m hitl_vault` is the installed package, not a checkout in the cwd
    )
    errlog = tmp_path / "mcp-stderr.log"
    with open(errlog, "w", encoding="utf-8") as err:
        async with (
            stdio_client(params, errlog=err) as (read, write),
            ClientSession(read, write, client_info=CLIENT) as session,
        ):
            await session.initialize()
            yield Server(session)
    assert "Traceback" not in errlog.read_text(encoding="utf-8")


@pytest.mark.process
async def test_the_server_offers_four_tools_and_says_how_long_a_wait_may_be(
    vault_path: Path, tmp_path: Path
) -> None:
    """An agent sees request_approval, wait_for_approval, get_request and list_requests."""
    async with mcp_server(vault_path, tmp_path) as server:
        tools = {t.name: t for t in (await server.session.list_tools()).tools}
    assert set(tools) == {
        "request_approval",
        "wait_for_approval",
        "get_request",
        "list_requests",
        "report_result",
    }
    assert tools["request_approval"].input_schema["required"] == ["action", "params"]
    assert "at most 45" in (tools["wait_for_approval"].description or "")


async def test_an_ask_comes_back_pending_at_once_with_its_note_in_the_vault(
    vault_path: Path, tmp_path: Path
) -> None:
    """request_approval returns the pending request and its note; the client is the requester."""
    async with mcp_server(vault_path, tmp_path, process=False) as server:
        started = time.monotonic()
        req = await server.call(
            "request_approval",
            action="deploy",
            params={"environment": "production", "tag": "v2.1"},
            summary="Deploy v2.1",
            context="The release notes are signed off.",
            timeout="15m",
        )
        took = time.monotonic() - started
        listed = await server.call("list_requests", status="pending")
    assert took < 5
    assert req["status"] == "pending"
    assert req["requested_by"] == "mcp:test-agent"
    assert req["note"] == f"Pending_Approval/{req['id']}.md"
    note = (vault_path / req["note"]).read_text(encoding="utf-8")
    assert "status: pending" in note and "The release notes are signed off." in note
    assert req["rule"] == "production" and req["executor"] is False
    assert "wait_for_approval" in req["next"]
    assert [r["id"] for r in listed["requests"]] == [req["id"]] and listed["more"] is False


@pytest.mark.process
async def test_a_human_approving_in_the_note_ends_a_wait_under_way(
    vault_path: Path, tmp_path: Path
) -> None:
    """The wait returns approved as soon as the human saves; other calls answer meanwhile."""
    async with mcp_server(vault_path, tmp_path) as server:
        req = await server.call("request_approval", action="deploy", params={"tag": "v3"})
        started = time.monotonic()
        waiting = asyncio.create_task(server.call("wait_for_approval", id=req["id"]))
        # The wait does not hold the server: another call is answered while it runs.
        seen = await server.call("get_request", id=req["id"])
        assert seen["status"] == "pending" and not waiting.done()
        await asyncio.sleep(0.3)  # let the wait get under way; the assertions follow
        assert not waiting.done()  # the human decides while the wait is under way
        set_status(vault_path / req["note"], "approved", decided_by="alice")
        got = await asyncio.wait_for(waiting, 20)
    assert got["status"] == "approved" and got["decided_by"] == "alice"
    assert 0 < got["waited"] < 20 and time.monotonic() - started < 20
    assert got["next"].startswith("Approved by alice. Go ahead")


@pytest.mark.process
async def test_a_rejection_by_another_process_ends_a_wait_with_its_reason(
    vault_path: Path, tmp_path: Path
) -> None:
    """`hitl-vault reject` in another process: the wait returns rejected, saying why."""
    async with mcp_server(vault_path, tmp_path) as server:
        req = await server.call("request_approval", action="deploy", params={"tag": "v4"})
        waiting = asyncio.create_task(server.call("wait_for_approval", id=req["id"]))
        reject = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "hitl_vault", "--vault", str(vault_path), "reject", req["id"],
            "--by", "bob", "--reason", "not on a Friday", cwd=tmp_path,
        )  # fmt: skip
        assert await reject.wait() == 0
        got = await asyncio.wait_for(waiting, 20)
    assert got["status"] == "rejected" and got["reason"] == "not on a Friday"
    assert got["next"] == "Rejected by bob: not on a Friday. Do not do the action."


async def test_an_undecided_request_is_still_pending_after_the_seconds_asked(
    vault_path: Path, tmp_path: Path
) -> None:
    """wait_seconds=1 returns pending after about a second; 0 answers at once."""
    async with mcp_server(vault_path, tmp_path, process=False) as server:
        req = await server.call("request_approval", action="deploy", params={})
        started = time.monotonic()
        got = await server.call("wait_for_approval", id=req["id"], wait_seconds=1)
        took = time.monotonic() - started
        started = time.monotonic()
        now = await server.call("wait_for_approval", id=req["id"], wait_seconds=0)
        at_once = time.monotonic() - started
    assert got["status"] == "pending" and got["wait_seconds"] == 1
    assert 1 <= got["waited"] < 3 and 1 <= took < 5
    assert now["status"] == "pending" and now["wait_seconds"] == 0 and at_once < 2


@contextmanager
def journal_write_locked(vault_path: Path, hold: float) -> Iterator[threading.Event]:
    """Another writer holds the journal (an open ``BEGIN IMMEDIATE``) until the event is set,
    or ``hold`` seconds pass."""
    release = threading.Event()
    locked = threading.Event()

    def holder() -> None:
        db = sqlite3.connect(vault_path / ".hitl" / "journal.db", isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            locked.set()
            release.wait(hold)
            db.execute("ROLLBACK")
        finally:
            db.close()

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        assert locked.wait(10)
        yield release
    finally:
        release.set()
        thread.join(30)


async def test_a_request_waiting_for_the_journal_holds_no_other_call(
    vault_path: Path, tmp_path: Path
) -> None:
    """While another process holds the journal, a request_approval waits and get_request answers."""
    async with mcp_server(vault_path, tmp_path, process=False) as server:
        first = await server.call("request_approval", action="deploy", params={"tag": "v1"})
        with journal_write_locked(vault_path, hold=15) as release:
            asking = asyncio.create_task(
                server.call("request_approval", action="deploy", params={"tag": "v2"})
            )
            await asyncio.sleep(0.5)  # let the request reach the server; the assertions follow
            started = time.monotonic()
            seen = await asyncio.wait_for(server.call("get_request", id=first["id"]), 20)
            took = time.monotonic() - started
            assert took < 5, f"get_request took {took:.1f} s while the journal was held"
            listed = await asyncio.wait_for(server.call("list_requests"), 20)
            assert not asking.done()  # still waiting for the journal
            release.set()
            second = await asyncio.wait_for(asking, 30)
    assert seen["id"] == first["id"] and seen["status"] == "pending"
    assert [r["id"] for r in listed["requests"]] == [first["id"]]
    assert second["status"] == "pending" and second["id"] != first["id"]


def test_a_wait_is_capped_at_45_seconds_and_never_negative() -> None:
    """Clients cancel a tool call after about a minute: no wait is longer than 45 s."""
    assert MAX_WAIT == 45
    assert [wait_used(s) for s in (600, 45.5, 45, 30, 0.5, 0, -3)] == [45, 45, 45, 30, 0.5, 0, 0]
    assert wait_used(math.inf) == 45 and wait_used(math.nan) == 0


async def test_a_wait_reports_progress_while_nobody_decides(vault: Vault) -> None:
    """Progress goes out at each interval, counting the seconds waited out of the wait."""
    request = vault.submit("deploy", {})
    tools = Tools(vault, RulesFile(vault))
    told: list[tuple[float, float, str]] = []

    async def progress(waited: float, of: float, message: str) -> None:
        told.append((waited, of, message))

    got = await tools.wait_for_approval(request.id, 1, progress, every=0.2)
    assert got["status"] == "pending"
    assert len(told) >= 2 and all(of == 1 and 0 < waited < 1 for waited, of, _ in told)
    assert [w for w, _, _ in told] == sorted(w for w, _, _ in told)
    assert all(m.startswith(f"{request.id}: still pending after ") for _, _, m in told)


async def test_allowed_and_blocked_actions_are_decided_at_once(
    vault_path: Path, tmp_path: Path
) -> None:
    """An allow rule approves at once (the daemon runs it); a block rule rejects with its reason.

    A wait asked for 600 s is capped at 45 and returns at once for a decided request."""
    async with mcp_server(vault_path, tmp_path, process=False) as server:
        paid = await server.call("request_approval", action="payment", params={"amount": 20})
        shell = await server.call("request_approval", action="shell", params={"cmd": "ls"})
        # Asked to wait 600 s: the answer says 45 were allowed, and a decided one comes at once.
        waited = await server.call("wait_for_approval", id=paid["id"], wait_seconds=600)
    assert paid["status"] == "approved" and paid["rule"] == "small-payments"
    assert waited["status"] == "approved" and waited["wait_seconds"] == 45 and waited["waited"] < 5
    assert paid["executor"] is True and "hitl-vault run" in paid["next"]
    assert paid["next"].startswith("Allowed at once by rule small-payments")
    assert shell["status"] == "rejected"
    assert shell["reason"] == "Shell commands are blocked by policy"
    assert "Do not do the action" in shell["next"]


@pytest.mark.process
async def test_bad_arguments_are_errors_that_name_the_argument_and_the_fix(
    vault_path: Path, tmp_path: Path
) -> None:
    """An unknown id, a bad status, action name or timeout: a tool error, no traceback."""
    async with mcp_server(vault_path, tmp_path) as server:
        unknown = await server.error("wait_for_approval", id="20990101T000000Z-x-000000")
        missing = await server.error("get_request", id="nope")
        status = await server.error("list_requests", status="done")
        limit = await server.error("list_requests", limit=0)
        action = await server.error("request_approval", action="rm -rf", params={})
        timeout = await server.error("request_approval", action="deploy", params={}, timeout="soon")
        params = await server.error("request_approval", action="deploy", params=[1, 2])
    assert "id: no request '20990101T000000Z-x-000000'" in unknown and "list_requests" in unknown
    assert "id: no request 'nope'" in missing
    assert "status: 'done' is not a status (use one of pending," in status
    assert "limit: 0 is out of range (pass 1 to 1000)" in limit
    assert "action: 'rm -rf' is not a valid action name" in action
    assert "timeout:" in timeout
    assert "params" in params
    assert Vault(vault_path).list() == []


async def test_the_rules_are_read_again_when_the_file_changes(
    vault_path: Path, tmp_path: Path
) -> None:
    """A rule added while the server runs applies to the next request; a broken file refuses."""
    rules = vault_path / "hitl-vault.yaml"
    text = rules.read_text(encoding="utf-8")
    async with mcp_server(vault_path, tmp_path, process=False) as server:
        before = await server.call("request_approval", action="lint", params={})
        rules.write_text(
            text.replace("rules:\n", "rules:\n  - {name: lint, action: lint, decision: allow}\n"),
            encoding="utf-8",
        )
        after = await server.call("request_approval", action="lint", params={})
        rules.write_text(text + "\nrules: [oops\n", encoding="utf-8")
        broken = await server.error("request_approval", action="lint", params={})
        still = await server.call("get_request", id=after["id"])
    assert before["status"] == "pending"
    assert after["status"] == "approved" and after["rule"] == "lint"
    assert "hitl-vault.yaml line" in broken
    assert still["status"] == "approved"


@pytest.mark.process
def test_without_the_mcp_extra_the_command_says_what_to_install(
    vault_path: Path, tmp_path: Path
) -> None:
    """With the mcp package not importable: one line saying what installs it, from an index
    and from a clone (where the first finds nothing), exit 1."""
    hide_mcp = (
        "import sys; sys.modules['mcp'] = None; sys.argv[0] = 'hitl-vault';"
        "from hitl_vault.cli.main import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", hide_mcp, "--vault", str(vault_path), "mcp"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 1
    [line] = done.stderr.splitlines()
    assert line.endswith(
        "install the mcp extra: pip install 'hitl-vault[mcp]', "
        "or from a clone of hitl-vault: pip install '.[mcp]' in its folder"
    )
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_mcp_help_says_what_installs_the_extra_from_a_clone_too() -> None:
    """`hitl-vault mcp --help` gives both ways to install the SDK, as the error does."""
    from click.testing import CliRunner

    from hitl_vault.cli.main import cli

    result = CliRunner().invoke(cli, ["mcp", "--help"], obj={}, terminal_width=200)
    assert result.exit_code == 0, result.output
    flat = " ".join(result.output.split())
    assert (
        "Needs the mcp extra: pip install 'hitl-vault[mcp]', or from a clone of hitl-vault: "
        "pip install '.[mcp]' in its folder."
    ) in flat


@pytest.mark.process
def test_the_cli_does_not_load_the_mcp_sdk(tmp_path: Path) -> None:
    """Only `hitl-vault mcp` pays for importing the SDK."""
    loads = "import sys, hitl_vault.cli.main; print(sorted(m for m in sys.modules if m == 'mcp'))"
    done = subprocess.run(
        [sys.executable, "-c", loads], cwd=tmp_path, capture_output=True, text=True, timeout=30,
        check=True,
    )  # fmt: skip
    assert done.stdout.strip() == "[]"


def test_list_requests_is_newest_first_and_says_when_there_are_more(vault: Vault) -> None:
    """list_requests honours status and limit, and ``more`` says when it cut the list."""
    tools = Tools(vault, RulesFile(vault))
    paid = [vault.submit("payment", {"amount": n}).id for n in (10, 20, 30)]
    asked = vault.submit("deploy", {}).id
    newest = tools.list_requests(None, 2)
    approved = tools.list_requests("approved", 5)
    assert [r["id"] for r in newest["requests"]] == [asked, paid[2]] and newest["more"] is True
    assert [r["id"] for r in approved["requests"]] == paid[::-1] and approved["more"] is False
    assert approved["requests"][0]["note"] == f"Approved/{paid[2]}.md"


async def test_a_vault_on_another_store_is_served_from_that_store(
    vault_path: Path, clock: Clock
) -> None:
    """Over `Vault(path, journal=MemoryJournal())`, request_approval submits into that store
    with the vault's clock and ids, and get_request finds it; no SQLite journal is made."""
    with (
        Vault(vault_path, journal=MemoryJournal(), clock=clock, ids=fixed_ids("mem")) as vault,
        serving(vault) as server,
    ):
        async with Client(server) as client:
            asked = await client.call_tool(
                "request_approval", {"action": "payment", "params": {"amount": 900}}
            )
            assert not asked.is_error, asked.content
            req = json.loads(asked.content[0].text)  # type: ignore[union-attr]
            got = await client.call_tool("get_request", {"id": req["id"]})
        assert not got.is_error, got.content
        assert req["id"] == f"{DAY}-payment-mem001"
        assert req["created"] == json.loads(got.content[0].text)["created"]  # type: ignore[union-attr]
        (request,) = vault.list()
        assert (request.id, request.created) == (req["id"], clock.now)
    assert not (vault_path / ".hitl" / "journal.db").exists()


async def test_the_sqlite_vault_submits_with_its_clock_ids_and_python_rules(
    vault_path: Path, clock: Clock
) -> None:
    """Served from its SQLite journal, a vault's submits (on a second connection) still use
    its clock and ids, and its Python rules decide them."""
    with Vault(vault_path, clock=clock, ids=fixed_ids("sql")) as vault:
        vault.rule(lambda p: "block" if p.params.get("amount") == 13 else None)
        with serving(vault) as server:
            async with Client(server) as client:
                asked = await client.call_tool(
                    "request_approval", {"action": "payment", "params": {"amount": 900}}
                )
                blocked = await client.call_tool(
                    "request_approval", {"action": "payment", "params": {"amount": 13}}
                )
        req = json.loads(asked.content[0].text)  # type: ignore[union-attr]
        assert (req["id"], req["status"]) == (f"{DAY}-payment-sql001", "pending")
        assert vault.get(req["id"]).created == clock.now
        assert json.loads(blocked.content[0].text)["status"] == "rejected"  # type: ignore[union-attr]
