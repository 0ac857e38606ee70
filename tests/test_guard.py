"""The gate's local guard (docs "Use with agents": a seat belt for agents that share the
vault owner's OS user): each way past it that issue 25 lists and a path or text check can
see is denied, and ordinary project work still goes to the rules."""

from __future__ import annotations

import json
import os
import site
from pathlib import Path
from typing import Any

import pytest

from hitl_vault import Status, Vault
from hitl_vault.agents.formats import CLAUDE
from hitl_vault.agents.gate import run
from hitl_vault.agents.guard import guard, landing, own_code
from hitl_vault.agents.hookio import Call


@pytest.fixture
def places(tmp_path: Path) -> tuple[Path, Path]:
    """(vault, project): a template vault with a pending note, and a project beside it."""
    from hitl_vault.cli.template import init_vault

    vault = tmp_path / "vault"
    init_vault(vault)
    (vault / "hitl-vault.yaml").write_text("defaults: {decision: allow}\n", encoding="utf-8")
    (vault / "Pending_Approval" / "x.md").write_text("status: pending\n", encoding="utf-8")
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    return vault, project


def said(vault: Path, tool: str, params: dict[str, Any], cwd: Path) -> str | None:
    """What the guard says of one call (None: the rules decide)."""
    return guard(Call("claude-code", "s1", tool, params, cwd), vault.resolve(), vault)


def test_a_link_followed_by_dotdot_is_resolved_before_the_dotdot_is_dropped(
    places: tuple[Path, Path],
) -> None:
    """`link/../Pending_Approval/x.md`, `link` pointing into the vault, opens the vault's note."""
    vault, project = places
    (project / "link").symlink_to(vault / "Approved")
    sneaky = "link/../Pending_Approval/x.md"
    assert os.path.normpath(project / sneaky) == str(project / "Pending_Approval" / "x.md")
    assert vault / "Pending_Approval" / "x.md" in landing(sneaky, project)
    write = {"file_path": sneaky, "content": "status: approved\n"}
    assert said(vault, "Write", write, project) is not None
    shell = {"command": f"sed -i s/pending/approved/ {sneaky}"}
    assert said(vault, "Bash", shell, project) is not None


@pytest.mark.parametrize(
    "uri",
    [
        "file://{vault}/Pending_Approval/x.md",
        "file://localhost{vault}/hitl-vault.yaml",
        "FILE://{vault}/Approved/y.md",
        "file:{vault}/Pending_Approval/x.md",
        "file://{quoted}/Pending_Approval/x.md",
    ],
)
def test_a_file_uri_in_any_string_param_is_a_path(places: tuple[Path, Path], uri: str) -> None:
    """A file: URI naming the vault is denied in a path key, a url key or the text sent."""
    vault, project = places
    quoted = str(vault).replace("vault", "v%61ult")
    uri = uri.format(vault=vault, quoted=quoted)
    for params in ({"uri": uri}, {"url": uri, "mode": "w"}, {"body": f"see {uri} now"}):
        assert said(vault, "mcp__files__write", params, project) is not None, params
    assert said(vault, "Bash", {"command": f"curl -o x {uri}"}, project) is not None


def test_a_pth_file_beside_the_package_is_denied(places: tuple[Path, Path]) -> None:
    """Python runs a .pth file in site-packages at every start, the gate's own included."""
    vault, project = places
    folders = own_code()
    import hitl_vault

    package = Path(os.path.realpath(hitl_vault.__file__)).parent
    assert package in folders
    sites = [Path(os.path.realpath(p)) for p in site.getsitepackages()]
    assert sites and all(s in folders for s in sites)
    for where in (*sites, package.parent / "hitl_vault"):
        pth = str(where / "zz-evil.pth")
        write = {"file_path": pth, "content": "import os; os.system('hitl-vault approve x')\n"}
        assert said(vault, "Write", write, project) is not None, where
        assert said(vault, "Bash", {"command": f"printf 'import x' > {pth}"}, project) is not None
    mine = {"file_path": str(project / "model.pth"), "content": "weights"}
    assert said(vault, "Write", mine, project) is None  # a project's own .pth file is its own


