"""Closing the loop: ``done`` records how an approved request without an executor ended,
once; the gate's hand-outs stay ``executing`` until the agent's PostToolUse hook
(``hitl-vault posttool``) reports, or the daemon closes them after the deadline."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hitl_vault import NotReportableError, Status, Vault
from hitl_vault.agents.formats import CLAUDE
from hitl_vault.agents.gate import decide
from hitl_vault.agents.gate import run as run_gate
from hitl_vault.agents.hookio import Call
from hitl_vault.agents.posttool import run as run_posttool
from hitl_vault.cli.main import cli
from hitl_vault.daemon.loop import Daemon
from hitl_vault.engine.execution import NOT_REPORTED, OUTCOME_DEADLINE

from .helpers import COMMAND, Clock, DaemonProcess, VaultHelper

SESSION = "5b0f6c1e-2d3a-4b5c-8d9e-0f1a2b3c4d5e"


def approved(vault: Vault, action: str = "deploy") -> str:
    """A request for ``action`` (no executor in the template unless it is ``payment``),
    approved by alice."""
    request = vault.submit(action, {"amount": 900, "env": "staging"})
    vault.approve(request.id, by="alice")
    return request.id


def test_done_records_executed_with_the_result_once(vault: Vault) -> None:
    """done moves an approved request with no executor to executed with its result; a
    second done is refused and changes nothing."""
    request_id = approved(vault)
    request = vault.done(request_id, result="deployed v1.2")
    assert request.status is Status.EXECUTED and request.result == "deployed v1.2"
    moves = [(t.from_status, t.to_status) for t in request.history][-2:]
    assert moves == [(Status.APPROVED, Status.EXECUTING), (Status.EXECUTING, Status.EXECUTED)]
    with pytest.raises(NotReportableError, match="recorded already"):
        vault.done(request_id, error="it broke after all")
    assert vault.get(request_id).result == "deployed v1.2"
    assert (vault.root / "Done" / f"{request_id}.md").exists()


def test_done_with_an_error_records_failed(vault: Vault) -> None:
    """done --error moves it to failed with the error, which retry then accepts."""
    request_id = approved(vault)
    request = vault.done(request_id, error="disk full", by="deploy-bot")
    assert request.status is Status.FAILED and request.error == "disk full"
    assert request.history[-1].by == "deploy-bot"
    assert vault.retry(request_id).retry_of == request_id


def test_done_refuses_what_is_not_the_callers_to_report(vault: Vault) -> None:
    """An action with an executor (the daemon reports it), a pending and a rejected
    request are refused, each saying why, and stay as they were."""
    runs = approved(vault, "payment")
    with pytest.raises(NotReportableError, match="has an executor: the daemon runs it"):
        vault.done(runs, result="paid")
    pending = vault.submit("deploy", {"env": "prod"}).id
    with pytest.raises(NotReportableError, match="only an approved request"):
        vault.done(pending, result="x")
    rejected = vault.submit("deploy", {"env": "qa"}).id
    vault.reject(rejected, by="bob")
    with pytest.raises(NotReportableError, match="is rejected"):
        vault.done(rejected, error="x")
    statuses = [vault.get(r).status for r in (runs, pending, rejected)]
    assert statuses == [Status.APPROVED, Status.PENDING, Status.REJECTED]


def test_the_cli_done_prints_the_status_and_refuses_a_second_time(vault_path: Path) -> None:
    """`hitl-vault done ID --result` exits 0 and prints the status; again exits 1 with the
    reason; neither or both of --result/--error is a usage error (exit 2)."""
    with Vault(vault_path) as vault:
        request_id = approved(vault)
    runner = CliRunner()
    base = ["--vault", str(vault_path), "done", request_id[:20]]
    first = runner.invoke(cli, [*base, "--result", "ok"])
    assert first.exit_code == 0, first.output
    assert first.output == f"{request_id} executed\n"
    again = runner.invoke(cli, [*base, "--error", "late"])
    assert again.exit_code == 1
    assert "is executed, so no outcome can be reported" in again.output
    assert runner.invoke(cli, base).exit_code == 2
    assert runner.invoke(cli, [*base, "--result", "a", "--error", "b"]).exit_code == 2


# --- the gate's hand-outs and the PostToolUse hook -------------------------------------


def hook_input(event: str, command: str, cwd: Path, **extra: Any) -> bytes:
    """What Claude Code writes on a hook's stdin for a Bash call."""
    data = {
        "session_id": SESSION,
        "cwd": str(cwd),
        "hook_event_name": event,
        "tool_name": "Bash",
        "tool_input": {"command": command},
        **extra,
    }
    return json.dumps(data).encode()


