"""The "always" allows at the local gate: kept with the parsed rules, so an allowed call opens
no journal; the cached copy follows each allow added or revoked, and an allow that ended
stops matching though the copy still holds it."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import Vault
from hitl_vault.agents.gate import in_force
from hitl_vault.policy.always import consult
from hitl_vault.policy.rules import Decision, Proposal
from hitl_vault.times import utcnow

from .test_gate import RULES, SESSION, decision, gate, hook_input

WAITING = "waiting for a human"


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    from hitl_vault.cli.template import init_vault

    path = tmp_path / "vault"
    init_vault(path)
    (path / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    return path


def bash(
    vault: Path,
    command: str,
    description: str = "",
    *env: str,
    cwd: Path | None = None,
    **more: object,
) -> dict[str, object]:
    """The gate's answer to a Bash call (no wait for a human), made in ``cwd`` (the vault's
    parent unless given), with ``more`` input keys."""
    params = {"command": command, "description": description or f"run {command}", **more}
    call = hook_input("Bash", params, cwd=cwd or vault.parent)
    extra = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1"} if env else None
    done = gate(vault, call, "--wait", "10ms", env=extra)
    spec = decision(done)
    spec["imported"] = {
        m.group(1).split(".")[0]
        for m in re.finditer(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)$", done.stderr, re.M)
    }
    return spec


@pytest.mark.process
def test_an_always_allow_lets_the_same_command_through_the_gate(vault_path: Path) -> None:
    """Asked once and approved always: the same command (another description) passes with
    no decision (the agent's own checks apply) and no journal opened; another command
    still asks; revoked, it asks again."""
    asked = bash(vault_path, "git push origin main")
    assert asked["permissionDecision"] == "deny" and WAITING in str(
        asked["permissionDecisionReason"]
    )
    with Vault(vault_path) as v:
        [request] = v.list()
        allow = v.always(request.id, "alice")
    assert allow is not None
    bash(vault_path, "git push origin main", "Push again")  # reads the allows afresh
    again = bash(vault_path, "git push origin main", "Push once more", "profile")
    assert again["permissionDecision"] == "none"
    imported = again["imported"]
    assert isinstance(imported, set) and "sqlite3" not in imported and "hitl_vault" in imported
    other = bash(vault_path, "git push --force origin main")
    assert other["permissionDecision"] == "deny" and WAITING in str(
        other["permissionDecisionReason"]
    )
    with Vault(vault_path) as v:
        v.revoke_allow(allow.name)
    after = bash(vault_path, "git push origin main", "Push after the revoke")
    assert after["permissionDecision"] == "deny" and WAITING in str(
        after["permissionDecisionReason"]
    )


def test_the_cached_allows_stop_matching_when_they_end(vault_path: Path) -> None:
    """The gate's copy holds the allow, with its end: past it the call is asked again."""
    with Vault(vault_path) as v:
        params = {"command": "git push", "description": "push"}
        request = v.engine.submit(
            "Bash", params, requested_by=f"claude-code:{SESSION}", carried_by_requester=True
        )
        allow = v.always(request.id, "alice", lasting="1h")
    assert allow is not None
    policy, allows = in_force(vault_path.resolve())
    assert in_force(vault_path.resolve())[1] == allows == (allow,)  # the copy, read back
    proposal = Proposal("Bash", {"command": "git push", "description": "again"})
    ruling = policy.evaluate(proposal)
    assert consult(policy, ruling, allows, proposal, utcnow()).decision is Decision.ALLOW
    ended = utcnow() + timedelta(hours=1, seconds=1)
    assert consult(policy, ruling, allows, proposal, ended).decision is Decision.ASK


@pytest.mark.process
def test_an_always_allow_holds_in_its_folder_with_its_input_only(
    vault_path: Path, tmp_path: Path
) -> None:
    """An allow made for `make` in one project covers it there alone: from another folder,
    or with the sandbox turned off, a timeout or in the background, the call asks."""
    here, there = tmp_path / "projA", tmp_path / "projB"
    here.mkdir()
    there.mkdir()
    assert WAITING in str(bash(vault_path, "make", cwd=here)["permissionDecisionReason"])
    with Vault(vault_path) as v:
        [request] = v.list()
        allow = v.always(request.id, "alice", session=True)
    assert allow is not None and allow.cwd == str(here)
    assert bash(vault_path, "make", "build it", cwd=here)["permissionDecision"] == "none"
    for asked in (
        bash(vault_path, "make", cwd=there, dangerouslyDisableSandbox=True),
        bash(vault_path, "make", cwd=there),
        bash(vault_path, "make", cwd=here, dangerouslyDisableSandbox=True),
        bash(vault_path, "make", cwd=here, run_in_background=True),
        bash(vault_path, "make", cwd=here, timeout=600000),
    ):
        assert asked["permissionDecision"] == "deny", asked
        assert WAITING in str(asked["permissionDecisionReason"])
