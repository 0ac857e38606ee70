"""The template's agent rules on a first run: what the attack tried asks or is blocked,
plain work inside the project goes through with no note and no decision from the gate."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from hitl_vault import Vault
from hitl_vault.agents.formats import FORMATS
from hitl_vault.agents.gate import run
from hitl_vault.cli.template import init_vault
from hitl_vault.model import Status


class Setup:
    """A vault made from the template beside a project, and a home holding secrets."""

    def __init__(self, root: Path) -> None:
        self.vault = root / "approvals-vault"
        init_vault(self.vault)
        self.project = root / "my-app"
        (self.project / "src").mkdir(parents=True)
        (self.project / "src" / "app.py").write_text("print('hi')\n")
        self.home = root / "home"
        (self.home / ".ssh").mkdir(parents=True)
        (self.home / ".ssh" / "id_rsa").write_text("-----BEGIN KEY-----\n")

    def call(self, tool: str, fmt: str = "claude", **tool_input: Any) -> tuple[int, str, str]:
        """One hook call from the project, answered at once (a wait of 0 s)."""
        data = {
            "session_id": "s1",
            "cwd": str(self.project),
            "hook_event_name": "PreToolUse",
            "tool_name": tool,
            "tool_input": tool_input,
        }
        return run(self.vault, FORMATS[fmt], 0.0, json.dumps(data).encode())

    def requests(self) -> list[Any]:
        with Vault(self.vault) as v:
            return v.list()


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Setup:
    found = Setup(tmp_path)
    monkeypatch.setenv("HOME", str(found.home))
    return found


def said(reply: tuple[int, str, str]) -> dict[str, Any]:
    """Claude Code's permissionDecision and reason in a reply ("none": no output at all)."""
    code, out, err = reply
    assert code == 0, err
    if out == "":
        return {"permissionDecision": "none"}
    spec: dict[str, Any] = json.loads(out)["hookSpecificOutput"]
    return spec


def test_plain_work_inside_the_project_gets_no_decision_and_no_note(setup: Setup) -> None:
    """In-project reads and edits, planning tools and `ls`: exit 0, no output, nothing kept."""
    app = setup.project / "src" / "app.py"
    calls: list[tuple[str, dict[str, Any]]] = [
        ("Read", {"file_path": str(app)}),
        ("Read", {"file_path": "src/app.py"}),
        ("Glob", {"pattern": "**/*.py"}),
        ("Grep", {"pattern": "print", "path": str(setup.project)}),
        ("Edit", {"file_path": str(app), "old_string": "hi", "new_string": "ho"}),
        ("Write", {"file_path": str(setup.project / "new.txt"), "content": "x"}),
        ("TodoWrite", {"todos": [{"content": "read the code", "status": "pending"}]}),
        ("Task", {"description": "look around", "prompt": "list the modules"}),
        ("Bash", {"command": "ls -la src"}),
    ]
    for tool, tool_input in calls:
        assert setup.call(tool, **tool_input) == (0, "", ""), (tool, tool_input)
    assert setup.requests() == []


@pytest.mark.parametrize(
    ("tool", "tool_input", "rule"),
    [
        ("Read", {"file_path": "~/.ssh/id_rsa"}, "agent-secrets"),
        ("Read", {"file_path": "/etc/shadow"}, "agent-secrets"),
        ("Read", {"file_path": "{project}" + "/.." * 40 + "/etc/shadow"}, "agent-secrets"),
        ("Read", {"file_path": "{project}/.env"}, "agent-secrets"),
        ("Read", {"file_path": "{project}/docs/../../elsewhere.txt"}, "defaults"),
        ("Glob", {"pattern": "../../**/*"}, "defaults"),
        ("Write", {"file_path": "/tmp/outside.txt", "content": "x"}, "defaults"),
        ("WebFetch", {"url": "https://example.com/", "prompt": "summarise"}, "agent-network"),
        ("WebSearch", {"query": "hitl-vault"}, "agent-network"),
        ("Bash", {"command": "cat ~/.ssh/id_rsa"}, "defaults"),
        ("Bash", {"command": "rm -rf build/"}, "defaults"),
        ("Bash", {"command": "git push origin main"}, "agent-pushes-and-deploys"),
    ],
)
def test_what_the_attack_tried_asks_a_human(
    setup: Setup, tool: str, tool_input: dict[str, Any], rule: str
) -> None:
    """Secrets (inside the project too, and through `..`), writes outside it and network
    fetches become a pending request; the agent is told to wait."""
    given = {k: v.format(project=setup.project) for k, v in tool_input.items()}
    spec = said(setup.call(tool, **given))
    assert spec["permissionDecision"] == "deny"
    assert "waiting for a human" in spec["permissionDecisionReason"]
    [request] = setup.requests()
    assert request.status is Status.PENDING and request.rule == rule, request.rule


