"""MCP over Streamable HTTP at ``/mcp``, driven as agents on other machines drive it: a real
uvicorn server on 127.0.0.1 (one per module, in a process of its own) and the official MCP
client's HTTP transport with an agent's bearer token (docs: "Agents on other machines").

Run as a script, this file is that server: ``python test_mcp_http.py VAULT TOKENS``."""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.types import Implementation

from hitl_vault import Vault
from hitl_vault.agents.mcp_server import build_server
from hitl_vault.errors import RequestNotFoundError, UsageError
from hitl_vault.identity import API, Principal, Role
from hitl_vault.model import Request, Status
from hitl_vault.shapes import request_json
from hitl_vault.template import init_vault

# --- the server, as the script this file is -----------------------------------------------


class VaultDesk:
    """What the service gives /mcp, over one vault and a fixed set of tokens."""

    def __init__(self, vault: Vault, tokens: dict[str, dict[str, Any]], revoked: Path) -> None:
        self.vault = vault
        self.tokens = tokens
        self.revoked = revoked

    def authenticate(self, secret: str, client: str) -> Principal | None:
        known = self.tokens.get(secret)
        if known is None or secret in self.revoked.read_text(encoding="utf-8").split():
            return None
        actions = tuple(known["actions"]) if known.get("actions") else None
        return Principal(known["name"], Role(known["role"]), API, actions=actions, client=client)

    def submit(
        self,
        who: Principal,
        action: str,
        params: dict[str, Any],
        *,
        summary: str,
        context: str | None,
        timeout: str | float | None,
    ) -> Request:
        if not who.may_ask(action):
            raise UsageError("action", f"{who.name} may not ask for {action!r}", "ask another")
        return self.vault.submit(
            action, params, summary=summary, context=context, timeout=timeout,
            requested_by=who.name,
        )  # fmt: skip

    def get(self, who: Principal, request_id: str) -> Request:
        request = self.vault.get(request_id)
        if request.requested_by != who.name:
            raise RequestNotFoundError(request_id)
        return request

    def list(self, who: Principal, status: Status | None, limit: int) -> list[Request]:
        return [r for r in self.vault.list(status, 10_000) if r.requested_by == who.name][:limit]

    async def wait(self, who: Principal, request_id: str, seconds: float) -> Request:
        self.get(who, request_id)
        deadline = time.monotonic() + seconds
        while True:
            request = self.vault.get(request_id)
            if request.status is not Status.PENDING or time.monotonic() >= deadline:
                return request
            await asyncio.sleep(0.02)

    def shown(self, request: Request) -> dict[str, Any]:
        return request_json(request)

    def executes(self, action: str) -> bool:
        return action in self.vault.policy.actions


