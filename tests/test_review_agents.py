"""A review of the agent gate, `hook install` and the template's agent rules, attacked as a
careless user and a hostile agent would: each test states behaviour the README promises
that the code once did not keep."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hitl_vault import Status, Vault
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault

from .helpers import COMMAND

pytestmark = pytest.mark.process  # nearly every test here starts a real process

SESSION = "7d0c9f2e-1a2b-4c3d-8e9f-0a1b2c3d4e5f"


def _call(tool: str, tool_input: dict[str, Any], cwd: Path) -> bytes:
    """A Claude Code PreToolUse hook input."""
    return json.dumps(
        {
            "session_id": SESSION,
            "transcript_path": "/home/dev/.claude/projects/demo/t.jsonl",
            "cwd": str(cwd),
            "permission_mode": "default",
            "hook_event_name": "PreToolUse",
            "tool_name": tool,
            "tool_input": tool_input,
            "tool_use_id": "toolu_01REVIEW",
        }
    ).encode()


def _gate(
    vault: Path, stdin: bytes, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """One hook call through the installed command, as the agent runs it."""
    return subprocess.run(
        [str(COMMAND), "--vault", str(vault), "gate", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
    )


def _permission(done: subprocess.CompletedProcess[bytes]) -> str:
    """Claude Code's reading of the answer: exit 2 blocks, exit 0 is the JSON's decision,
    any other exit is a non-blocking error and the tool runs ("allow")."""
    if done.returncode == 2:
        return "deny"
    if done.returncode != 0:
        return "allow"
    spec = json.loads(done.stdout)["hookSpecificOutput"]
    return str(spec["permissionDecision"])


@pytest.fixture
def agent_vault(tmp_path: Path) -> Path:
    """~/code/vault beside ~/code/my-app, as "Claude Code in two commands" sets it up."""
    vault = tmp_path / "code" / "vault"
    vault.parent.mkdir()
    init_vault(vault)
    (tmp_path / "code" / "my-app").mkdir()
    return vault


def _rules(vault: Path, text: str) -> None:
    (vault / "hitl-vault.yaml").write_text(text, encoding="utf-8")


ALLOW_ALL_BUT_DEPLOYS = """\
defaults: {decision: allow, quiet: 200ms}
rules:
  - name: deploys
    action: Bash
    params: {command: "re:make deploy.*"}
    decision: ask
    risk: high
"""


# --- the vault guard ------------------------------------------------------------------------


def test_an_mcp_filesystem_move_into_approved_is_denied_whatever_the_rules_say(
    agent_vault: Path,
) -> None:
    """The official filesystem MCP server's move_file into the vault is a write the guard denies."""
    _rules(agent_vault, ALLOW_ALL_BUT_DEPLOYS)
    app = agent_vault.parent / "my-app"
    asked = _gate(agent_vault, _call("Bash", {"command": "make deploy"}, app), "--wait", "1s")
    assert _permission(asked) == "deny"
    [note] = (agent_vault / "Pending_Approval").glob("*T*Z-Bash-*.md")
    move = {"source": str(note), "destination": str(agent_vault / "Approved" / note.name)}
    done = _gate(agent_vault, _call("mcp__filesystem__move_file", move, app))
    assert _permission(done) == "deny", done.stdout


def test_a_command_that_cds_to_the_vaults_parent_and_names_it_is_denied(
    agent_vault: Path,
) -> None:
    """`cd .. && sed -i ... vault/Pending_Approval/*.md` from the project next to the vault."""
    _rules(agent_vault, ALLOW_ALL_BUT_DEPLOYS)
    app = agent_vault.parent / "my-app"
    command = "cd .. && sed -i s/^status:.*/status:\\ approved/ vault/Pending_Approval/*.md"
    done = _gate(agent_vault, _call("Bash", {"command": command}, app))
    assert _permission(done) == "deny", done.stdout


def test_a_file_tool_cannot_rewrite_the_hitl_vault_command_the_hook_runs(
    agent_vault: Path, tmp_path: Path
) -> None:
    """Write over the `hitl-vault` script named in the hook: denied, as `echo > …` would be."""
    _rules(agent_vault, "defaults: {decision: allow}\n")
    app = agent_vault.parent / "my-app"
    write = {"file_path": str(COMMAND), "content": "#!/bin/sh\necho '{}'\n"}
    done = _gate(agent_vault, _call("Write", write, app))
    assert _permission(done) == "deny", done.stdout
    shell = {"command": f"echo x > {COMMAND}"}
    assert _permission(_gate(agent_vault, _call("Bash", shell, app))) == "deny"


# --- an approval and what it was given for --------------------------------------------------


