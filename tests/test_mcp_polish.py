"""What an MCP client reads about the tools before and after calling them (docs: "The MCP
server"): a description for every argument, an output schema that each answer's structured
content matches, read-only hints on the tools that only read, and list items that carry
their votes and next step; the same over stdio and over HTTP."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2
import jsonschema  # type: ignore[import-untyped]  # it ships no type hints
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult, Tool

from hitl_vault import Vault
from hitl_vault.access.tokens import mint
from hitl_vault.agents.mcp_server import build_server
from hitl_vault.cli.serve import extras
from hitl_vault.cli.template import init_vault
from hitl_vault.identity import Role
from hitl_vault.serve.runner import Serving, bind
from hitl_vault.times import utcnow

RULES = """\
defaults: {decision: ask, timeout: 1h}
rules:
  - {name: releases, action: release, approvers: [alice, bob], quorum: 2, decision: ask}
  - {name: no-wipe, action: wipe, decision: block, reason: never}
"""
READ_ONLY = {"wait_for_approval", "get_request", "list_requests"}


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    """A template vault where a release needs alice and bob, and a wipe is blocked."""
    init_vault(tmp_path / "vault")
    (tmp_path / "vault" / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    return tmp_path / "vault"


def structured(tool: Tool, result: CallToolResult) -> dict[str, Any]:
    """The call's structured content, checked against the tool's output schema."""
    assert not result.is_error, result.content
    data = result.structured_content
    assert isinstance(data, dict)
    jsonschema.validate(data, tool.output_schema or {})
    return data


async def check_tools(agent: Client) -> dict[str, Tool]:
    """Every tool: described arguments, an output schema, a readOnlyHint saying whether it
    only reads."""
    tools = {t.name: t for t in (await agent.list_tools()).tools}
    assert {"request_approval", *READ_ONLY} <= set(tools)
    for name, tool in tools.items():
        arguments = tool.input_schema["properties"]
        undescribed = [a for a, schema in arguments.items() if not schema.get("description")]
        assert undescribed == [], f"{name}: {undescribed}"
        assert tool.output_schema is not None and tool.output_schema["type"] == "object", name
        assert tool.annotations is not None, name
        assert tool.annotations.read_only_hint is (name in READ_ONLY), name
    return tools


async def test_over_stdio_the_tools_describe_their_arguments_and_answers(
    vault_path: Path,
) -> None:
    """The stdio server's tools: descriptions, schemas and hints; each call's structured
    content matches its schema, and list items carry votes and the next step."""
    with Vault(vault_path) as vault:
        async with Client(build_server(vault)) as agent:
            tools = await check_tools(agent)

            async def call(name: str, **arguments: Any) -> dict[str, Any]:
                return structured(tools[name], await agent.call_tool(name, arguments))

            asked = await call("request_approval", action="release", params={"tag": "v1"})
            blocked = await call("request_approval", action="wipe", params={})
            waited = await call("wait_for_approval", id=asked["id"], wait_seconds=0)
            shown = await call("get_request", id=asked["id"])
            listed = await call("list_requests", status="pending")
            failed = await agent.call_tool("get_request", {"id": "nope"})
    assert asked["status"] == waited["status"] == shown["status"] == "pending"
    assert blocked["status"] == "rejected" and "Do not do the action" in blocked["next"]
    assert shown["votes"] == {"alice": None, "bob": None} and shown["history"]
    [item] = listed["requests"]
    assert item["id"] == asked["id"] and listed["more"] is False
    assert item["votes"] == {"alice": None, "bob": None}
    assert item["next"] == asked["next"] and "wait_for_approval" in item["next"]
    assert item["note"] == asked["note"] and "history" not in item
    assert failed.is_error and "no request 'nope'" in failed.content[0].text  # type: ignore[union-attr]


@pytest.fixture
def served(vault_path: Path) -> Iterator[tuple[int, str]]:
    """`hitl-vault serve` with /mcp, on an ephemeral port; its port and an agent's token."""
    with Vault(vault_path) as vault:
        _, secret = mint(
            vault.engine.journal, "builder", Role.AGENT, actions=None,
            expires=timedelta(days=1), now=utcnow(), by="owner",
        )  # fmt: skip
        serving = Serving(vault, sock=bind("127.0.0.1", 0))
        serving.app_options.update(extras(serving.service)[0])
        thread = threading.Thread(target=serving.run, name="test-mcp-polish")
        thread.start()
        try:
            assert serving.ready.wait(20), "the service did not start"
            yield serving.address[1], secret
        finally:
            serving.stop()
            thread.join(20)


@asynccontextmanager
async def over_http(port: int, token: str) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(f"http://127.0.0.1:{port}/mcp", http_client=http)) as c,
    ):
        yield c


@pytest.mark.slow  # a real uvicorn: about a second
@pytest.mark.process
async def test_over_http_the_same_schemas_hold(served: tuple[int, str]) -> None:
    """Over HTTP: the same descriptions, schemas and hints; structured answers match them,
    and list items carry votes and the next step (no note: the agent has no vault)."""
    async with over_http(*served) as agent:
        tools = await check_tools(agent)
        asked = structured(
            tools["request_approval"],
            await agent.call_tool("request_approval", {"action": "release", "params": {}}),
        )
        listed = structured(tools["list_requests"], await agent.call_tool("list_requests", {}))
    [item] = listed["requests"]
    assert item["id"] == asked["id"] and item["votes"] == {"alice": None, "bob": None}
    assert item["next"] == asked["next"] and item["executor"] is False
    assert "note" not in item and "note" not in asked
