"""`hitl-vault hook install --agent claude|cursor|gemini|codex` and `hook uninstall`: each
agent's own settings file, events, matcher, timeout and fail-closed setting; the diff of a
dry run; the refusals that keep a gate from being installed where it would not work
(docs/agents.md "Every agent in one command")."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hitl_vault.agents.formats import FAIL_CLOSED, INSTALLABLE, HookSettings
from hitl_vault.agents.install import install, posttool_line, server_command_line, uninstall
from hitl_vault.cli.main import cli
from hitl_vault.errors import VaultError

WAIT = 9 * 60.0
COMMAND = "/opt/hitl-vault/bin/hitl-vault --vault /srv/vault gate --wait 9m"
OTHER = "/opt/hitl-vault/bin/hitl-vault --vault /srv/other-vault gate --wait 9m"

# What each agent's settings file is, and the events the gate goes in.
FILES = {
    "claude": (".claude/settings.json", ["PreToolUse"]),
    "cursor": (
        ".cursor/hooks.json",
        ["preToolUse", "beforeShellExecution", "beforeMCPExecution", "beforeReadFile"],
    ),
    "gemini": (".gemini/settings.json", ["BeforeTool"]),
    "codex": (".codex/hooks.json", ["PreToolUse"]),
}
# Settings the user had before: every key and hook of theirs must survive both commands.
THEIRS: dict[str, Any] = {
    "model": "opus",
    "hooks": {
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "./lint"}]}],
        "PostToolUse": [{"matcher": "Write", "hooks": [{"type": "command", "command": "fmt"}]}],
    },
}
CURSOR_THEIRS: dict[str, Any] = {
    "version": 1,
    "hooks": {"beforeShellExecution": [{"command": "./audit.sh"}], "stop": [{"command": "x"}]},
}


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), obj={}, catch_exceptions=False)


def gate_hooks(settings: dict[str, Any], event: str) -> list[dict[str, Any]]:
    """Every hitl-vault gate entry under hooks.<event>, grouped (Claude) or flat (Cursor)."""
    found = []
    for item in settings["hooks"].get(event, []):
        for hook in item.get("hooks", [item]):
            if "hitl" in hook.get("command", "") and " gate" in hook["command"]:
                found.append(hook)
    return found


@pytest.mark.parametrize("agent", list(FILES))
def test_each_agent_gets_its_own_file_events_and_a_timeout_above_the_wait(
    agent: str, tmp_path: Path
) -> None:
    """Claude Code, Cursor, Gemini CLI, Codex: the gate in every event the agent gates tools
    with, timed out after the gate's wait (Gemini in ms), Cursor with failClosed."""
    where = INSTALLABLE[agent]
    path = where.path(tmp_path)
    name, events = FILES[agent]
    assert path == tmp_path / name and list(where.events) == events
    report = install(path, COMMAND, 30 * 60, where)
    settings = json.loads(path.read_text())
    for event in events:
        [hook] = gate_hooks(settings, event)
        assert hook["command"] == COMMAND + ("" if agent == "cursor" else FAIL_CLOSED)
        timeout = hook["timeout"] / 1000 if agent == "gemini" else hook["timeout"]
        assert timeout == 31 * 60  # a minute above the 30-minute wait
        assert hook.get("failClosed") is (True if agent == "cursor" else None)
    if agent == "cursor":
        assert settings["version"] == 1
        assert all("matcher" not in e for e in settings["hooks"]["preToolUse"])
    else:
        [group] = settings["hooks"][events[0]]
        assert where.wide_enough(group["matcher"])
    assert str(path) in report and "added" in report


@pytest.mark.parametrize("agent", list(FILES))
def test_uninstall_removes_exactly_what_install_wrote(agent: str, tmp_path: Path) -> None:
    """Install then uninstall: the user's settings are as they were, to the key."""
    where = INSTALLABLE[agent]
    path = where.path(tmp_path)
    path.parent.mkdir()
    theirs = CURSOR_THEIRS if agent == "cursor" else THEIRS
    path.write_text(json.dumps(theirs))
    install(path, COMMAND, WAIT, where)
    assert json.loads(path.read_text()) != theirs
    report = uninstall(path, where)
    assert json.loads(path.read_text()) == theirs
    assert "removed" in report and "/srv/vault" in report
    again = uninstall(path, where)
    assert "nothing changed" in again and json.loads(path.read_text()) == theirs
    assert len(list(path.parent.glob("*.bak"))) == 2  # one before each change