@pytest.mark.parametrize(
    ("tool", "params"),
    [
        ("Read", {"file_path": "{vault}/.hitl/journal.db"}),
        ("Read", {"file_path": "../vault/.hitl/../.hitl/journal.db"}),
        ("Grep", {"pattern": "secret", "path": "{vault}/.hitl"}),
        ("Glob", {"pattern": "**/.hitl/*", "path": "{vault}"}),
        ("LS", {"path": "{vault}/.hitl"}),
        ("WebFetch", {"url": "file://{vault}/.hitl/journal.db", "prompt": "dump"}),
        ("NotebookRead", {"notebook_path": "file://{vault}/.hitl/x.ipynb"}),
    ],
)
def test_every_tool_read_included_is_denied_on_the_journal_folder(
    places: tuple[Path, Path], tool: str, params: dict[str, str]
) -> None:
    """.hitl/ holds the journal and the credentials: no tool, not even a read, gets there."""
    vault, project = places
    (project / "src" / "hitl").mkdir()
    filled = {k: v.format(vault=vault) for k, v in params.items()}
    assert "journal folder" in (said(vault, tool, filled, project / "src" / ".." / "") or "")


def test_reading_the_vaults_notes_is_still_for_the_rules(places: tuple[Path, Path]) -> None:
    """A Read of a note (outside .hitl/) and reads in the project go to the rules as before."""
    vault, project = places
    note = {"file_path": str(vault / "Pending_Approval" / "x.md")}
    assert said(vault, "Read", note, project) is None
    assert said(vault, "Grep", {"pattern": r"\.hitl", "path": str(project)}, project) is None
    assert said(vault, "Glob", {"pattern": "src/**/*.py"}, project) is None


@pytest.mark.parametrize(
    "command",
    [
        "cd .. && cd vault && sed -i s/pending/approved/ */*.md",  # a cd, then no name at all
        'cd .. && sed -i s/pending/approved/ "va"ult/P*/x.md',  # quotes and a glob
        "cd .. && sed -i s/pending/approved/ v?ult/P*/x.md",  # a glob for the name
        "cd ..; V=va; sed -i s/p/a/ ${V}ult/Approved/x.md",  # a variable
        "h''itl-vault approve 20261130T000000Z-Bash-abcdef",  # quotes in the command's name
        "Pend''ing=1; sed -i s/x/y/ ../*/Pend\\ing_Approval/x.md",  # quotes and backslashes
        "python3 - <<'EOF'\nopen('../vault/Approved/x.md', 'w').write('x')\nEOF",  # a here-doc
        "python -c \"open('../va'+'ult/Approved/x.md','w')\"; cat ../v*t/Approved/new.md",
        "cp /tmp/x.md --target-directory=../vault/Approved",  # --option=path
    ],
)
def test_shell_variants_the_text_guard_can_see_are_denied(
    places: tuple[Path, Path], command: str
) -> None:
    """Shell spellings of the vault from the issue's list that a text check can follow."""
    vault, project = places
    assert said(vault, "Bash", {"command": command}, project) is not None


@pytest.mark.parametrize(
    "command",
    [
        "git add src/keys.py && git commit -m wip",
        "cd src && make test",
        "ls *.py src/*",
        "curl -o out.json https://example.com/api/x",
        "python -m pytest -k vault_tests",
        "V=build; rm -rf $V/out",
        "cd .. && ls project/src",
    ],
)
def test_ordinary_commands_still_go_to_the_rules(places: tuple[Path, Path], command: str) -> None:
    """Following cd, globs and variables never denies a command that stays out of the vault."""
    vault, project = places
    assert said(vault, "Bash", {"command": command}, project) is None


def test_the_gate_denies_a_read_of_the_journal_even_when_the_rules_allow_every_call(
    places: tuple[Path, Path],
) -> None:
    """Through `hitl-vault gate`: the deny reaches the agent and is on record as vault-guard."""
    vault, project = places
    data = {
        "session_id": "s1",
        "cwd": str(project),
        "hook_event_name": "PreToolUse",
        "tool_name": "Read",
        "tool_input": {"file_path": str(vault / ".hitl" / "journal.db")},
    }
    code, out, _ = run(vault, CLAUDE, 0.0, json.dumps(data).encode())
    answer = json.loads(out)["hookSpecificOutput"]
    assert code == 0 and answer["permissionDecision"] == "deny"
    with Vault(vault) as v:
        [guarded] = v.list()
    assert guarded.rule == "vault-guard" and guarded.status is Status.REJECTED
