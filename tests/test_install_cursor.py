"""`hitl-vault gate --format cursor` fed each hook input Cursor documents
(cursor.com/docs/agent/hooks: `beforeShellExecution`, `beforeMCPExecution`,
`beforeReadFile`, `preToolUse`), answering in Cursor's shape: `permission`, `user_message`,
`agent_message`, exit 0; exit 2 only for input that is not a call."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hitl_vault.agents.formats import CURSOR
from hitl_vault.agents.hookio import BadInput
from hitl_vault.cli.main import cli

RULES = """\
defaults:
  decision: ask
rules:
  - name: reads
    action: Read
    decision: allow
  - name: listing
    action: Shell
    params: {command: ls}
    decision: allow
  - name: no-rm
    action: Shell
    params: {command: "re:rm .*"}
    decision: block
    reason: rm is never run by an agent
  - name: no-secret-issues
    action: mcp__create_issue
    params: {repo: "re:.*secret.*"}
    decision: block
    reason: not in the secret repo
  - name: issues
    action: mcp__create_issue
    decision: allow
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder beside a vault with rules for Cursor's tools."""
    from hitl_vault.cli.template import init_vault

    init_vault(tmp_path / "vault")
    (tmp_path / "vault" / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    (tmp_path / "app").mkdir()
    return tmp_path / "app"


def cursor_input(event: str, project: Path, **fields: Any) -> dict[str, Any]:
    """The fields every Cursor hook gets, and the event's own."""
    return {
        "conversation_id": "c0nv-1", "generation_id": "gen-7", "model": "claude-4.5-sonnet",
        "hook_event_name": event, "cursor_version": "2.1.0",
        "workspace_roots": [str(project)], "user_email": None, **fields,
    }  # fmt: skip


def gate(project: Path, data: dict[str, Any]) -> tuple[int, dict[str, Any] | None, str]:
    """Run the gate on one Cursor hook input: exit code, the JSON answer, stderr."""
    vault = project.parent / "vault"
    done = CliRunner().invoke(
        cli,
        ["--vault", str(vault), "gate", "--format", "cursor", "--wait", "1s"],
        input=json.dumps(data).encode(),
        obj={},
    )
    out = json.loads(done.stdout) if done.stdout.strip() else None
    return done.exit_code, out, done.stderr


def assert_cursor_shape(out: dict[str, Any] | None, *, may_ask: bool = True) -> None:
    """An answer Cursor reads: only its fields, a permission it knows."""
    assert isinstance(out, dict)
    assert set(out) <= {"permission", "user_message", "agent_message"}
    allowed = {"allow", "deny", "ask"} if may_ask else {"allow", "deny"}
    assert out.get("permission", "allow") in allowed


def test_before_shell_execution_is_the_shell_tool(project: Path) -> None:
    """`command` and `cwd`: a blocked command is denied with the rule's reason, an allowed
    one is not denied."""
    rm = cursor_input("beforeShellExecution", project, command="rm -rf build", cwd=str(project))
    code, out, err = gate(project, rm)
    assert code == 0, err
    assert_cursor_shape(out)
    assert out is not None and out["permission"] == "deny"
    assert "rm is never run by an agent" in out["agent_message"]
    assert out["user_message"]
    code, out, err = gate(project, cursor_input("beforeShellExecution", project,
                                                command="ls", cwd=str(project)))  # fmt: skip
    assert code == 0, err
    assert_cursor_shape(out)
    assert out is not None and out.get("permission") != "deny"


def test_before_mcp_execution_reads_tool_input_as_json_text(project: Path) -> None:
    """`tool_input` is JSON text: its params reach the rules (mcp__<tool>)."""
    params = json.dumps({"repo": "acme/secret-plans", "title": "x"})
    code, out, err = gate(project, cursor_input("beforeMCPExecution", project,
                                                tool_name="create_issue", tool_input=params,
                                                url="https://mcp.example.com"))  # fmt: skip
    assert code == 0, err
    assert_cursor_shape(out)
    assert out is not None and out["permission"] == "deny"
    assert "not in the secret repo" in out["agent_message"]
    params = json.dumps({"repo": "acme/app", "title": "x"})
    code, out, err = gate(project, cursor_input("beforeMCPExecution", project,
                                                tool_name="create_issue", tool_input=params,
                                                command="npx github-mcp"))  # fmt: skip
    assert code == 0, err
    assert_cursor_shape(out)
    assert out is not None and out.get("permission") != "deny"


def test_before_read_file_is_the_read_tool_and_never_asks(project: Path) -> None:
    """`file_path` (the file's `content` is not kept): allowed by a Read rule; answers are
    allow or deny only."""
    secret = "# app\nAWS_SECRET=xyz"
    code, out, err = gate(project, cursor_input("beforeReadFile", project,
                                                file_path=str(project / "README.md"),
                                                content=secret, attachments=[]))  # fmt: skip
    assert code == 0, err
    assert_cursor_shape(out, may_ask=False)
    assert out is not None and out.get("permission", "allow") == "allow"
    call = CURSOR.call_of(cursor_input("beforeReadFile", project, file_path="/x", content=secret))
    assert (call.tool, call.params, call.cwd) == ("Read", {"file_path": "/x"}, project)


def test_pre_tool_use_writing_the_vault_is_denied_by_the_guard(project: Path) -> None:
    """Cursor's preToolUse (`tool_name`, `tool_input`): a Write into the vault is denied."""
    note = project.parent / "vault" / "Pending_Approval" / "x.md"
    code, out, err = gate(project, cursor_input("preToolUse", project, tool_name="Write",
                                                tool_input={"file_path": str(note),
                                                            "content": "status: approved"},
                                                tool_use_id="t1", cwd=str(project)))  # fmt: skip
    assert code == 0, err
    assert_cursor_shape(out)
    assert out is not None and out["permission"] == "deny" and "vault" in out["agent_message"]


def test_each_documented_input_is_read_as_its_call(project: Path) -> None:
    """The call each event stands for: its tool, params, session, folder."""
    shell = CURSOR.call_of(cursor_input("beforeShellExecution", project, command="make",
                                        cwd=str(project / "sub")))  # fmt: skip
    assert (shell.tool, shell.params, shell.cwd) == ("Shell", {"command": "make"}, project / "sub")
    assert shell.requested_by == "cursor:c0nv-1"
    mcp = CURSOR.call_of(cursor_input("beforeMCPExecution", project, tool_name="t",
                                      tool_input='{"a": [1]}', url="https://m"))  # fmt: skip
    assert (mcp.tool, mcp.params, mcp.extra["mcp_server"]) == ("mcp__t", {"a": [1]}, "https://m")
    empty = CURSOR.call_of(cursor_input("beforeMCPExecution", project, tool_name="t",
                                        tool_input=""))  # fmt: skip
    assert empty.params == {}


@pytest.mark.parametrize(
    ("event", "fields", "problem"),
    [
        ("beforeShellExecution", {"cwd": "/x"}, '"command"'),
        ("beforeReadFile", {"content": "x"}, '"file_path"'),
        ("beforeMCPExecution", {"tool_name": "t", "tool_input": "{nope"}, "not JSON"),
        ("beforeMCPExecution", {"tool_name": "t", "tool_input": "[1]"}, "not an object"),
        ("beforeMCPExecution", {"tool_input": "{}"}, '"tool_name"'),
    ],
)
def test_input_that_is_not_a_call_blocks_it(
    project: Path, event: str, fields: dict[str, Any], problem: str
) -> None:
    """A Cursor input missing what its event needs: exit 2 (blocked), saying what is missing."""
    with pytest.raises(BadInput, match=problem):
        CURSOR.call_of(cursor_input(event, project, **fields))
    code, out, err = gate(project, cursor_input(event, project, **fields))
    assert code == 2 and out is None and problem in err


def test_no_workspace_root_and_no_cwd_blocks_the_call(project: Path) -> None:
    """beforeReadFile has no cwd: without workspace_roots the folder is unknown, so blocked."""
    data = cursor_input("beforeReadFile", project, file_path="/x")
    data["workspace_roots"] = []
    with pytest.raises(BadInput, match="workspace_roots"):
        CURSOR.call_of(data)
