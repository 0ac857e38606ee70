"""Reporting outcomes through the service: ``POST /api/v1/requests/{id}/result``, the MCP
tool ``report_result`` over HTTP, and ``hitl-vault gate --server`` with ``posttool
--server`` as an agent on another machine runs them (one service for the module)."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from hitl_vault import Status, Vault
from hitl_vault.cli.serve import extras
from hitl_vault.cli.template import init_vault
from hitl_vault.serve.runner import Serving, bind

from .helpers import COMMAND
from .servers import Server

pytestmark = pytest.mark.slow  # the module's service: about a second to start


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`hitl-vault serve` as it runs: the API, the gate over HTTP and /mcp."""
    root = tmp_path_factory.mktemp("done-service") / "vault"
    init_vault(root)
    with Vault(root) as vault:
        serving = Serving(vault, sock=bind("127.0.0.1", 0))
        serving.app_options.update(extras(serving.service)[0])
        failed: list[BaseException] = []

        def run() -> None:
            try:
                serving.run()
            except BaseException as e:  # shown by the fixture, which waits for it
                failed.append(e)
                serving.ready.set()

        thread = threading.Thread(target=run, name="test-done-service")
        thread.start()
        try:
            assert serving.ready.wait(20) and not failed, failed
            yield Server(serving, root)
        finally:
            serving.stop()
            thread.join(20)
            assert not thread.is_alive(), "the service did not stop"
    assert not failed, failed


def approved(server: Server, token: str, action: str = "deploy") -> str:
    """A request the agent asked for over the API, approved by a person."""
    asked = server.call("POST", "/api/v1/requests", {"action": action}, token=token)
    assert asked.status == 201, asked.body
    request_id: str = asked.body["id"]
    with Vault(server.root) as vault:
        vault.approve(request_id, by="alice")
    return request_id


def test_an_agent_reports_the_result_of_its_own_request_once(server: Server) -> None:
    """POST .../result moves the agent's approved request to executed (by the token's
    name); a second report is 409; another agent's request is 404; no or both fields 422."""
    token = server.token("builder")
    request_id = approved(server, token)
    path = f"/api/v1/requests/{request_id}/result"
    assert server.call("POST", path, {}, token=token).status == 422
    both = server.call("POST", path, {"result": "a", "error": "b"}, token=token)
    assert both.status == 422
    other = server.call("POST", path, {"result": "mine"}, token=server.token("intruder"))
    assert other.status == 404
    done = server.call("POST", path, {"result": "deployed"}, token=token)
    assert done.status == 200, done.body
    assert (done.body["status"], done.body["result"]) == ("executed", "deployed")
    assert "approved → executing · by builder" in done.body["history"][-2]
    again = server.call("POST", path, {"error": "late"}, token=token)
    assert again.status == 409 and "recorded already" in again.body["error"]


def test_an_action_the_daemon_runs_is_refused_with_409(server: Server) -> None:
    """An approved request whose action has an executor is the daemon's to report."""
    token = server.token("payer")
    asked = server.call("POST", "/api/v1/requests", {"action": "payment"}, token=token)
    with Vault(server.root) as vault:  # rejected before the daemon could take it
        vault.reject(asked.body["id"], by="alice")
    path = f"/api/v1/requests/{asked.body['id']}/result"
    refused = server.call("POST", path, {"result": "paid"}, token=token)
    assert refused.status == 409 and "is rejected" in refused.body["error"]


async def test_report_result_over_mcp_http_records_the_error(server: Server) -> None:
    """The MCP tool report_result with an error makes the agent's request failed; another
    agent's request is not found."""
    token = server.token("mcp-agent")
    request_id = approved(server, token)
    headers = {"Authorization": f"Bearer {token}"}
    async with (
        httpx2.AsyncClient(headers=headers, timeout=httpx2.Timeout(30, read=60)) as http,
        Client(streamable_http_client(f"{server.url}/mcp", http_client=http)) as client,
    ):
        got = await client.call_tool("report_result", {"id": request_id, "error": "no disk"})
        text = got.content[0].text  # type: ignore[union-attr]
        assert not got.is_error, text
        data: dict[str, Any] = json.loads(text)
        assert (data["status"], data["error"]) == ("failed", "no disk")
        foreign = approved(server, server.token("someone-else"))
        refused = await client.call_tool("report_result", {"id": foreign, "result": "x"})
        assert refused.is_error


def remote_hook(
    server: Server, command: str, stdin: dict[str, Any], token_file: Path, state: Path
) -> subprocess.CompletedProcess[bytes]:
    """`hitl-vault gate|posttool --server URL --token-file F`, as the agent's hook runs it."""
    argv = [str(COMMAND), command, "--server", server.url, "--token-file", str(token_file)]
    if command == "gate":
        argv += ["--wait", "100ms"]
    env = {**os.environ, "XDG_STATE_HOME": str(state)}
    return subprocess.run(
        argv, input=json.dumps(stdin).encode(), capture_output=True, env=env, timeout=60,
        check=False,
    )  # fmt: skip


@pytest.mark.process
def test_gate_and_posttool_over_the_server_report_the_outcome(
    server: Server, tmp_path: Path
) -> None:
    """The gate over HTTP hands an approved call out (executing); posttool --server
    reports it through the API (executed); a call never handed out sends nothing."""
    token_file = tmp_path / "token"
    token_file.write_text(server.token("remote-agent"))
    token_file.chmod(0o600)
    state = tmp_path / "state"
    call = {
        "session_id": "remote-1", "cwd": str(tmp_path), "hook_event_name": "PreToolUse",
        "tool_name": "Bash", "tool_input": {"command": "make release"},
    }  # fmt: skip
    assert b'"deny"' in remote_hook(server, "gate", call, token_file, state).stdout
    with Vault(server.root) as vault:
        (pending,) = [r for r in vault.list() if r.requested_by == "remote-agent"]
        vault.approve(pending.id, by="alice")
    allowed = remote_hook(server, "gate", call, token_file, state)
    assert b'"allow"' in allowed.stdout, allowed.stderr
    with Vault(server.root) as vault:
        assert vault.get(pending.id).status is Status.EXECUTING
    after = {**call, "hook_event_name": "PostToolUse", "tool_response": {"stdout": "ok\n"}}
    reported = remote_hook(server, "posttool", after, token_file, state)
    assert (reported.returncode, reported.stderr) == (0, b"")
    with Vault(server.root) as vault:
        request = vault.get(pending.id)
    assert request.status is Status.EXECUTED
    assert request.result == "run by the agent: the tool succeeded (1 line of output)"
    assert remote_hook(server, "posttool", after, token_file, state).returncode == 0
