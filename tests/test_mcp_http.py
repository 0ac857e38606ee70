"""MCP over Streamable HTTP at ``/mcp``, driven as an agent on another machine drives it: the
service as ``hitl-vault serve`` runs it (the daemon and uvicorn on an ephemeral port of
127.0.0.1, one per module) and the official MCP client's HTTP transport with a bearer token
(docs: "Agents on other machines")."""

from __future__ import annotations

import asyncio
import http.client
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.server.mcpserver import Context
from mcp.shared.exceptions import MCPError
from mcp.types import Implementation

from hitl_vault import Vault
from hitl_vault.access.tokens import mint, revoke
from hitl_vault.agents.mcp_http import mcp_http_app
from hitl_vault.agents.mcp_server import build_server
from hitl_vault.cli.serve import extras
from hitl_vault.cli.template import init_vault
from hitl_vault.identity import Person, Role
from hitl_vault.serve.runner import Serving, bind
from hitl_vault.times import utcnow

TOOLS = {"request_approval", "wait_for_approval", "get_request", "list_requests", "report_result"}


@dataclass
class Agent:
    """A connected MCP client."""

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


@dataclass
class Served:
    """The running service: its vault's folder and port, and the owner's token commands."""

    root: Path
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    def token(
        self,
        name: str,
        role: Role = Role.AGENT,
        actions: tuple[str, ...] | None = None,
        age: timedelta = timedelta(0),
    ) -> str:
        """A new token's secret, as `hitl-vault token add` makes it (``age``: made that long
        ago, to expire a day after; an approver's name is added to people first)."""
        with Vault(self.root) as vault:
            journal, now = vault.engine.journal, utcnow()
            if role is Role.APPROVER and journal.person(name) is None:
                journal.save_person(Person(name), now, "owner", "person added")
            _, secret = mint(
                journal, name, role, actions=actions, expires=timedelta(days=1),
                now=now - age, by="owner",
            )  # fmt: skip
        return secret

    def revoke(self, name: str) -> None:
        """`hitl-vault token revoke NAME`."""
        with Vault(self.root) as vault:
            assert revoke(vault.engine.journal, name, utcnow(), "owner") >= 1

    def requested_by(self, name: str) -> list[str]:
        """The ids of the requests in the vault made in ``name``'s name."""
        with Vault(self.root) as vault:
            return [r.id for r in vault.list() if r.requested_by == name]

    @asynccontextmanager
    async def agent(
        self, token: str | None, name: str = "test-agent", mode: str = "legacy"
    ) -> AsyncIterator[Agent]:
        """A connected MCP client sending ``token`` as its bearer token; ``mode="auto"``
        speaks the 2026 protocol (no handshake, its name with each call)."""
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

    def post(
        self, token: str | None, path: str = "/mcp", **more: str
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """A raw MCP ping posted to ``path``: the status, the JSON body and the headers."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        accept = "application/json, text/event-stream"
        headers = {"Content-Type": "application/json", "Accept": accept, **more}
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        ping = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})
        try:
            conn.request("POST", path, body=ping, headers=headers)
            response = conn.getresponse()
            raw, got = response.read(), {k.lower(): v for k, v in response.getheaders()}
            json_body = got.get("content-type", "").startswith("application/json")
            body = json.loads(raw) if json_body else {"text": raw.decode()}
            return response.status, body, got
        finally:
            conn.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """One service for the module, with /mcp mounted as `hitl-vault serve` mounts it (about a
    second to start: the tests that use it are marked slow)."""
    root = tmp_path_factory.mktemp("mcp-http") / "vault"
    init_vault(root)
    with Vault(root) as vault:
        serving = Serving(vault, sock=bind("127.0.0.1", 0))
        options, said = extras(serving.service)  # what `hitl-vault serve` mounts beside the API
        assert said.startswith("/mcp served")
        serving.app_options.update(options)
        failed: list[BaseException] = []

        def run() -> None:
            try:
                serving.run()
            except BaseException as e:  # shown by the fixture, which waits for it
                failed.append(e)
                serving.ready.set()

        thread = threading.Thread(target=run, name="test-mcp-http")
        thread.start()
        try:
            assert serving.ready.wait(20) and not failed, failed
            yield Served(root, serving.address[1])
        finally:
            serving.stop()
            thread.join(20)
            assert not thread.is_alive(), "the service did not stop"
    assert not failed, failed


@pytest.mark.slow  # the module\'s service: about a second to start
async def test_the_tools_are_those_of_hitl_vault_mcp(served: Served) -> None:
    """An agent over HTTP sees the four tools of the stdio server, with the same arguments."""
    async with served.agent(served.token("lister")) as agent:
        over_http = {t.name: t for t in (await agent.client.list_tools()).tools}
    with Vault(served.root) as vault:
        async with Client(build_server(vault)) as local:
            over_stdio = {t.name: t for t in (await local.list_tools()).tools}
    assert set(over_http) == TOOLS == set(over_stdio)
    for name in TOOLS:
        assert over_http[name].input_schema == over_stdio[name].input_schema, name
        assert over_http[name].description == over_stdio[name].description, name


@pytest.mark.slow  # the module\'s service: about a second to start
async def test_an_ask_is_pending_in_the_token_s_name_whatever_the_client_says(
    served: Served,
) -> None:
    """request_approval returns pending with requested_by the token's name; neither the
    client's name nor a requested_by argument changes it. The agent is not shown the
    server's folders or uids."""
    async with served.agent(served.token("builder"), name="alice") as agent:
        asked = await agent.call(
            "request_approval",
            action="deploy",
            params={"environment": "production", "tag": "v9"},
            summary="Deploy v9",
        )
        claimed = await agent.call(
            "request_approval", action="deploy", params={"tag": "v10"}, requested_by="alice"
        )  # an argument the tool does not take is ignored
    assert asked["status"] == "pending" and asked["requested_by"] == "builder"
    assert asked["rule"] == "production" and asked["executor"] is False
    assert "wait_for_approval" in asked["next"] and "note" not in asked
    assert asked["path"] == f"Pending_Approval/{asked['id']}.md"  # not where the server keeps it
    assert "decided_uid" not in asked and "decided_actor" not in asked
    assert claimed["requested_by"] == "builder"
    assert served.requested_by("alice") == []


@pytest.mark.slow  # the module\'s service: about a second to start
async def test_a_wait_returns_once_a_person_decides_in_the_vault(served: Served) -> None:
    """wait_for_approval, under way, returns approved as soon as the vault records alice's yes."""
    async with served.agent(served.token("waiter")) as agent:
        asked = await agent.call("request_approval", action="deploy", params={"tag": "v11"})
        started = time.monotonic()
        waiting = asyncio.create_task(agent.call("wait_for_approval", id=asked["id"]))
        await asyncio.sleep(0.3)  # let the wait get under way; the assertions follow
        assert not waiting.done()
        with Vault(served.root) as vault:  # `hitl-vault approve ID --by alice`
            vault.approve(asked["id"], by="alice")
        got = await asyncio.wait_for(waiting, 20)
    assert got["status"] == "approved" and got["decided_by"] == "alice"
    assert 0 < got["waited"] < 20 and time.monotonic() - started < 20
    assert got["next"].startswith("Approved by alice. Go ahead")


@pytest.mark.slow  # the module\'s service: about a second to start
async def test_an_agent_sees_and_waits_on_its_own_requests_only(served: Served) -> None:
    """Another agent's request is not found by get, wait or list; its own are."""
    async with served.agent(served.token("other-agent")) as other:
        theirs = await other.call("request_approval", action="deploy", params={"tag": "x"})
    async with served.agent(served.token("own-agent")) as agent:
        mine = await agent.call("request_approval", action="lint", params={})
        got = await agent.error("get_request", id=theirs["id"])
        waited = await agent.error("wait_for_approval", id=theirs["id"], wait_seconds=0)
        listed = await agent.call("list_requests")
        seen = await agent.call("get_request", id=mine["id"])
    assert f"id: no request {theirs['id']!r} of yours" in got
    assert f"id: no request {theirs['id']!r} of yours" in waited
    assert [r["id"] for r in listed["requests"]] == [mine["id"]] and listed["more"] is False
    assert seen["id"] == mine["id"] and seen["history"]


@pytest.mark.slow  # the module\'s service: about a second to start
async def test_a_token_limited_to_some_actions_asks_for_those_only(served: Served) -> None:
    """An agent token made with --actions deploy cannot ask for a payment."""
    async with served.agent(served.token("deployer", actions=("deploy",))) as agent:
        deploy = await agent.call("request_approval", action="deploy", params={})
        payment = await agent.error("request_approval", action="payment", params={"amount": 1})
    assert deploy["requested_by"] == "deployer"
    assert "action 'payment': the token of deployer may ask for deploy only" in payment
    assert [deploy["id"]] == served.requested_by("deployer")


@pytest.mark.slow  # the module\'s service: about a second to start
async def test_a_client_that_names_itself_with_each_call_is_recorded_apart(
    served: Served,
) -> None:
    """A 2026-era client (no handshake, its name with each call) asks as the token's name;
    its own name goes in the request's client field; the context is as it wrote it."""
    async with served.agent(served.token("modern"), name="agent-cli", mode="auto") as agent:
        asked = await agent.call(
            "request_approval", action="lint", params={"n": 2}, context="Tidy up."
        )
    assert asked["status"] == "pending" and asked["requested_by"] == "modern"
    assert (asked["context"], asked["client"]) == ("Tidy up.", "agent-cli")


@pytest.mark.slow  # the module\'s service: about a second to start
async def test_without_a_live_agent_token_nothing_is_served(served: Served) -> None:
    """No token, an unknown, expired or revoked one: 401 with no detail; an approver's
    token: 403; the official client cannot connect with either."""
    revoked = served.token("revoked-agent")
    served.revoke("revoked-agent")
    expired = served.token("old-agent", age=timedelta(days=2))
    approver = served.token("alice", Role.APPROVER)
    for token in (None, "", "hv_nobody", revoked, expired):
        status, body, headers = served.post(token)
        assert (status, body) == (401, {"error": "unauthorized"}), token
        assert headers["www-authenticate"] == "Bearer"
    status, body, _ = served.post(approver)
    assert status == 403 and "agent token" in body["error"]
    for token in (None, approver):
        with pytest.raises(ExceptionGroup) as refused:
            async with served.agent(token):
                pass
        assert refused.group_contains(MCPError, depth=None), token
    assert served.requested_by("alice") == served.requested_by("revoked-agent") == []


@pytest.mark.slow  # the module\'s service: about a second to start
async def test_a_token_revoked_while_connected_stops_at_its_next_call(served: Served) -> None:
    """Each call is checked against the token as it stands: no session outlives a revocation."""
    async with served.agent(served.token("later-agent")) as agent:
        before = await agent.call("list_requests")
        served.revoke("later-agent")
        with pytest.raises(MCPError):
            await agent.client.call_tool("request_approval", {"action": "lint", "params": {}})
    assert before == {"requests": [], "more": False}
    assert served.requested_by("later-agent") == []


async def test_outside_the_lifespan_the_app_answers_503(vault: Vault) -> None:
    """Before the service's lifespan enters app.running() (or after it ends): 503, never a 500."""
    from hitl_vault.serve.service import Service

    app = mcp_http_app(Service(vault))
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(dict(message))

    headers = [(b"authorization", b"Bearer hv_whatever")]
    await app({"type": "http", "method": "POST", "path": "/", "headers": headers}, receive, send)
    assert sent[0]["status"] == 503
    assert json.loads(sent[1]["body"]) == {"error": "the MCP transport is not running"}


@dataclass
class _Call:
    """What a tool call's MCP context gives CallerCalls: the HTTP request's scope (with the
    gate's principal), the client's session, and the progress channel."""

    scope: dict[str, Any]
    told: list[tuple[float, float | None, str | None]]

    @property
    def request_context(self) -> Any:
        session = SimpleNamespace(client_params=None)
        return SimpleNamespace(request=SimpleNamespace(scope=self.scope), session=session)

    async def report_progress(
        self, progress: float, total: float | None = None, message: str | None = None
    ) -> None:
        self.told.append((progress, total, message))


async def test_a_wait_reports_progress_and_ends_when_the_service_stops(vault: Vault) -> None:
    """While nobody decides, progress goes out at each interval; a service that is stopping
    ends the wait at once, still pending, instead of the agent's call hanging on."""
    from hitl_vault.agents.mcp_http import PRINCIPAL, CallerCalls
    from hitl_vault.identity import API, Principal
    from hitl_vault.serve.service import Service

    service = Service(vault)
    await service.start()
    try:
        who = Principal("builder", Role.AGENT, API, credential="t-builder")
        request = await service.call(service.submit, who, "deploy", {})
        call = _Call({PRINCIPAL: who}, [])
        ctx = cast(Context[Any, Any], call)
        waiting = asyncio.create_task(
            CallerCalls(service, every=0.2).wait_for_approval(ctx, request.id, 30)
        )
        deadline = time.monotonic() + 20
        while len(call.told) < 2 and time.monotonic() < deadline and not waiting.done():
            await asyncio.sleep(0.05)
        service.close()
        got = await asyncio.wait_for(waiting, 10)
    finally:
        await service.stop()
    assert len(call.told) >= 2 and [w for w, _, _ in call.told] == sorted(
        w for w, _, _ in call.told
    )
    assert all(
        of == 30 and (m or "").startswith(f"{request.id}: still pending") for _, of, m in call.told
    )
    assert got["status"] == "pending" and got["wait_seconds"] == 30 and got["waited"] < 10


@pytest.mark.slow  # the module\'s service: about a second to start
async def test_mcp_is_behind_the_service_s_guard(served: Served) -> None:
    """A live agent token still gets nothing from another site's page (Origin), a rebound
    DNS name (Host), or a token in the URL; the same request without them is answered."""
    token = served.token("guarded-agent")
    status, body, _ = served.post(token)
    assert status == 200 and 'data: {"jsonrpc":"2.0","id":1,"result":{}}' in body["text"]
    assert served.post(token, Origin="http://evil.example")[0] == 403
    assert served.post(token, Host="evil.example")[0] == 421
    status, body, _ = served.post(None, f"/mcp?token={token}")
    assert status == 400 and token not in json.dumps(body)


@pytest.mark.process
def test_serve_says_it_does_not_serve_mcp_when_the_sdk_does_not_import(vault_path: Path) -> None:
    """An mcp package that is there but not the version 2 it needs: serve still starts, its
    line at start says /mcp is not served and what installs it, and /mcp is not mounted."""
    code = (
        "import sys; sys.modules['mcp.server.mcpserver'] = None\n"
        "from hitl_vault import Vault\n"
        "from hitl_vault.cli.serve import extras\n"
        "from hitl_vault.serve.service import Service\n"
        "with Vault(sys.argv[1]) as vault:\n"
        "    options, said = extras(Service(vault))\n"
        "print(sorted(options)); print(said)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(vault_path)],
        capture_output=True, text=True, timeout=60, cwd=vault_path.parent,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    mounted, said = done.stdout.splitlines()
    assert mounted == "['gate']"
    assert said.startswith("/mcp not served: the mcp package, version 2, does not import here")
    assert said.endswith(
        "install the mcp extra: pip install 'hitl-vault[mcp]', or from a clone "
        "of hitl-vault: pip install '.[mcp]' in its folder"
    )


def test_a_refused_address_still_serves_a_valid_agent_token(vault: Vault) -> None:
    """After 10 failed sign-ins from an address, its failures are 429 but a valid agent
    token from there is still served: a proxy's agents are not locked out by a guesser."""
    from hitl_vault.identity import Principal
    from hitl_vault.serve.service import Service

    app = mcp_http_app(Service(vault))
    _, secret = mint(
        vault.engine.journal, "proxied-agent", Role.AGENT, actions=None,
        expires=timedelta(days=1), now=utcnow(), by="test",
    )  # fmt: skip

    def scope(token: str) -> dict[str, Any]:
        headers = [(b"authorization", f"Bearer {token}".encode())]
        return {"type": "http", "client": ("10.0.0.9", 1234), "headers": headers}

    for _ in range(10):
        assert app.who_is(scope("hv_guess"))[0] == 401  # type: ignore[index]
    assert app.who_is(scope("hv_guess"))[0] == 429  # type: ignore[index]
    who = app.who_is(scope(secret))
    assert isinstance(who, Principal) and who.name == "proxied-agent"
