"""Review of the gate's path checks and the hook's command line: each test pins a problem
found, kept once it was fixed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hitl_vault.agents.guard import guard
from hitl_vault.agents.hookio import Call

from .test_gate import hook_input


def _guard(vault: Path, tool: str, params: dict[str, Any], cwd: Path) -> str | None:
    """What the vault guard says of one call (None: it lets the rules decide)."""
    return guard(Call("claude-code", "s1", tool, params, cwd), vault.resolve(), vault)


def test_an_edit_whose_path_holds_a_newline_still_cannot_touch_a_pending_note(
    vault_path: Path, tmp_path: Path
) -> None:
    """A file_path with a newline component that '..' undoes lands in the vault: denied."""
    note = next(p for p in (vault_path / "Pending_Approval").glob("*.md"))
    sneaky = str(note.parent / "\n" / ".." / note.name)
    assert os.path.normpath(sneaky) == str(note)  # what a Node agent opens
    params = {"file_path": sneaky, "old_string": "status: pending", "new_string": "x"}
    assert _guard(vault_path, "Edit", params, tmp_path) is not None


def test_a_write_whose_path_is_padded_past_4096_characters_is_still_denied(
    vault_path: Path, tmp_path: Path
) -> None:
    """A file_path padded with ./ past 4,096 characters still names the vault: denied."""
    padded = str(vault_path) + "/" + "./" * 2100 + "hitl-vault.yaml"
    assert os.path.normpath(padded) == str(vault_path / "hitl-vault.yaml")
    params = {"file_path": padded, "content": "rules: []\n"}
    assert _guard(vault_path, "Write", params, tmp_path) is not None


@pytest.mark.process
def test_a_hook_installed_from_a_user_site_install_blocks_instead_of_failing_open(
    vault_path: Path, tmp_path: Path
) -> None:
    """`python -m hitl_vault hook install` from a --user install writes a hook that runs."""
    base = getattr(sys, "_base_executable", sys.executable)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    user_site = tmp_path / "userbase" / "lib" / version / "site-packages"
    user_site.mkdir(parents=True)
    # What `pip install --user hitl-vault` gives: the package importable from the user site.
    here = Path(__file__).resolve().parent.parent
    venv_site = next(p for p in sys.path if p.endswith("site-packages"))
    (user_site / "hitl.pth").write_text(f"{here}\n{venv_site}\n")
    env = {**os.environ, "PYTHONUSERBASE": str(tmp_path / "userbase")}
    env.pop("PYTHONPATH", None)
    project = tmp_path / "project"
    project.mkdir()
    install = [base, "-m", "hitl_vault", "--vault", str(vault_path), "hook", "install",
               "--project", str(project), "--wait", "1s"]  # fmt: skip
    done = subprocess.run(install, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    command = settings["hooks"]["PreToolUse"][0]["hooks"][0]["command"]
    stdin = hook_input("Bash", {"command": "rm -rf build"}, cwd=project)
    hook = subprocess.run(
        ["sh", "-c", command], input=stdin, env=env, capture_output=True, timeout=60,
        cwd=project,
    )  # fmt: skip
    # Exit 1 is a non-blocking error for Claude Code: the tool would run ungated.
    assert hook.returncode != 1, hook.stderr


def test_the_quickstarts_vault_name_does_not_deny_ordinary_project_commands(
    tmp_path: Path,
) -> None:
    """The vault name the docs' Claude Code quickstart uses lets `git add src/<name>/` run."""
    page = (Path(__file__).resolve().parent.parent / "docs" / "agents.md").read_text()
    section = page.split("## Claude Code in two commands", 1)[1]
    name = section.split("hitl-vault init ", 1)[1].split()[0]
    vault = tmp_path / name
    vault.mkdir()
    project = tmp_path / "my-app"
    project.mkdir()
    assert name != "vault"  # a name of its own, as the README advises
    for ordinary in ("git add src/vault/keys.py", "curl https://example.com/vault"):
        assert _guard(vault, "Bash", {"command": ordinary}, project) is None, ordinary
    named = {"command": f"cd .. && sed -i s/x/y/ {name}/Pending/x.md"}
    assert _guard(vault, "Bash", named, project) is not None
