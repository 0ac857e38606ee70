"""The gate over HTTP (README "Agents on other machines"): the service decides an agent's
hook call with the local gate's rules, retry matching and once-only hand-out, its
requester being the token's name; `hitl-vault gate --server` fails closed on anything but
the service's documented answer, and `hook install --server` writes that command."""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import subprocess
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hitl_vault import Status
from hitl_vault.agents import gate_client
from hitl_vault.agents.formats import CLAUDE, CURSOR
from hitl_vault.agents.gate_service import GateAnswer, decide_remote
from hitl_vault.agents.hookio import Answer, Call
from hitl_vault.cli.entry import gate_arguments
from hitl_vault.cli.main import cli
from hitl_vault.engine import Engine
from hitl_vault.identity import API, Principal, Role

from .helpers import COMMAND

RULES = """\
defaults: {decision: ask, timeout: 1h}
rules:
  - {name: reads, action: Read, decision: allow}
  - {name: no-rm, action: Bash, params: {command: "re:rm .*"}, decision: block, reason: no rm}
"""
AGENT = Principal("ci-bot", Role.AGENT, API, credential="c1")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    """The engine of a template vault with rules for a coding agent."""
    from hitl_vault.cli.template import init_vault

    init_vault(tmp_path / "vault")
    (tmp_path / "vault" / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    with Engine(tmp_path / "vault") as e:
        yield e


def call(tool: str, params: dict[str, Any], session: str = "s1") -> Call:
    """A tool call as an agent's hook on another machine describes it."""
    return Call("claude-code", session, tool, params, Path("/home/dev/app"))


def remote(engine: Engine, c: Call, who: Principal = AGENT) -> GateAnswer:
    return decide_remote(engine, c, who, CLAUDE)


# --- the service's side --------------------------------------------------------------------


def test_what_the_rules_allow_is_none_and_leaves_no_trace(engine: Engine) -> None:
    """An allowed call is "none": the agent's own permissions apply, nothing is recorded."""
    assert remote(engine, call("Read", {"file_path": "/etc/hosts"})) == GateAnswer("none")
    assert engine.list() == []


def test_a_block_is_denied_and_recorded_in_the_tokens_name(engine: Engine) -> None:
    """A blocked call is denied with the rule's reason; the requester is the token's name,
    with the token's id and the hook's session and agent in fields of their own."""
    answer = remote(engine, call("Bash", {"command": "rm -rf /"}))
    assert answer.decision == "deny" and "no rm" in answer.reason
    assert answer.request is not None and answer.request.requested_by == "ci-bot"
    assert answer.request.status is Status.REJECTED
    kept = engine.get(answer.request.id)
    assert (kept.credential, kept.session, kept.client) == ("c1", "s1", "claude-code")


def test_an_ask_is_pending_then_allowed_once_after_an_approval(engine: Engine) -> None:
    """The identical call finds the same request, is handed it once approved, then asks anew."""
    push = call("Bash", {"command": "git push"})
    first = remote(engine, push)
    assert first.decision == "pending" and first.request is not None
    assert first.request.requested_by == "ci-bot"
    assert remote(engine, push).request == first.request  # the identical retry: no new request
    engine.approve(first.request.id, "alice", "", None, {"command": "git push --dry-run"})
    handed = remote(engine, push)
    assert handed.decision == "allow" and "approved by alice" in handed.reason
    assert handed.updated == {"command": "git push --dry-run"}
    assert handed.request is not None and handed.request.status is Status.EXECUTING
    again = remote(engine, push)  # an approval is used once
    assert again.decision == "pending" and again.request is not None
    assert again.request.id != first.request.id


def test_agents_never_share_an_approval_and_a_rejection_says_why(engine: Engine) -> None:
    """Another token's identical call is its own request; a rejection reaches the agent."""
    push = call("Bash", {"command": "git push"})
    mine = remote(engine, push).request
    other = Principal("other-bot", Role.AGENT, API)
    theirs = remote(engine, push, other).request
    assert mine is not None and theirs is not None and mine.id != theirs.id
    engine.reject(theirs.id, "bob", "not today")
    answer = remote(engine, push, other)
    assert answer.decision == "deny" and "rejected by bob: not today" in answer.reason
    assert remote(engine, push).decision == "pending"


def test_an_agent_limited_to_actions_is_denied_the_others_and_a_person_cannot_gate(
    engine: Engine,
) -> None:
    """A token's --actions bound what it may ask (what the rules allow unrecorded asks
    nothing, and passes); an approver token is no agent."""
    limited = Principal("deployer", Role.AGENT, API, actions=("Bash",))
    answer = remote(engine, call("Write", {"file_path": "x", "content": ""}), limited)
    assert answer.decision == "deny" and "may not ask for Write" in answer.reason
    assert remote(engine, call("Read", {"file_path": "x"}), limited).decision == "none"
    alice = Principal("alice", Role.APPROVER, API)
    assert remote(engine, call("Bash", {"command": "git push"}), alice).decision == "deny"
    assert engine.list() == []


def test_edits_a_format_cannot_take_are_not_run_and_say_so(engine: Engine) -> None:
    """Cursor cannot take edited input: the allow becomes a deny naming the input to send."""
    push = Call("cursor", "c1", "Bash", {"command": "git push"}, Path("/app"))
    first = decide_remote(engine, push, AGENT, CURSOR)
    assert first.request is not None
    engine.approve(first.request.id, "alice", "", None, {"command": "git push -n"})
    handed = decide_remote(engine, push, AGENT, CURSOR)
    assert handed.request is not None and handed.request.status is Status.FAILED
    shown = handed.json(lambda r: {"id": r.id})
    assert shown["decision"] == "allow" and shown["request"] == {"id": handed.request.id}
    _, out, _ = CURSOR.render(Answer(True, "", handed.updated), push.params)
    assert json.loads(out)["permission"] == "deny" and "git push -n" in out


# --- the client: fail closed ---------------------------------------------------------------


def hook_input(tool: str = "Bash", command: str = "git push") -> bytes:
    """What Claude Code writes on a PreToolUse hook's stdin."""
    data = {
        "session_id": "s1",
        "cwd": "/home/dev/app",
        "hook_event_name": "PreToolUse",
        "tool_name": tool,
        "tool_input": {"command": command},
    }
    return json.dumps(data).encode()


def said(reply: tuple[int, str, str]) -> tuple[str, str]:
    """(permissionDecision, reason) of a Claude Code answer ("none": no output, no decision)."""
    code, out, err = reply
    assert code == 0, err
    if out == "":
        return "none", ""
    spec = json.loads(out)["hookSpecificOutput"]
    return spec["permissionDecision"], spec.get("permissionDecisionReason", "")


Handler = Callable[[BaseHTTPRequestHandler], None]


@pytest.fixture
def fake() -> Iterator[Callable[[Handler], str]]:
    """A tiny HTTP server on 127.0.0.1 answering as the test says: its URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(answer: Handler) -> str:
        class Handle(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length", "0")))
                answer(self)

            do_GET = do_POST

            def log_message(self, *args: object) -> None:
                pass  # quiet: no output in the test's log

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handle)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def replying(status: int, body: bytes, kind: str = "application/json") -> Handler:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        h.send_header("Content-Type", kind)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    return answer


@pytest.mark.parametrize(
    ("status", "body", "problem"),
    [
        (500, b'{"decision": "allow", "reason": ""}', "HTTP 500"),
        (401, b'{"error": "unauthorized"}', "unknown, revoked or expired"),
        (302, b"", "HTTP 302"),
        (429, b'{"error": "refused for a minute\\n"}', "HTTP 429 (refused for a minute)"),
        (200, b"<html>allow</html>", "not JSON"),
        (200, b'["allow"]', "not an object"),
        (200, b'{"decision": "ALLOW", "reason": ""}', "no decision"),
        (200, b'{"decision": "allow", "reason": 7}', "reason that is not text"),
        (200, b'{"decision": "allow", "reason": "", "updated_input": "rm"}', "updated_input"),
        (200, b'{"decision": "pending", "reason": "wait", "request": {"id": 5}}', "wait"),
    ],
)
def test_anything_but_the_documented_answer_denies(
    fake: Callable[[Handler], str],
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    body: bytes,
    problem: str,
) -> None:
    """A status, a body or a decision the gate does not know is a deny naming it."""
    monkeypatch.setenv("HITL_VAULT_TOKEN", "hv_test")
    url = fake(replying(status, body))
    decision, reason = said(gate_client.run(url, None, CLAUDE, 5.0, hook_input()))
    assert decision == "deny" and problem in reason


def test_a_dead_port_and_a_silent_server_deny(
    fake: Callable[[Handler], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Nothing listening, or an answer that never comes: denied, never allowed."""
    monkeypatch.setenv("HITL_VAULT_TOKEN", "hv_test")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    decision, reason = said(
        gate_client.run(f"http://127.0.0.1:{port}", None, CLAUDE, 1, hook_input())
    )
    assert decision == "deny" and "cannot reach" in reason
    hang = threading.Event()

    def silent(_: BaseHTTPRequestHandler) -> None:
        hang.wait(10)

    url = fake(silent)
    service = gate_client.Service(gate_client.check_url(url), "hv_test", margin=0.3)
    try:
        with pytest.raises(gate_client.ServerError, match="did not answer within"):
            gate_client.decide(service, json.loads(hook_input()), 0.0)
    finally:
        hang.set()


def test_the_url_and_the_token_are_checked_before_anything_is_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain http:// off this machine, a token in the URL, no token, a token file others
    may read: each is a deny that says the fix."""
    monkeypatch.delenv("HITL_VAULT_TOKEN", raising=False)
    for url, fix in [
        ("http://vault.example.com", "use https://"),
        ("http://10.0.0.5:8787", "use https://"),
        ("https://hv_secret@vault.example.com", "never in the URL"),
        ("ftp://vault.example.com", "not an http"),
    ]:
        decision, reason = said(gate_client.run(url, None, CLAUDE, 1, hook_input()))
        assert decision == "deny" and fix in reason and "hv_secret" not in reason, url
    decision, reason = said(gate_client.run("https://h.example", None, CLAUDE, 1, hook_input()))
    assert "set $HITL_VAULT_TOKEN" in reason
    monkeypatch.setenv("HITL_VAULT_TOKEN", "hv_x\r\nX-Evil: 1")
    decision, reason = said(gate_client.run("https://h.example", None, CLAUDE, 1, hook_input()))
    assert decision == "deny" and "characters a token never has" in reason
    monkeypatch.delenv("HITL_VAULT_TOKEN")
    token = tmp_path / "token"
    token.write_text("hv_x\n")
    token.chmod(0o644)
    decision, reason = said(
        gate_client.run("https://h.example", str(token), CLAUDE, 1, hook_input())
    )
    assert decision == "deny" and f"chmod 600 {token}" in reason
    for url in ("http://127.0.0.2:8787", "http://[::1]:8787", "http://localhost"):
        assert gate_client.check_url(url)[0] == "http"
    with pytest.raises(gate_client.ServerError):
        gate_client.check_url("http://127.0.0.1.example.com")


def test_input_that_is_not_a_tool_call_exits_2_without_asking() -> None:
    """The hook's input is read first: exit 2 blocks the call in every agent."""
    code, _, err = gate_client.run("http://127.0.0.1:1", None, CLAUDE, 1, b"[1]")
    assert code == 2 and "not an object" in err


def test_the_fast_path_reads_server_and_token_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """`gate --server URL --token-file PATH` is parsed without click, as is `--server URL
    gate` and $HITL_VAULT_SERVER; --token-file with no server goes to click to refuse."""
    monkeypatch.delenv("HITL_VAULT_SERVER", raising=False)
    fast = gate_arguments(["gate", "--server", "https://h", "--token-file=/t", "--wait", "5s"])
    assert fast is not None and (fast.server, fast.token_file, fast.wait) == ("https://h", "/t", 5)
    root = gate_arguments(["--server", "https://h", "gate"])
    assert root is not None and root.server == "https://h"
    assert gate_arguments(["gate", "--token-file", "/t"]) is None
    monkeypatch.setenv("HITL_VAULT_SERVER", "https://env")
    from_env = gate_arguments(["gate"])
    assert from_env is not None and from_env.server == "https://env"


@pytest.mark.process
def test_the_installed_command_denies_when_the_service_is_down(tmp_path: Path) -> None:
    """`hitl-vault gate --server` in a real process, nothing listening: a deny, exit 0,
    having imported neither click nor the journal nor the vault's watcher."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HITL_VAULT_TOKEN": "hv_test", "HITL_VAULT": str(tmp_path / "none")}
    env["PYTHONPROFILEIMPORTTIME"] = "1"
    argv = [str(COMMAND), "gate", "--server", f"http://127.0.0.1:{port}", "--wait", "1s"]
    done = subprocess.run(argv, input=hook_input(), capture_output=True, timeout=60, env=env)
    assert done.returncode == 0, done.stderr
    spec = json.loads(done.stdout)["hookSpecificOutput"]
    assert spec["permissionDecision"] == "deny"
    assert "cannot reach" in spec["permissionDecisionReason"]
    imported = {
        m.group(1).split(b".")[0]
        for m in re.finditer(rb"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", done.stderr, re.M)
    }
    assert b"http" in imported and b"hitl_vault" in imported  # the measurement works
    heavy = {b"click", b"asyncio", b"sqlite3", b"yaml", b"watchdog", b"starlette", b"uvicorn"}
    assert imported & heavy == set()  # http.client, and nothing of the vault's


# --- hook install --server -----------------------------------------------------------------


@pytest.mark.process
def test_hook_install_writes_the_server_command_and_needs_no_vault(tmp_path: Path) -> None:
    """The hook asks the service with the token file; no vault is needed on this machine."""
    token = tmp_path / "agent.token"
    token.write_text("hv_x\n")
    token.chmod(0o600)
    project = tmp_path / "app"
    project.mkdir()
    args = ["--vault", str(tmp_path / "no-vault"), "hook", "install", "--project", str(project),
            "--server", "https://vault.example.com", "--token-file", str(token)]  # fmt: skip
    done = CliRunner().invoke(cli, args, obj={})
    assert done.exit_code == 0, done.output
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    [group] = settings["hooks"]["PreToolUse"]
    words = shlex.split(group["hooks"][0]["command"])
    assert words[words.index("--server") + 1] == "https://vault.example.com"
    assert words[words.index("--token-file") + 1] == str(token)
    assert "--vault" not in words and "gate" in words
    refused = CliRunner().invoke(cli, [*args[:-4], "--server", "http://vault.example.com"], obj={})
    assert refused.exit_code != 0 and "https://" in refused.output