def test_uninstall_of_a_file_install_made_leaves_no_hooks(tmp_path: Path) -> None:
    """A settings file the install created is left with no hooks key once uninstalled."""
    where = INSTALLABLE["claude"]
    path = where.path(tmp_path)
    install(path, COMMAND, WAIT, where)
    uninstall(path, where)
    assert json.loads(path.read_text()) == {}


def test_dry_runs_print_the_unified_diff_and_write_nothing(tmp_path: Path) -> None:
    """--dry-run on install and on uninstall: a unified diff of the settings file, no write."""
    where = INSTALLABLE["claude"]
    path = where.path(tmp_path)
    path.parent.mkdir()
    path.write_text(json.dumps(THEIRS, indent=2) + "\n")
    before = path.read_text()
    shown = install(path, COMMAND, WAIT, where, dry_run=True)
    assert f"--- {path}\n+++ {path}\n@@ " in shown
    assert (
        f'+            "command": "{COMMAND}{FAIL_CLOSED}",' in shown
        and "dry run: nothing written" in shown
    )
    assert path.read_text() == before and list(path.parent.iterdir()) == [path]
    install(path, COMMAND, WAIT, where)
    after = path.read_text()
    shown = uninstall(path, where, dry_run=True)
    assert (
        f'-            "command": "{COMMAND}{FAIL_CLOSED}",' in shown
        and "dry run: nothing written" in shown
    )
    assert path.read_text() == after
    new = tmp_path / "new"
    assert "--- /dev/null" in install(where.path(new), COMMAND, WAIT, where, dry_run=True)
    assert not new.exists()


def test_disable_all_hooks_is_refused_with_the_fix(tmp_path: Path) -> None:
    """ "disableAllHooks": true would keep the gate from ever running: refused, file untouched."""
    where = INSTALLABLE["claude"]
    path = where.path(tmp_path)
    path.parent.mkdir()
    path.write_text('{"disableAllHooks": true}')
    with pytest.raises(VaultError) as refused:
        install(path, COMMAND, WAIT, where)
    assert str(path) in str(refused.value) and "disableAllHooks" in str(refused.value)
    assert "remove that line" in str(refused.value)
    assert path.read_text() == '{"disableAllHooks": true}'


def test_disable_all_hooks_in_the_local_settings_is_refused_too(tmp_path: Path) -> None:
    """settings.local.json beside the project's settings turns its hooks off as well."""
    where = INSTALLABLE["claude"]
    path = where.path(tmp_path)
    path.parent.mkdir()
    local = path.with_name("settings.local.json")
    local.write_text('{"disableAllHooks": true}')
    with pytest.raises(VaultError, match=f'{local}: "disableAllHooks": true .*{path} too'):
        install(path, COMMAND, WAIT, where)
    assert not path.exists()


@pytest.mark.parametrize("agent", ["claude", "cursor"])
def test_another_vaults_gate_is_taken_over_only_with_replace(agent: str, tmp_path: Path) -> None:
    """A gate asking another vault: refused, naming both; --replace makes it ask this one."""
    where = INSTALLABLE[agent]
    path = where.path(tmp_path)
    install(path, OTHER, WAIT, where)
    before = path.read_text()
    with pytest.raises(VaultError) as refused:
        install(path, COMMAND, WAIT, where)
    said = str(refused.value)
    assert str(path) in said and "/srv/other-vault" in said and "--replace" in said
    assert path.read_text() == before
    install(path, COMMAND, WAIT, where, replace=True)
    settings = json.loads(path.read_text())
    for event in where.events:
        [hook] = gate_hooks(settings, event)
        assert shlex.split(hook["command"])[2] == "/srv/vault"


def test_a_narrow_matcher_is_kept_and_refused_unless_replace(tmp_path: Path) -> None:
    """The user's Bash-only matcher would let file tools skip the guard: install says so and
    leaves it; --replace widens it to every tool."""
    where = INSTALLABLE["claude"]
    path = where.path(tmp_path)
    install(path, COMMAND, WAIT, where)
    narrowed = json.loads(path.read_text())
    narrowed["hooks"]["PreToolUse"][0]["matcher"] = "Bash"
    path.write_text(json.dumps(narrowed))
    with pytest.raises(VaultError) as refused:
        install(path, COMMAND, 20 * 60, where)
    assert "'Bash' is narrower than the guard needs" in str(refused.value)
    assert json.loads(path.read_text()) == narrowed
    install(path, COMMAND, 20 * 60, where, replace=True)
    [group] = json.loads(path.read_text())["hooks"]["PreToolUse"]
    assert group["matcher"] == "*" and group["hooks"][0]["timeout"] == 21 * 60


