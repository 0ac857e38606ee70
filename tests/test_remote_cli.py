"""`hitl-vault --server URL|unix:PATH submit|show|list|approve|reject|cancel` (README
"Agents on other machines", "Separate users"): the local commands' arguments, output and
exit codes, asked of a real service with a token over HTTP, or through its Unix socket
as the OS user people maps to alice."""

from __future__ import annotations

import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hitl_vault.cli.main import cli
from hitl_vault.serve.socket_client import SocketClient

from .helpers import eventually
from .served import Served, serving

pytestmark = [pytest.mark.process, pytest.mark.slow]


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One real `hitl-vault serve` for the module."""
    yield from serving()


def run(server: str, *args: str, token: str = "", **env: str) -> Result:
    """One hitl-vault command with --server, as a user types it."""
    environment = {"HITL_VAULT_TOKEN": token or None, "HITL_VAULT_SERVER": None, **env}
    return CliRunner().invoke(cli, ["--server", server, *args], obj={}, env=environment)


def agent(served: Served, *args: str) -> Result:
    return run(served.url, *args, token=served.agent_token)


def alice(served: Served, *args: str) -> Result:
    return run(f"unix:{served.socket}", *args)


def submitted(served: Served, **params: str) -> str:
    done = agent(served, "submit", "deploy", *(f"-p{k}={v}" for k, v in params.items()), "--json")
    assert done.exit_code == 0, done.output
    data: dict[str, Any] = json.loads(done.stdout)
    return str(data["id"])


def test_an_agent_submits_and_the_requester_is_its_token(served: Served) -> None:
    """submit prints `ID pending`; --json the request, requested_by the token's name."""
    done = agent(served, "submit", "deploy", "-p", "env=prod", "--summary", "ship")
    assert done.exit_code == 0, done.output
    request_id, status = done.stdout.split()
    assert status == "pending"
    shown = json.loads(agent(served, "show", request_id, "--json").stdout)
    assert shown["requested_by"] == "ci-bot" and shown["params"] == {"env": "prod"}
    refused = agent(served, "submit", "deploy", "--by", "alice")
    assert refused.exit_code == 2 and "leave --by out" in refused.output


def test_a_person_shows_lists_and_approves_through_the_socket(served: Served) -> None:
    """show and list print what the local commands print; approve says `ID approved`."""
    request_id = submitted(served, env="one")
    text = alice(served, "show", request_id)
    assert text.exit_code == 0, text.output
    assert "requested_by: ci-bot" in text.stdout and '  env: "one"' in text.stdout
    assert "history:" in text.stdout
    assert json.loads(alice(served, "show", request_id, "--json").stdout)["id"] == request_id
    listed = alice(served, "list", "--status", "pending")
    assert listed.stdout.splitlines()[0].split() == ["ID", "STATUS", "RISK", "SUMMARY"]
    assert request_id in listed.stdout
    rows = json.loads(alice(served, "list", "--json").stdout)
    assert request_id in [r["id"] for r in rows] and all("history" not in r for r in rows)
    done = alice(served, "approve", request_id, "--reason", "fine")
    assert done.exit_code == 0, done.output
    assert done.stdout.split()[0] == request_id
    again = alice(served, "approve", request_id)
    assert again.exit_code == 1 and request_id in again.output


def test_several_ids_each_decided_and_the_exit_code_says_if_all_were(served: Served) -> None:
    """reject A UNKNOWN --json: one entry each, ok or why not; exit 1."""
    request_id = submitted(served, env="two")
    done = alice(served, "reject", request_id, "20991231T000000Z-deploy-000000", "--json")
    assert done.exit_code == 1
    first, second = json.loads(done.stdout)
    assert first["ok"] and first["request"]["status"] == "rejected"
    assert not second["ok"] and "not found" in second["error"]