def hook(vault: Path, command: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    """One hook call through the installed command, as the agent makes it."""
    argv = [str(COMMAND), "--vault", str(vault), command, "--format", "claude"]
    if command == "gate":
        argv += ["--wait", "100ms"]
    return subprocess.run(argv, input=stdin, capture_output=True, timeout=60, check=False)


def only(vault: Path) -> Any:
    with Vault(vault) as v:
        (listed,) = v.list()
        return v.get(listed.id)


@pytest.mark.process
def test_the_gate_hands_out_executing_and_posttool_records_the_outcome(
    vault_path: Path, tmp_path: Path
) -> None:
    """An approved gated call is executing once handed out; PostToolUse makes it executed
    (a size, not the output); a PostToolUseFailure of the next one makes it failed; a call
    that was never handed out records nothing."""
    ask = hook_input("PreToolUse", "make deploy", tmp_path)
    assert b'"deny"' in hook(vault_path, "gate", ask).stdout
    with Vault(vault_path) as vault:
        vault.approve(only(vault_path).id, by="alice")
    allowed = hook(vault_path, "gate", ask)
    assert b'"allow"' in allowed.stdout, allowed.stderr
    assert only(vault_path).status is Status.EXECUTING

    output = {"stdout": "built\nsecret-token-123\n", "stderr": "", "interrupted": False}
    after = hook_input("PostToolUse", "make deploy", tmp_path, tool_response=output)
    reported = hook(vault_path, "posttool", after)
    assert (reported.returncode, reported.stderr) == (0, b"")
    request = only(vault_path)
    assert request.status is Status.EXECUTED
    assert request.result == "run by the agent: the tool succeeded (2 lines of output)"
    assert "secret-token" not in json.dumps([str(t) for t in request.history])
    assert hook(vault_path, "posttool", after).returncode == 0  # nothing left to record

    # The same pair in this process (the subprocesses above showed the commands).
    assert b'"deny"' in run_gate(vault_path, CLAUDE, 0.1, ask)[1].encode()  # used once
    with Vault(vault_path) as vault:
        second = next(r for r in vault.list() if r.status is Status.PENDING)
        vault.approve(second.id, by="alice")
    assert b'"allow"' in run_gate(vault_path, CLAUDE, 0.1, ask)[1].encode()
    failed = hook_input("PostToolUseFailure", "make deploy", tmp_path, error="exit 2: no rule")
    assert run_posttool(vault_path, CLAUDE, failed) == (0, "", "")
    with Vault(vault_path) as vault:
        assert vault.get(second.id).status is Status.FAILED
        assert vault.get(second.id).error == "exit 2: no rule"

    other = hook_input("PostToolUse", "ls", tmp_path, tool_response={"stdout": ""})
    assert run_posttool(vault_path, CLAUDE, other) == (0, "", "")
    with Vault(vault_path) as vault:
        assert len(vault.list()) == 2


@pytest.mark.process
def test_posttool_for_an_unmarked_call_imports_neither_sqlite_nor_click(
    vault_path: Path, tmp_path: Path
) -> None:
    """The hook for a call the gate never handed out exits 0 before importing sqlite3 or
    click (it runs after every tool call)."""
    code = (
        "import sys\n"
        "sys.argv = ['hitl-vault', '--vault', sys.argv[1], 'posttool']\n"
        "from hitl_vault.cli.entry import main\n"
        "try:\n    main()\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "    print(sorted(m for m in ('sqlite3', 'click', 'yaml') if m in sys.modules))\n"
    )
    stdin = hook_input("PostToolUse", "ls", tmp_path, tool_response={"stdout": "a\n"})
    done = subprocess.run(
        [str(COMMAND.with_name("python")), "-c", code, str(vault_path)],
        input=stdin, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.stdout == b"[]\n", done.stderr


# --- the deadline ----------------------------------------------------------------------


def test_an_outcome_never_reported_ends_after_the_deadline_and_recovery_leaves_it(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, tmp_path: Path
) -> None:
    """A handed-out request the daemon's recovery leaves executing; an hour after the
    hand-out with no report it is executed · outcome not reported; a late report is
    refused."""
    vault = clocked_vault
    call = Call("claude-code", SESSION, "Bash", {"command": "make deploy"}, tmp_path)
    assert not decide(vault.root, call, 0.0, CLAUDE).allow  # pending
    (pending,) = vault.list()
    vault.approve(pending.id, by="alice")
    assert decide(vault.root, call, 0.0, CLAUDE).allow
    daemon.run_once(clock.now)  # the first step recovers what a dead daemon left
    assert vault.get(pending.id).status is Status.EXECUTING
    soon = daemon.next_wake(clock.now)
    assert soon is not None and soon <= clock.now + OUTCOME_DEADLINE

    daemon.run_once(clock.advance(OUTCOME_DEADLINE - timedelta(minutes=1)))
    assert vault.get(pending.id).status is Status.EXECUTING
    daemon.run_once(clock.advance(timedelta(minutes=2)))
    request = vault.get(pending.id)
    assert (request.status, request.result) == (Status.EXECUTED, NOT_REPORTED)
    assert request.history[-1].by == "hitl-vault"
    assert request.history[-1].details == (NOT_REPORTED,)  # executed · outcome not reported
    with pytest.raises(NotReportableError):
        vault.done(pending.id, result="late")


def test_a_scripts_own_long_action_is_not_closed_by_the_deadline(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """approval()'s executing request (a script carrying it out) is not the gate's: the
    deadline leaves it alone, and done records its outcome."""
    vault = clocked_vault
    request = vault.engine.submit("deploy", {"env": "x"}, carried_by_requester=True)
    vault.approve(request.id, by="alice")
    vault.engine.start_execution(request.id, by="script")
    daemon.run_once(clock.now)
    daemon.run_once(clock.advance(OUTCOME_DEADLINE * 3))
    assert vault.get(request.id).status is Status.EXECUTING
    assert vault.done(request.id, result="took a while").status is Status.EXECUTED


# --- submit --wait-result --------------------------------------------------------------


def submit(vault: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [str(COMMAND), "--vault", str(vault), "submit", *args, "--wait-result"]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


@pytest.mark.process
@pytest.mark.slow  # a real daemon runs the executor
def test_submit_wait_result_prints_the_result_and_exits_by_the_outcome(
    vault_path: Path, helper: VaultHelper
) -> None:
    """With the daemon running the executor: executed prints its output (exit 0); a failed
    run exits 1 with the error; an action with no executor is a usage error (exit 2)."""
    helper.record_runs()
    (helper.scripts / "fail.py").write_text("import sys\nsys.exit('card declined')\n")
    text = helper.rules.read_text().replace(
        "actions:\n", f"actions:\n  transfer:\n    run: [{sys.executable}, scripts/fail.py]\n", 1
    )
    helper.rules.write_text(text)
    with DaemonProcess(vault_path):
        ran = submit(vault_path, "payment", "-p", "amount=20")
        assert ran.returncode == 0, ran.stderr
        lines = ran.stdout.splitlines()
        assert lines[0].endswith(" approved") and lines[1].endswith(" executed")
        assert lines[2] == "paid 20"
        failed = submit(vault_path, "transfer", "-p", "amount=30")
        assert failed.returncode == 1 and failed.stdout.splitlines()[-1].endswith(" failed")
        assert "card declined" in failed.stderr
    refused = submit(vault_path, "deploy")
    assert refused.returncode == 2 and "has no executor" in refused.stderr
    assert "hitl-vault done ID" in refused.stderr


async def test_report_result_over_the_local_mcp_server(vault: Vault) -> None:
    """hitl-vault mcp's report_result records the outcome, and a second report is the
    tool's error saying it is recorded already."""
    from mcp import Client

    from hitl_vault.agents.mcp_server import build_server

    request_id = approved(vault)
    async with Client(build_server(vault)) as client:
        got = await client.call_tool("report_result", {"id": request_id, "result": "sent"})
        text = got.content[0].text  # type: ignore[union-attr]
        assert not got.is_error, text
        assert json.loads(text)["status"] == "executed"
        again = await client.call_tool("report_result", {"id": request_id, "error": "x"})
        assert again.is_error and "recorded already" in again.content[0].text  # type: ignore[union-attr]
    assert vault.get(request_id).result == "sent"


def test_posttool_refuses_a_pretooluse_input_and_records_nothing(
    vault_path: Path, tmp_path: Path
) -> None:
    """posttool wired to the wrong event says so (exit 1, never 2: it cannot block) and
    records nothing; its click form reads the same input, with --server too."""
    runner = CliRunner()
    base = ["--vault", str(vault_path), "posttool"]
    wrong = runner.invoke(cli, base, input=hook_input("PreToolUse", "ls", tmp_path))
    assert wrong.exit_code == 1 and "answers PostToolUse hooks" in wrong.output
    after = hook_input("PostToolUse", "ls", tmp_path, tool_response={"stdout": ""})
    assert runner.invoke(cli, base, input=after).exit_code == 0
    with Vault(vault_path) as vault:
        assert vault.list() == []
    remote = ["--server", "http://127.0.0.1:9", "posttool"]  # nothing handed out: no request
    env = {"XDG_STATE_HOME": str(tmp_path / "state")}
    assert runner.invoke(cli, remote, input=after, env=env).exit_code == 0
