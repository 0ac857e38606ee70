"""`hook uninstall` takes out only hitl-vault's own hooks: a command whose program is a
``hitl-vault`` script or ``python -m hitl_vault`` running ``gate`` or ``posttool``, in every
form ``hook install`` writes; a user's hook that merely mentions hitl-vault stays."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hitl_vault.agents.formats import FAIL_CLOSED, INSTALLABLE
from hitl_vault.agents.install import _subcommand, posttool_line, uninstall

OURS = [
    "/opt/hv/bin/hitl-vault --vault /srv/vault gate --wait 9m" + FAIL_CLOSED,
    "/opt/hv/bin/hitl-vault --vault /srv/vault gate --wait 9m",
    "/usr/bin/python3.11 -P -m hitl_vault --vault /srv/vault gate --wait 9m" + FAIL_CLOSED,
    "/opt/hv/bin/hitl-vault gate --wait 9m --server https://h.example --token-file /t"
    + FAIL_CLOSED,
    "HITL_VAULT_TOKEN=x /opt/hv/bin/hitl-vault gate --wait 9m --server https://h.example",
    "'/opt/my dir/bin/hitl-vault' --vault=/srv/vault gate",
]
THEIRS = [
    "~/bin/audit-log.sh --tag hitl-vault gate",
    "~/bin/audit-log.sh --tag hitl-vault posttool",
    "/usr/bin/python3 -m hitl_vault_audit gate",
    "/opt/hv/bin/hitl-vault-audit --vault /srv/vault gate",
    "echo hitl-vault gate",
    "/opt/hv/bin/hitl-vault --vault /srv/vault list",
    "'unclosed hitl-vault gate",
]


@pytest.mark.parametrize("command", OURS)
def test_what_install_writes_is_recognised(command: str) -> None:
    """Each form of the gate's command, and its posttool beside it, is ours."""
    assert _subcommand(command) == "gate"
    plain = command.removesuffix(FAIL_CLOSED)
    assert _subcommand(posttool_line(plain, "claude")) == "posttool"


@pytest.mark.parametrize("command", THEIRS)
def test_a_users_own_command_is_not_ours(command: str) -> None:
    """A command that only mentions hitl-vault, or runs another program, is not ours."""
    assert _subcommand(command) not in ("gate", "posttool")


def test_uninstall_keeps_a_users_hook_that_mentions_hitl_vault(tmp_path: Path) -> None:
    """The user's audit hook tagged hitl-vault survives; the gate and posttool go."""
    where = INSTALLABLE["claude"]
    path = where.path(tmp_path)
    path.parent.mkdir()
    theirs = [{"type": "command", "command": c} for c in THEIRS[:2]]
    gate = {"type": "command", "command": OURS[0], "timeout": 600}
    after = {"type": "command", "command": posttool_line(OURS[1], "claude"), "timeout": 60}
    path.write_text(
        json.dumps(
            {
                "hooks": {
                    "PreToolUse": [{"matcher": "*", "hooks": [theirs[0], gate]}],
                    "PostToolUse": [{"matcher": "*", "hooks": [after, theirs[1]]}],
                }
            }
        )
    )
    uninstall(path, where)
    assert json.loads(path.read_text()) == {
        "hooks": {
            "PreToolUse": [{"matcher": "*", "hooks": [theirs[0]]}],
            "PostToolUse": [{"matcher": "*", "hooks": [theirs[1]]}],
        }
    }