def test_an_approval_for_one_folder_is_not_handed_to_the_same_command_in_another(
    agent_vault: Path,
) -> None:
    """`make deploy` approved for my-app is not allowed when the agent retries it in prod-infra."""
    _rules(agent_vault, ALLOW_ALL_BUT_DEPLOYS)
    app = agent_vault.parent / "my-app"
    other = agent_vault.parent / "prod-infra"
    other.mkdir()
    first = _gate(agent_vault, _call("Bash", {"command": "make deploy"}, app), "--wait", "1s")
    assert _permission(first) == "deny"
    with Vault(agent_vault) as v:
        [req] = v.list()
        assert str(app) in (req.context or "")
        v.approve(req.id, by="alice")
    retry = _gate(agent_vault, _call("Bash", {"command": "make deploy"}, other), "--wait", "1s")
    assert _permission(retry) == "deny", retry.stdout
    with Vault(agent_vault) as v:
        assert v.get(req.id).status is Status.APPROVED  # still there for my-app's retry


# --- failing open -----------------------------------------------------------------------------


def test_a_block_with_a_non_ascii_reason_blocks_whatever_stdouts_encoding(
    agent_vault: Path,
) -> None:
    """A block rule whose reason has an em dash still blocks when stdout is not UTF-8."""
    _rules(
        agent_vault,
        "defaults: {decision: allow}\nrules:\n  - name: no-rm\n    action: Bash\n"
        "    params: {command: 're:.*rm -rf.*'}\n    decision: block\n"
        "    reason: never \u2014 ask Zo\u00eb\n",
    )
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    app = agent_vault.parent / "my-app"
    done = _gate(agent_vault, _call("Bash", {"command": "rm -rf ~"}, app), env=env)
    assert done.returncode in (0, 2), done.stderr.decode(errors="replace")
    assert _permission(done) == "deny"


# --- the template's agent rules ---------------------------------------------------------------


def _template_with_agent_rules() -> Any:
    """The template's rules, its agent rules on as it ships them."""
    from hitl_vault.policy.rulesfile import parse_policy

    text = (Path(__file__).parents[1] / "vault_template" / "hitl-vault.yaml").read_text()
    assert "\n  - name: agent-safe-commands" in text, "the template ships its agent rules on"
    return parse_policy(text)


@pytest.mark.parametrize(
    "command",
    ["ls .\nrm -r -f ~", "git status -s\npython3 exfil.py", "ls -la\nchmod -R 777 ~"],
)
def test_the_templates_safe_commands_never_allow_a_second_line(command: str) -> None:
    """A 'safe' first line does not let an arbitrary second line through without a human."""
    from hitl_vault.policy.rules import Proposal

    policy = _template_with_agent_rules()
    assert str(policy.evaluate(Proposal("Bash", {"command": command})).decision) != "allow"


# --- hook install -----------------------------------------------------------------------------


def test_install_into_a_symlinked_settings_file_writes_through_the_link(
    agent_vault: Path, tmp_path: Path
) -> None:
    """~/.claude/settings.json linked to a dotfiles repo stays a link and the repo gets the hook."""
    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "claude-settings.json"
    real.write_text(json.dumps({"model": "opus"}), encoding="utf-8")
    project = tmp_path / "code" / "my-app"
    (project / ".claude").mkdir(parents=True)
    link = project / ".claude" / "settings.json"
    link.symlink_to(real)
    result = CliRunner().invoke(
        cli,
        ["--vault", str(agent_vault), "hook", "install", "--project", str(project)],
        obj={},
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    assert link.is_symlink()
    data = json.loads(real.read_text(encoding="utf-8"))
    assert data["model"] == "opus" and data["hooks"]["PreToolUse"]


# --- the human's side of a gate request ------------------------------------------------------


def test_approve_says_approved_when_the_gate_hands_it_out_at_once(
    agent_vault: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`hitl-vault approve` of a request a waiting gate hands to its agent within milliseconds."""
    from hitl_vault.agents.gate import RUN_BY_AGENT
    from hitl_vault.engine import Engine

    _rules(agent_vault, ALLOW_ALL_BUT_DEPLOYS)
    app = agent_vault.parent / "my-app"
    asked = _gate(agent_vault, _call("Bash", {"command": "make deploy"}, app), "--wait", "1s")
    assert _permission(asked) == "deny"
    with Vault(agent_vault) as v:
        [req] = v.list()
    shown = Engine.show_in_note

    def the_gate_wins(self: Engine, request_id: str, now: Any) -> None:
        # What the waiting gate does the moment the approval is committed (gating._outcome),
        # here just before `approve` reads the request back, as happens 1 time in 5 for real.
        shown(self, request_id, now)
        if self.journal.status_of(request_id) is Status.APPROVED:
            with Engine(agent_vault) as gate:
                started = gate.start_execution(request_id, by=req.requested_by)
                assert started is not None
                gate.finish_execution(request_id, True, result=RUN_BY_AGENT)

    monkeypatch.setattr(Engine, "show_in_note", the_gate_wins)
    result = CliRunner().invoke(
        cli, ["--vault", str(agent_vault), "approve", req.id, "--by", "alice"], obj={}
    )
    with Vault(agent_vault) as v:
        assert v.get(req.id).decided_by == "alice"  # the approval took effect
    assert result.exit_code == 0, result.output
    assert "not approved" not in result.output