def test_widening_leaves_the_users_hooks_in_a_narrow_group_as_they_were(tmp_path: Path) -> None:
    """The gate in the user's Bash group beside their lint hook: --replace moves the gate to
    a group of its own on every tool; the lint hook still runs on Bash only."""
    where = INSTALLABLE["claude"]
    path = where.path(tmp_path)
    path.parent.mkdir()
    lint = {"type": "command", "command": "./lint"}
    gate = {"type": "command", "command": COMMAND + FAIL_CLOSED, "timeout": 600}
    path.write_text(
        json.dumps({"hooks": {"PreToolUse": [{"matcher": "Bash", "hooks": [lint, gate]}]}})
    )
    with pytest.raises(VaultError, match="narrower than the guard needs"):
        install(path, COMMAND, WAIT, where)
    install(path, COMMAND, WAIT, where, replace=True)
    groups = json.loads(path.read_text())["hooks"]["PreToolUse"]
    assert groups == [{"matcher": "Bash", "hooks": [lint]}, {"matcher": "*", "hooks": [gate]}]


def test_matchers_wide_enough_for_the_guard() -> None:
    """Every tool, every MCP tool and tools not yet invented must reach the gate."""
    claude, gemini = INSTALLABLE["claude"], INSTALLABLE["gemini"]
    for wide in (None, "", "*", ".*"):
        assert claude.wide_enough(wide) and gemini.wide_enough(wide)
    for narrow in ("Bash", "Bash|Write|Edit", "mcp__.*", "Bash|Read|Write|Edit|WebFetch", "(", 3):
        assert not claude.wide_enough(narrow), narrow
    assert not gemini.wide_enough("run_shell_command|write_file")


def test_a_project_that_does_not_exist_is_refused(vault_path: Path, tmp_path: Path) -> None:
    """--project naming no folder: exit 1 naming it, nothing created (a typo would otherwise
    install the gate where no agent looks)."""
    missing = tmp_path / "my-ap"
    for command in ("install", "uninstall"):
        done = run("--vault", str(vault_path), "hook", command, "--project", str(missing))
        assert done.exit_code == 1
        assert f"--project {missing}: no such folder" in done.output
    assert not missing.exists()