def test_a_link_inside_the_project_that_points_out_asks(setup: Setup, tmp_path: Path) -> None:
    """A symlink in the project is judged by where it lands: outside, or on a secret."""
    outside = tmp_path / "outside.txt"
    outside.write_text("not the project's\n")
    (setup.project / "notes.txt").symlink_to(outside)
    (setup.project / "key").symlink_to(setup.home / ".ssh" / "id_rsa")
    assert said(setup.call("Read", file_path="notes.txt"))["permissionDecision"] == "deny"
    assert said(setup.call("Read", file_path="key"))["permissionDecision"] == "deny"
    assert {r.rule for r in setup.requests()} == {"defaults", "agent-secrets"}


@pytest.mark.process
def test_git_status_with_an_fsmonitor_asks_and_the_gate_runs_nothing(
    setup: Setup, tmp_path: Path
) -> None:
    """git reads .git/config, which the agent can write: `git status` is not on the list."""
    marker = tmp_path / "fsmonitor-ran"
    subprocess.run(["git", "init", "-q", str(setup.project)], check=True, timeout=30)
    config = setup.project / ".git" / "config"
    config.write_text(config.read_text() + f"[core]\n\tfsmonitor = touch {marker}\n")
    spec = said(setup.call("Bash", command="git status"))
    assert (
        spec["permissionDecision"] == "deny"
        and "waiting for a human" in spec["permissionDecisionReason"]
    )
    assert not marker.exists()
    [request] = setup.requests()
    assert request.status is Status.PENDING and request.params == {"command": "git status"}


@pytest.mark.parametrize(
    "command",
    [
        "rm -rf /",
        "rm -rf ~",
        "sudo rm -fr /*",
        "rm -r -f --no-preserve-root /",
        "mkfs.ext4 /dev/sda1",
        "dd if=/dev/zero of=/dev/sda bs=1M",
        ":(){ :|:& };:",
        "echo x > /dev/nvme0n1",
    ],
)
def test_clearly_destructive_commands_are_blocked(setup: Setup, command: str) -> None:
    """rm -rf /, mkfs, dd onto a disk, a fork bomb: denied at once, on record as rejected."""
    spec = said(setup.call("Bash", command=command))
    assert spec["permissionDecision"] == "deny"
    assert "clearly destructive" in spec["permissionDecisionReason"]
    [request] = setup.requests()
    assert request.status is Status.REJECTED and request.rule == "agent-destructive"


def test_agent_prompt_skip_answers_allow_and_the_other_formats_give_no_decision(
    setup: Setup,
) -> None:
    """A rule with agent_prompt: skip gets an explicit allow; without it each format says
    nothing it would not say without the gate (Codex {}, Cursor its bare allow)."""
    app = str(setup.project / "src" / "app.py")
    assert setup.call("Read", "gemini", file_path=app) == (0, "", "")
    assert setup.call("Read", "codex", file_path=app) == (0, "{}\n", "")
    assert setup.call("Read", "cursor", file_path=app) == (0, '{"permission": "allow"}\n', "")
    rules = setup.vault / "hitl-vault.yaml"
    text = rules.read_text().replace(
        "    path: inside-project\n    decision: allow\n    risk: low\n  - name: agent-edits",
        "    path: inside-project\n    decision: allow\n    agent_prompt: skip\n"
        "    risk: low\n  - name: agent-edits",
    )
    rules.write_text(text)
    spec = said(setup.call("Read", file_path=app))
    assert spec["permissionDecision"] == "allow"
    assert "agent-reads-in-project" in spec["permissionDecisionReason"]
    assert setup.call("Bash", command="pwd") == (0, "", "")  # other rules: no decision still
    assert setup.requests() == []


def test_path_conditions_hold_only_through_the_gate(setup: Setup) -> None:
    """`rules check` and submit know no project: inside-project never allows there."""
    with Vault(setup.vault) as v:
        app = str(setup.project / "src" / "app.py")
        assert v.evaluate("Read", {"file_path": app}).decision == "ask"
        assert v.evaluate("TodoWrite", {}).decision == "allow"


def test_a_path_condition_that_is_not_one_names_the_line_and_the_fix(tmp_path: Path) -> None:
    """`path: outside` is refused with the rules file's line and what to write instead."""
    from hitl_vault.errors import RulesError
    from hitl_vault.policy.rulesfile import parse_policy

    with pytest.raises(RulesError) as e:
        parse_policy("rules:\n  - name: x\n    path: outside\n    decision: allow\n")
    assert "line 3" in str(e.value) and "inside-project" in str(e.value)
    with pytest.raises(RulesError) as e:
        parse_policy("rules:\n  - name: x\n    agent_prompt: never\n    decision: allow\n")
    assert "keep, skip" in str(e.value)


