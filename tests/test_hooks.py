"""`hitl-vault hook install`: the gate merged into Claude Code's settings, everything else
kept, a backup made, the hook's timeout above the gate's wait (README "Use with agents")."""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hitl_vault.cli.main import cli

pytestmark = pytest.mark.process  # nearly every test here starts a real process

EXISTING: dict[str, Any] = {
    "permissions": {"allow": ["Bash(npm test)"], "deny": ["Read(./.env)"]},
    "env": {"FOO": "bar"},
    "hooks": {
        "PreToolUse": [
            {"matcher": "Bash", "hooks": [{"type": "command", "command": "./lint-guard.sh"}]}
        ],
        "PostToolUse": [{"matcher": "Write", "hooks": [{"type": "command", "command": "fmt"}]}],
    },
}


def install(vault: Path, *args: str) -> Any:
    result = CliRunner().invoke(
        cli, ["--vault", str(vault), "hook", "install", *args], obj={}, catch_exceptions=False
    )
    return result


def ours(settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Every hitl-vault gate hook in the settings."""
    return [
        hook
        for group in settings["hooks"]["PreToolUse"]
        for hook in group["hooks"]
        if " gate" in hook["command"] and "hitl" in hook["command"]
    ]


def test_install_into_a_new_project_writes_the_hook_with_a_timeout_above_the_wait(
    vault_path: Path, tmp_path: Path
) -> None:
    """No settings yet: the file is made with one hook on every tool, 600 s > 9 min wait."""
    project = tmp_path / "project"
    project.mkdir()
    result = install(vault_path, "--project", str(project))
    assert result.exit_code == 0, result.output
    settings_file = project / ".claude" / "settings.json"
    settings = json.loads(settings_file.read_text())
    [group] = settings["hooks"]["PreToolUse"]
    assert group["matcher"] == "*"
    [hook] = group["hooks"]
    assert hook["type"] == "command" and hook["timeout"] == 600
    argv = shlex.split(hook["command"])
    assert argv[argv.index("--vault") + 1] == str(vault_path.resolve())
    assert argv[-6:] == ["gate", "--wait", "9m", "||", "exit", "2"]  # fails closed
    assert str(settings_file) in result.output and "added" in result.output
    assert list(settings_file.parent.glob("*.bak")) == []


def test_install_keeps_every_other_setting_and_backs_up_the_file(
    vault_path: Path, tmp_path: Path
) -> None:
    """Existing permissions, env and hooks stay; the old bytes are kept beside the file."""
    settings_file = tmp_path / ".claude" / "settings.json"
    settings_file.parent.mkdir()
    before = json.dumps(EXISTING, indent=4)
    settings_file.write_text(before)
    result = install(vault_path, "--project", str(tmp_path), "--wait", "15m")
    assert result.exit_code == 0, result.output
    after = json.loads(settings_file.read_text())
    assert after["permissions"] == EXISTING["permissions"] and after["env"] == {"FOO": "bar"}
    assert after["hooks"]["PostToolUse"][0] == EXISTING["hooks"]["PostToolUse"][0]
    assert after["hooks"]["PreToolUse"][0] == EXISTING["hooks"]["PreToolUse"][0]
    [hook] = ours(after)
    assert hook["timeout"] == 15 * 60 + 60
    [backup] = settings_file.parent.glob("settings.json.*.bak")
    assert backup.read_text() == before
    assert str(backup) in result.output


def test_dry_run_prints_the_hook_and_changes_nothing(vault_path: Path, tmp_path: Path) -> None:
    """--dry-run: the same report, no file written, no backup."""
    settings_file = tmp_path / ".claude" / "settings.json"
    settings_file.parent.mkdir()
    settings_file.write_text(json.dumps(EXISTING))
    result = install(vault_path, "--project", str(tmp_path), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "dry run: nothing written" in result.output and '"timeout": 600' in result.output
    assert settings_file.read_text() == json.dumps(EXISTING)
    assert sorted(p.name for p in settings_file.parent.iterdir()) == ["settings.json"]


def test_installing_again_never_adds_a_second_hook(vault_path: Path, tmp_path: Path) -> None:
    """The same install twice changes nothing; another --wait updates the one hook in place."""
    assert install(vault_path, "--project", str(tmp_path)).exit_code == 0
    settings_file = tmp_path / ".claude" / "settings.json"
    first = settings_file.read_text()
    again = install(vault_path, "--project", str(tmp_path))
    assert "already installed; nothing changed" in again.output
    assert settings_file.read_text() == first
    assert install(vault_path, "--project", str(tmp_path), "--wait", "20m").exit_code == 0
    settings = json.loads(settings_file.read_text())
    [hook] = ours(settings)
    assert hook["timeout"] == 20 * 60 + 60 and hook["command"].endswith("--wait 20m || exit 2")
    assert len(settings["hooks"]["PreToolUse"]) == 1


def test_a_settings_file_that_is_not_json_is_left_alone_with_the_fix(
    vault_path: Path, tmp_path: Path
) -> None:
    """Broken JSON: exit 1 naming the file; its bytes untouched."""
    settings_file = tmp_path / ".claude" / "settings.json"
    settings_file.parent.mkdir()
    settings_file.write_text('{"hooks": {,}')
    result = install(vault_path, "--project", str(tmp_path))
    assert result.exit_code == 1
    assert f"{settings_file}: is not valid JSON" in result.output
    assert settings_file.read_text() == '{"hooks": {,}'


def test_install_needs_a_vault(tmp_path: Path) -> None:
    """No vault at --vault: exit 1 with the command that makes one; nothing written."""
    result = install(tmp_path / "missing", "--project", str(tmp_path))
    assert result.exit_code == 1 and "hitl-vault init" in result.output
    assert not (tmp_path / ".claude").exists()


def test_the_installed_command_answers_claude_code(vault_path: Path, tmp_path: Path) -> None:
    """The command written into the settings runs (through a shell, as Claude Code runs it)."""
    assert install(vault_path, "--project", str(tmp_path)).exit_code == 0
    [hook] = ours(json.loads((tmp_path / ".claude" / "settings.json").read_text()))
    call = {
        "session_id": "s-1", "transcript_path": "/t.jsonl", "cwd": str(tmp_path),
        "permission_mode": "default", "hook_event_name": "PreToolUse", "tool_name": "Bash",
        "tool_input": {"command": "rm -rf ~"}, "tool_use_id": "toolu_1",
    }  # fmt: skip
    (vault_path / "hitl-vault.yaml").write_text(
        "rules:\n  - name: no-rm\n    action: Bash\n    decision: block\n    reason: no\n"
    )
    done = subprocess.run(
        ["/bin/sh", "-c", hook["command"]],
        input=json.dumps(call),
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["hookSpecificOutput"]["permissionDecision"] == "deny"


def test_a_hook_whose_command_cannot_start_is_never_installed(tmp_path: Path) -> None:
    """A hook that cannot start lets every tool call run: hook install refuses to write it."""
    import shlex
    import sys

    from hitl_vault.agents.install import check_starts
    from hitl_vault.errors import UsageError

    broken = shlex.join([sys.executable, "-c", "raise SystemExit('no module named x')"])
    with pytest.raises(UsageError, match=r"does not start from .*no module named x"):
        check_starts(f"{broken} --vault /v gate --wait 9m", tmp_path)
    with pytest.raises(UsageError, match="cannot start"):
        check_starts(f"{tmp_path}/nothing-here --vault /v gate", tmp_path)
    works = shlex.join([sys.executable, "-P", "-m", "hitl_vault"])
    check_starts(f"{works} --vault /v gate --wait 9m", tmp_path)  # no error