@pytest.mark.process
def test_a_vault_inside_the_project_is_installed_with_a_warning(tmp_path: Path) -> None:
    """The vault under the project's folder: installed, and a warning says to move it."""
    from hitl_vault.cli.template import init_vault

    project = tmp_path / "app"
    project.mkdir()
    init_vault(project / "approvals")
    done = CliRunner().invoke(
        cli,
        ["--vault", str(project / "approvals"), "hook", "install", "--agent", "cursor",
         "--project", str(project)],
        obj={},
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    assert "warning: the vault" in done.stderr and "move the vault out" in done.stderr
    assert (project / ".cursor" / "hooks.json").exists()


@pytest.mark.process
def test_the_server_command_installs_for_every_agent(tmp_path: Path) -> None:
    """--server URL --token-file PATH: the same hook command in each agent's settings."""
    token = tmp_path / "agent.token"
    token.write_text("hv_x\n")
    token.chmod(0o600)
    done = run("hook", "install", "--agent", "gemini", "--project", str(tmp_path),
               "--server", "https://vault.example.com", "--token-file", str(token))  # fmt: skip
    assert done.exit_code == 0, done.output
    command = server_command_line("https://vault.example.com", str(token), "9m")
    for agent, where in INSTALLABLE.items():
        if agent != "gemini":
            install(where.path(tmp_path), command, WAIT, where)
        settings = json.loads(where.path(tmp_path).read_text())
        for event in where.events:
            [hook] = gate_hooks(settings, event)
            words = shlex.split(hook["command"])
            assert words[words.index("--server") + 1] == "https://vault.example.com"
            assert words[words.index("--token-file") + 1] == str(token)


@pytest.mark.process
@pytest.mark.parametrize("agent", ["claude", "gemini", "codex"])
def test_a_moved_install_blocks_the_call_instead_of_letting_it_run(
    agent: str, tmp_path: Path
) -> None:
    """The hook's program gone (exit 127 in the agent's shell): exit 2, which these agents
    treat as "blocked", where any other code would let the tool run."""
    where = INSTALLABLE[agent]
    moved = f"{tmp_path}/old-venv/bin/hitl-vault --vault /srv/vault gate --wait 9m"
    [hook] = gate_hooks(json.loads(_installed(where, moved, tmp_path)), where.events[0])
    done = subprocess.run(
        ["/bin/sh", "-c", hook["command"]],
        input=b'{"tool_name": "Bash"}',
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2 and b"old-venv/bin/hitl-vault" in done.stderr


def _installed(where: HookSettings, command: str, folder: Path) -> str:
    """The settings file's text after installing ``command``."""
    install(where.path(folder), command, WAIT, where)
    return where.path(folder).read_text()


def outcome_hooks(settings: dict[str, Any], event: str) -> list[dict[str, Any]]:
    """Every `hitl-vault posttool` entry under hooks.<event>."""
    found = []
    for item in settings["hooks"].get(event, []):
        for hook in item.get("hooks", [item]):
            if "hitl" in hook.get("command", "") and " posttool" in hook["command"]:
                found.append(hook)
    return found


@pytest.mark.parametrize(
    ("agent", "events"),
    [
        ("claude", ["PostToolUse", "PostToolUseFailure"]),
        ("cursor", ["postToolUse", "postToolUseFailure"]),
        ("gemini", ["AfterTool"]),
        ("codex", ["PostToolUse"]),
    ],
)
def test_the_outcome_hook_goes_after_each_tool_and_comes_out_again(
    agent: str, events: list[str], tmp_path: Path
) -> None:
    """`posttool --format <agent>` with the gate's vault, in each event after a tool runs,
    never failing closed (it cannot block); uninstall takes it out with the gate."""
    where = INSTALLABLE[agent]
    path = where.path(tmp_path)
    path.parent.mkdir()
    theirs = CURSOR_THEIRS if agent == "cursor" else THEIRS
    path.write_text(json.dumps(theirs))
    outcome = posttool_line(COMMAND, agent)
    assert outcome == f"/opt/hitl-vault/bin/hitl-vault --vault /srv/vault posttool --format {agent}"
    report = install(path, COMMAND, WAIT, where, outcome=outcome)
    assert list(where.after) == events and "outcome hook added" in report
    settings = json.loads(path.read_text())
    for event in events:
        [hook] = outcome_hooks(settings, event)
        assert hook["command"] == outcome and "failClosed" not in hook
    assert "already installed" in install(path, COMMAND, WAIT, where, outcome=outcome)
    uninstall(path, where)
    assert json.loads(path.read_text()) == theirs


def test_the_outcome_hook_asks_the_same_server(tmp_path: Path) -> None:
    """--server URL --token-file PATH: the outcome hook reports to the same service."""
    gate = "/bin/hitl-vault gate --wait 9m --server https://v.example --token-file /t/tok"
    assert posttool_line(gate, "codex") == (
        "/bin/hitl-vault posttool --format codex --server https://v.example --token-file /t/tok"
    )


@pytest.mark.process
def test_the_installed_outcome_hook_runs_and_never_blocks(vault_path: Path, tmp_path: Path) -> None:
    """`hook install` writes this hitl-vault's posttool beside the gate; run as Claude Code
    runs it after a call the gate did not hand out, it records nothing and exits 0."""
    project = tmp_path / "app"
    project.mkdir()
    done = run("--vault", str(vault_path), "hook", "install", "--project", str(project))
    assert done.exit_code == 0, done.output
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    [hook] = outcome_hooks(settings, "PostToolUse")
    assert outcome_hooks(settings, "PostToolUseFailure") == [hook]
    call = {"session_id": "s", "cwd": str(project), "hook_event_name": "PostToolUse",
            "tool_name": "Bash", "tool_input": {"command": "ls"},
            "tool_response": {"stdout": "a\n"}}  # fmt: skip
    ran = subprocess.run(
        ["/bin/sh", "-c", hook["command"]],
        input=json.dumps(call).encode(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0 and ran.stderr == b"", ran.stderr