def serve(vault_path: Path, tokens_file: Path) -> None:
    """Serve /mcp on an ephemeral port of 127.0.0.1; print the port once it listens."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Route

    from hitl_vault.agents.mcp_http import mcp_http_app

    tokens = json.loads(tokens_file.read_text(encoding="utf-8"))
    with Vault(vault_path) as vault:
        mcp = mcp_http_app(VaultDesk(vault, tokens, tokens_file.with_suffix(".revoked")))

        @contextlib.asynccontextmanager
        async def lifespan(app: Starlette) -> AsyncIterator[None]:
            async with mcp.running():
                yield

        app = Starlette(routes=[Route("/mcp", endpoint=mcp)], lifespan=lifespan)
        listening = socket.socket()
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        print(listening.getsockname()[1], flush=True)
        config = uvicorn.Config(app, log_level="warning", lifespan="on")
        uvicorn.Server(config).run(sockets=[listening])


if __name__ == "__main__":
    serve(Path(sys.argv[1]), Path(sys.argv[2]))


# --- the tests --------------------------------------------------------------------------

pytestmark = pytest.mark.process  # the server runs in a process of its own

TOKENS: dict[str, dict[str, Any]] = {
    "hv_agent_builder": {"name": "builder", "role": "agent"},
    "hv_agent_other": {"name": "other-agent", "role": "agent"},
    "hv_agent_deployer": {"name": "deployer", "role": "agent", "actions": ["deploy"]},
    "hv_agent_gone": {"name": "gone-agent", "role": "agent"},
    "hv_agent_later": {"name": "later-agent", "role": "agent"},
    "hv_approver_alice": {"name": "alice", "role": "approver"},
}
TOOLS = {"request_approval", "wait_for_approval", "get_request", "list_requests"}


@dataclass
class Served:
    """The server's vault, its /mcp address, and what it wrote to stderr."""

    vault_path: Path
    url: str
    port: int
    revoked: Path

    @contextlib.asynccontextmanager
    async def agent(
        self, token: str | None, name: str = "test-agent", mode: str = "legacy"
    ) -> AsyncIterator[Agent]:
        """A connected MCP client sending ``token`` as its bearer token."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with (
            httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
            Client(
                streamable_http_client(self.url, http_client=http),
                client_info=Implementation(name=name, version="1"),
                mode=mode,
            ) as client,
        ):
            yield Agent(client)

    def revoke(self, token: str) -> None:
        """Revoke ``token``: the server refuses it from its next request on."""
        with open(self.revoked, "a", encoding="utf-8") as f:
            f.write(f"{token}\n")

    def status(self, method: str, token: str | None, body: bytes = b"{}") -> tuple[int, bytes]:
        """A raw request to /mcp: its status and body."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        try:
            conn.request(method, "/mcp", body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


@dataclass
class Agent:
    client: Client

    async def call(self, tool: str, **arguments: Any) -> dict[str, Any]:
        """The tool's JSON answer; fails the test if the tool said it failed."""
        result = await self.client.call_tool(tool, arguments)
        text = result.content[0].text  # type: ignore[union-attr]
        assert not result.is_error, text
        data: dict[str, Any] = json.loads(text)
        return data

    async def error(self, tool: str, **arguments: Any) -> str:
        """The tool's error message; fails the test if the tool did not fail."""
        result = await self.client.call_tool(tool, arguments)
        assert result.is_error, result.content
        text: str = result.content[0].text  # type: ignore[union-attr]
        return text


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One server for the module: /mcp over a fresh vault, on an ephemeral port."""
    folder = tmp_path_factory.mktemp("mcp-http")
    vault_path = folder / "vault"
    init_vault(vault_path)
    tokens = folder / "tokens.json"
    tokens.write_text(json.dumps(TOKENS), encoding="utf-8")
    revoked = tokens.with_suffix(".revoked")
    revoked.write_text("", encoding="utf-8")
    errlog = folder / "server-stderr.log"
    with open(errlog, "w", encoding="utf-8") as err:
        server = subprocess.Popen(
            [sys.executable, __file__, str(vault_path), str(tokens)],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=err,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        assert server.stdout is not None
        ready, _, _ = select.select([server.stdout], [], [], 30)
        line = server.stdout.readline() if ready else b""
        assert line.strip().isdigit(), errlog.read_text(encoding="utf-8")
        port = int(line)
        yield Served(vault_path, f"http://127.0.0.1:{port}/mcp", port, revoked)
    finally:
        server.terminate()
        server.wait(timeout=30)
        assert server.stdout is not None
        server.stdout.close()
    assert "Traceback" not in errlog.read_text(encoding="utf-8")


async def test_the_tools_are_those_of_hitl_vault_mcp(served: Served) -> None:
    """An agent over HTTP sees the four tools of the stdio server, with the same arguments."""
    async with served.agent("hv_agent_builder") as agent:
        over_http = {t.name: t for t in (await agent.client.list_tools()).tools}
    with Vault(served.vault_path) as vault:
        async with Client(build_server(vault)) as local:
            over_stdio = {t.name: t for t in (await local.list_tools()).tools}
    assert set(over_http) == TOOLS == set(over_stdio)
    for name in TOOLS:
        assert over_http[name].input_schema == over_stdio[name].input_schema, name
        assert over_http[name].description == over_stdio[name].description, name


async def test_an_ask_is_pending_in_the_token_s_name_whatever_the_client_says(
    served: Served,
) -> None:
    """request_approval returns pending with requested_by the token's name; a requested_by
    argument does not change it."""
    async with served.agent("hv_agent_builder", name="alice") as agent:
        asked = await agent.call(
            "request_approval",
            action="deploy",
            params={"environment": "production", "tag": "v9"},
            summary="Deploy v9",
        )
        claimed = await agent.client.call_tool(
            "request_approval",
            {"action": "deploy", "params": {"tag": "v10"}, "requested_by": "alice"},
        )
    assert asked["status"] == "pending" and asked["requested_by"] == "builder"
    assert asked["rule"] == "production" and asked["executor"] is False
    assert "wait_for_approval" in asked["next"] and "note" not in asked
    assert not claimed.is_error  # an argument the tool does not take is ignored
    assert json.loads(claimed.content[0].text)["requested_by"] == "builder"  # type: ignore[union-attr]
    with Vault(served.vault_path) as vault:
        assert {r.requested_by for r in vault.list()} <= {"builder", "other-agent", "deployer"}


async def test_a_wait_returns_once_a_person_decides_in_the_vault(served: Served) -> None:
    """wait_for_approval, under way, returns approved as soon as the vault records alice's yes."""
    async with served.agent("hv_agent_builder") as agent:
        asked = await agent.call("request_approval", action="deploy", params={"tag": "v11"})
        started = time.monotonic()
        waiting = asyncio.create_task(agent.call("wait_for_approval", id=asked["id"]))
        await asyncio.sleep(0.3)  # let the wait get under way; the assertions follow
        assert not waiting.done()
        with Vault(served.vault_path) as vault:
            vault.approve(asked["id"], by="alice")
        got = await asyncio.wait_for(waiting, 20)
    assert got["status"] == "approved" and got["decided_by"] == "alice"
    assert 0 < got["waited"] < 20 and time.monotonic() - started < 20
    assert got["next"].startswith("Approved by alice. Go ahead")


async def test_an_agent_sees_and_waits_on_its_own_requests_only(served: Served) -> None:
    """Another agent's request is not found by get, wait or list; its own are."""
    async with served.agent("hv_agent_other") as other:
        theirs = await other.call("request_approval", action="deploy", params={"tag": "x"})
    async with served.agent("hv_agent_builder") as agent:
        mine = await agent.call("request_approval", action="lint", params={})
        got = await agent.error("get_request", id=theirs["id"])
        waited = await agent.error("wait_for_approval", id=theirs["id"], wait_seconds=0)
        listed = await agent.call("list_requests")
        seen = await agent.call("get_request", id=mine["id"])
    assert f"id: no request {theirs['id']!r} of yours" in got
    assert f"no request {theirs['id']!r}" in waited
    ids = [r["id"] for r in listed["requests"]]
    assert mine["id"] in ids and theirs["id"] not in ids
    assert {r["requested_by"] for r in listed["requests"]} == {"builder"}
    assert seen["id"] == mine["id"] and seen["history"]


async def test_a_token_limited_to_some_actions_asks_for_those_only(served: Served) -> None:
    """An agent token made with --actions deploy cannot ask for a payment."""
    async with served.agent("hv_agent_deployer") as agent:
        deploy = await agent.call("request_approval", action="deploy", params={})
        payment = await agent.error("request_approval", action="payment", params={"amount": 1})
    assert deploy["requested_by"] == "deployer"
    assert "payment" in payment


async def test_a_client_that_names_itself_with_each_call_is_served_too(served: Served) -> None:
    """A 2026-era client (no handshake, its name with each call) asks and is the token."""
    async with served.agent("hv_agent_builder", name="modern-agent", mode="auto") as agent:
        asked = await agent.call("request_approval", action="lint", params={"n": 2})
    assert asked["status"] == "pending" and asked["requested_by"] == "builder"


async def test_without_a_live_agent_token_nothing_is_served(served: Served) -> None:
    """No token, an unknown or revoked one: 401 with no detail; an approver's token: 403; the
    official client fails to connect with either."""
    served.revoke("hv_agent_gone")
    ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"}).encode()
    answers = {
        token: served.status("POST", token, ping)
        for token in (None, "", "hv_nobody", "hv_agent_gone", "hv_approver_alice")
    }
    for token in (None, "", "hv_nobody", "hv_agent_gone"):
        assert answers[token] == (401, b'{"error": "unauthorized"}'), token
    status, body = answers["hv_approver_alice"]
    assert status == 403 and b"agent token" in body
    for token in (None, "hv_approver_alice"):
        with pytest.raises(ExceptionGroup) as refused:
            async with served.agent(token):
                pass
        assert refused.group_contains(MCPError, depth=None), token
    with Vault(served.vault_path) as vault:
        assert not [r for r in vault.list() if r.requested_by in ("alice", "gone-agent")]


async def test_a_token_revoked_while_connected_stops_at_its_next_call(served: Served) -> None:
    """Each call is checked against the token as it stands: no session outlives a revocation."""
    async with served.agent("hv_agent_later") as agent:
        before = await agent.call("list_requests")
        served.revoke("hv_agent_later")
        with pytest.raises(MCPError):
            await agent.client.call_tool("request_approval", {"action": "lint", "params": {}})
    assert before == {"requests": [], "more": False}
    with Vault(served.vault_path) as vault:
        assert not [r for r in vault.list() if r.requested_by == "later-agent"]


async def test_outside_the_lifespan_the_app_answers_503(vault: Vault, tmp_path: Path) -> None:
    """Before the service's lifespan enters app.running() (or after it ends): 503, never a 500."""
    from hitl_vault.agents.mcp_http import mcp_http_app

    app = mcp_http_app(VaultDesk(vault, TOKENS, tmp_path / "none"))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    headers = [(b"authorization", b"Bearer hv_agent_builder")]
    await app({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive, send)
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"]) == {"error": "the MCP transport is not running"}