def test_the_fast_path_answers_only_what_the_full_gate_lets_through(setup: Setup) -> None:
    """Once the full gate kept its table, the fast path answers an in-project read, and
    never a call the full gate would ask about, deny or record."""
    from hitl_vault.agents import fastgate

    app = str(setup.project / "src" / "app.py")
    calls: list[tuple[str, dict[str, Any]]] = [
        ("Read", {"file_path": app}),
        ("Glob", {"pattern": "**/*.py"}),
        ("TodoWrite", {"todos": [{"content": "x", "status": "pending"}]}),
        ("Read", {"file_path": "~/.ssh/id_rsa"}),
        ("Read", {"file_path": "/etc/shadow"}),
        ("Read", {"file_path": f"{setup.project}/../outside.txt"}),
        ("Read", {"file_path": str(setup.vault / ".hitl" / "journal.db")}),
        ("Glob", {"pattern": "../approvals-vault/.h*/*"}),
        ("WebFetch", {"url": "https://example.com/"}),
        ("Bash", {"command": "ls"}),
        ("Edit", {"file_path": app, "old_string": "a", "new_string": "b"}),
    ]
    setup.call("Read", file_path=app)  # the full gate keeps the table
    answered = []
    for tool, tool_input in calls:
        stdin = json.dumps({"session_id": "s1", "cwd": str(setup.project),
                            "hook_event_name": "PreToolUse", "tool_name": tool,
                            "tool_input": tool_input}).encode()  # fmt: skip
        fast = fastgate.answer(str(setup.vault), "claude", stdin)
        if fast is not None:
            answered.append(tool)
            assert setup.call(tool, **tool_input) == (0, "", ""), (tool, tool_input)
    assert answered == ["Read", "Glob", "TodoWrite"]


def test_the_fast_path_steps_aside_when_rules_or_trust_change(setup: Setup) -> None:
    """A changed rules file, a vault others may write, or a table others could have
    written: the fast path answers nothing, and the full gate decides."""
    from hitl_vault.agents import fastgate

    app = str(setup.project / "src" / "app.py")
    stdin = json.dumps({"session_id": "s1", "cwd": str(setup.project), "tool_name": "Read",
                        "tool_input": {"file_path": app}}).encode()  # fmt: skip
    setup.call("Read", file_path=app)
    assert fastgate.answer(str(setup.vault), "claude", stdin) == ""
    rules = setup.vault / "hitl-vault.yaml"
    rules.write_text(rules.read_text().replace("  - name: agent-reads-in-project\n",
                     "  - name: agent-reads-in-project\n    reason: changed\n"))  # fmt: skip
    assert fastgate.answer(str(setup.vault), "claude", stdin) is None
    setup.call("Read", file_path=app)
    assert fastgate.answer(str(setup.vault), "claude", stdin) == ""
    setup.vault.chmod(0o777)
    assert fastgate.answer(str(setup.vault), "claude", stdin) is None
    setup.vault.chmod(0o755)
    table = setup.vault / ".hitl" / fastgate.TABLE
    table.chmod(0o666)
    assert fastgate.answer(str(setup.vault), "claude", stdin) is None
    table.chmod(0o600)
    assert fastgate.answer(str(setup.vault), "cursor", stdin) is None  # no fast answer
    assert fastgate.answer(str(setup.vault), "codex", stdin) == "{}\n"


@pytest.mark.process
def test_an_allowed_read_imports_nothing_but_the_fast_path(setup: Setup) -> None:
    """The command itself: an in-project read loads no rules classes, journal or gate."""
    import re
    import subprocess

    from .helpers import COMMAND

    app = str(setup.project / "src" / "app.py")
    stdin = json.dumps({"session_id": "s1", "cwd": str(setup.project), "tool_name": "Read",
                        "tool_input": {"file_path": app}})  # fmt: skip
    argv = [str(COMMAND), "--vault", str(setup.vault), "gate"]
    # The first call, by the same installed code, keeps the table (the tests' own import of
    # hitl_vault may be another copy of the code, whose table the command would not trust).
    first = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=60)
    assert first.returncode == 0 and first.stdout == "", first.stderr
    env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"}
    done = subprocess.run(
        argv, input=stdin, capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert done.returncode == 0 and done.stdout == ""
    imported = set(re.findall(r"\|\s*(hitl_vault[\w.]*)$", done.stderr, re.M))
    assert "hitl_vault.agents.fastgate" in imported
    heavy = {"hitl_vault.policy.rules", "hitl_vault.agents.gate", "hitl_vault.agents.formats"}
    assert not heavy & imported


def test_date_is_not_on_the_short_list_since_date_f_prints_any_file(tmp_path: Path) -> None:
    """`date -f FILE` prints every line of FILE in its errors: the template asks for it."""
    from hitl_vault import Vault
    from hitl_vault.cli.template import init_vault

    init_vault(tmp_path / "v")
    with Vault(tmp_path / "v") as vault:
        ruling = vault.evaluate("Bash", {"command": "date -f /etc/shadow"})
        assert ruling.decision.value == "ask", ruling.rule
        assert vault.evaluate("Bash", {"command": "pwd"}).decision.value == "allow"
