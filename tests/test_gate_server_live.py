"""The gate over HTTP against a real `hitl-vault serve` (README "Agents on other
machines"): a remote agent's hook waits while a person decides through the socket, its
token's role is checked, and input that is no hook call is a 422, never a 500."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from hitl_vault.serve.socket_client import SocketClient

from .helpers import COMMAND, eventually
from .served import Served, serving
from .test_gate_server import hook_input, said


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One real `hitl-vault serve` for the module."""
    yield from serving()


def gate_process(
    served: Served, stdin: bytes, *args: str, token: str = ""
) -> subprocess.Popen[bytes]:
    """`hitl-vault gate --server URL` as the agent's hook runs it, on another machine: no
    vault, the token in the environment."""
    env = {
        **os.environ,
        "HITL_VAULT_TOKEN": token or served.agent_token,
        "HITL_VAULT": "/nonexistent",
    }
    argv = [str(COMMAND), "gate", "--server", served.url, *args]
    feed = served.vault.parent / f"hook-input-{os.urandom(4).hex()}.json"
    feed.write_bytes(stdin)
    with open(feed, "rb") as f:
        return subprocess.Popen(
            argv, stdin=f, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )


def answered(process: subprocess.Popen[bytes]) -> tuple[str, str]:
    """(permissionDecision, reason) once the hook process ends."""
    out, err = process.communicate(timeout=90)
    return said((process.returncode, out.decode(), err.decode()))


@pytest.mark.process
@pytest.mark.slow
def test_a_remote_agent_waits_for_a_person_and_runs_once_approved(served: Served) -> None:
    """The gate long-polls while a human decides; the approval reaches the waiting hook,
    is handed to the agent (executing), and the next identical call asks again."""
    allowed = gate_process(served, hook_input("Read", "cat x"), "--wait", "2s")
    assert answered(allowed)[0] == "none"  # the rules allow it: no decision
    push = hook_input("Bash", "git push origin main")
    waiting = gate_process(served, push, "--wait", "60s")
    alice = SocketClient(served.socket)
    pending = eventually(lambda: alice.list(status="pending"), timeout=30)
    assert isinstance(pending, list)
    [request] = [r for r in pending if r["requested_by"] == "ci-bot" and "git push" in r["summary"]]
    alice.approve(request["id"], "go")
    decision, reason = answered(waiting)
    assert decision == "allow" and "approved by alice" in reason
    assert alice.get(request["id"])["status"] == "executing"  # until the agent reports
    again = gate_process(served, push, "--wait", "1s")
    decision, reason = answered(again)
    assert decision == "deny" and "waiting for a human" in reason
    blocked = gate_process(served, hook_input("Bash", "rm -rf /"), "--wait", "1s")
    decision, reason = answered(blocked)
    assert decision == "deny" and reason.startswith("blocked by hitl-vault rule no-rm: no rm")


@pytest.mark.process
def test_a_token_that_is_not_an_agents_is_denied(served: Served) -> None:
    """An approver token (403) or an unknown one (401) at the gate: denied, naming why."""
    for token, why in ((served.approver_token, "an agent token is needed"),
                       ("hv_nope_nope", "unknown, revoked or expired")):  # fmt: skip
        decision, reason = answered(gate_process(served, hook_input(), token=token))
        assert decision == "deny" and why in reason


@pytest.mark.process
def test_the_gate_route_answers_bad_input_with_422_never_500(served: Served) -> None:
    """Bodies that are no hook input get 422 with the reason; a person's token 403."""
    import http.client

    def post(body: bytes, token: str = "") -> tuple[int, dict[str, Any]]:
        host, port = served.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=30)
        headers = {"Authorization": f"Bearer {token or served.agent_token}",
                   "Content-Type": "application/json"}  # fmt: skip
        connection.request("POST", "/api/v1/gate", body, headers)
        response = connection.getresponse()
        status, raw = response.status, response.read()
        connection.close()
        return status, json.loads(raw)

    good = json.loads(hook_input())
    for body, problem in [
        (b"[1]", "object"),
        (b"{", "JSON"),
        (json.dumps({**good, "format": "emacs"}).encode(), "not a hook format"),
        (json.dumps({**good, "format": 3}).encode(), "not a hook format"),
        (json.dumps({**good, "tool_input": "ls"}).encode(), "tool_input"),
        (json.dumps({**good, "cwd": "relative"}).encode(), "cwd"),
        (json.dumps({**good, "hook_event_name": "PostToolUse"}).encode(), "PreToolUse"),
        (json.dumps({**good, "tool_name": "../../etc"}).encode(), "action"),
        (b'{"tool_input": {"a": ' * 200 + b"1" + b"}}" * 200, ""),
    ]:
        status, answer = post(body)
        assert status == 422 and problem in answer.get("error", ""), (body[:60], status, answer)
    assert post(hook_input(), served.approver_token)[0] == 403
    status, answer = post(json.dumps({**good, "format": "codex"}).encode())
    assert status == 200 and answer["decision"] == "pending"