def test_an_approver_token_file_decides_over_http_and_an_agent_token_cannot(
    served: Served, tmp_path: Path
) -> None:
    """reject with --token-file; an agent token's approve is refused (exit 1, the reason)."""
    request_id = submitted(served, env="three")
    denied = agent(served, "approve", request_id)
    assert denied.exit_code == 1 and "agent token" in denied.output
    assert "(the service answered 403)" in denied.output
    token = tmp_path / "alice.token"
    token.write_text(served.approver_token + "\n")
    token.chmod(0o600)
    done = run(served.url, "--token-file", str(token), "reject", request_id, "--reason", "no")
    assert done.exit_code == 0, done.output
    assert done.stdout.split() == [request_id, "rejected"]
    token.chmod(0o644)
    loose = run(served.url, "--token-file", str(token), "list")
    assert loose.exit_code == 1 and "chmod 600" in loose.output


def test_an_agent_cancels_its_own_pending_request(served: Served) -> None:
    """cancel ID prints `ID cancelled`; with no token at all, the fix is named."""
    request_id = submitted(served, env="four")
    done = agent(served, "cancel", request_id)
    assert done.stdout.split() == [request_id, "cancelled"], done.output
    missing = run(served.url, "list")
    assert missing.exit_code == 1 and "$HITL_VAULT_TOKEN" in missing.output


def test_submit_wait_returns_once_a_person_decides(served: Served) -> None:
    """submit --wait blocks until alice approves through the socket, then exits 0."""
    socket = SocketClient(served.socket)

    def approve_when_asked() -> None:
        found = eventually(
            lambda: [r for r in socket.list(status="pending") if r["params"] == {"env": "five"}],
            timeout=30,
        )
        assert isinstance(found, list)
        socket.approve(found[0]["id"], "ok")

    helper = threading.Thread(target=approve_when_asked)
    helper.start()
    done = agent(served, "submit", "deploy", "-p", "env=five", "--wait")
    helper.join(30)
    assert done.exit_code == 0, done.output
    assert done.stdout.splitlines()[-1].split()[1] == "approved"


def test_what_needs_the_vault_itself_is_refused_with_server(served: Served) -> None:
    """verify, run, retry over --server (or $HITL_VAULT_SERVER): exit 2, naming the fix;
    submit over the socket: exit 2 (people decide there, agents ask over HTTP)."""
    for args in (["verify"], ["retry", "x"], ["run", "--once"]):
        done = run(served.url, *args)
        assert done.exit_code == 2 and "leave --server" in done.output, args
    via_env = CliRunner().invoke(cli, ["verify"], obj={}, env={"HITL_VAULT_SERVER": served.url})
    assert via_env.exit_code == 2 and "HITL_VAULT_SERVER" in via_env.output
    done = alice(served, "submit", "deploy")
    assert done.exit_code == 2 and "people decide" in done.output
    nowhere = run("unix:/nonexistent/hv.sock", "list")
    assert nowhere.exit_code == 1 and "no such socket" in nowhere.output


def test_no_mcp_serves_no_mcp_and_says_so(served: Served) -> None:
    """`serve --no-mcp` (as tests/served.py starts it): its start says /mcp is not served,
    /mcp is not there for a valid agent token, and the OpenAPI document lists no /mcp."""
    assert served.log is not None
    assert "/mcp not served (--no-mcp)" in served.log.read_text(encoding="utf-8")
    where = urllib.parse.urlsplit(served.url)
    connection = http.client.HTTPConnection(where.hostname or "", where.port, timeout=30)
    try:
        auth = {"Authorization": f"Bearer {served.agent_token}", "Content-Type": "application/json"}
        connection.request("POST", "/mcp", b"{}", headers=auth)
        missing = connection.getresponse()
        missing.read()
        assert missing.status == 404
        connection.request("GET", "/openapi.json")
        answer = connection.getresponse()
        document = json.loads(answer.read())
    finally:
        connection.close()
    assert answer.status == 200 and "/api/v1/gate" in document["paths"]
    assert "/mcp" not in document["paths"]
