"""Who may change a vault's rules and state: hitl_vault.policy.trust on real files."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_vault.cli.template import init_vault
from hitl_vault.errors import VaultError
from hitl_vault.policy.trust import (
    MAX_DIFF_LINES,
    TrustReport,
    UntrustedVaultError,
    check_vault,
    policy_change,
    raise_for,
)

posix_only = pytest.mark.skipif(not hasattr(os, "geteuid"), reason="POSIX permissions")
as_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="only root may chown"
)


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[Path]:
    """A fresh vault made under the default umask, as most users have."""
    old = os.umask(0o022)
    try:
        init_vault(tmp_path / "v")
    finally:
        os.umask(old)
    yield tmp_path / "v"


def _add_mode(path: Path, bits: int) -> None:
    os.chmod(path, os.stat(path).st_mode | bits)


def test_a_fresh_vault_is_trusted(vault: Path) -> None:
    """`hitl-vault init` under umask 022 gives a vault with no error and no warning."""
    (vault / ".hitl").mkdir(mode=0o700)
    assert check_vault(vault) == TrustReport()
    raise_for(check_vault(vault))


def test_missing_folders_are_fine(tmp_path: Path) -> None:
    """A vault whose folders are not created yet is not refused for it."""
    (tmp_path / "hitl-vault.yaml").write_text("rules: []\n")
    os.chmod(tmp_path / "hitl-vault.yaml", 0o644)
    assert check_vault(tmp_path).errors == ()


@posix_only
def test_world_writable_rules_are_refused(vault: Path) -> None:
    """A rules file anyone may write is refused, with the chmod that fixes it."""
    _add_mode(vault / "hitl-vault.yaml", 0o002)
    report = check_vault(vault)
    assert report.errors == (
        f"hitl-vault.yaml: anyone may write it (chmod o-w {vault / 'hitl-vault.yaml'})",
    )
    with pytest.raises(UntrustedVaultError) as caught:
        raise_for(report)
    assert isinstance(caught.value, VaultError)
    assert caught.value.problems == report.errors


@posix_only
def test_world_writable_done_folder_is_refused(vault: Path) -> None:
    """A request folder anyone may write is refused."""
    _add_mode(vault / "Done", 0o002)
    assert check_vault(vault).errors == (f"Done: anyone may write it (chmod o-w {vault / 'Done'})",)


@posix_only
def test_group_writable_rules_only_warn(vault: Path) -> None:
    """A group-writable rules file (umask 002) is a warning naming `chmod g-w`, not a refusal."""
    _add_mode(vault / "hitl-vault.yaml", 0o020)
    report = check_vault(vault)
    assert report.errors == ()
    assert report.warnings == (
        f"hitl-vault.yaml: its group may write it (chmod g-w {vault / 'hitl-vault.yaml'})",
    )
    raise_for(report)  # warnings raise nothing


@as_root
def test_rules_owned_by_another_user_are_refused(vault: Path) -> None:
    """A rules file that belongs to someone else is refused, naming its owner and chown."""
    os.chown(vault / "hitl-vault.yaml", 12345, 12345)
    (message,) = check_vault(vault).errors
    assert message.startswith("hitl-vault.yaml: belongs to uid 12345; only uid 0 (running")
    assert f"sudo chown 0 {vault / 'hitl-vault.yaml'}" in message


@as_root
def test_every_problem_is_listed(vault: Path) -> None:
    """The error lists every problem found, not only the first one."""
    os.chown(vault / "Inbox", 12345, 12345)
    _add_mode(vault / "Rejected", 0o002)
    _add_mode(vault, 0o002)
    with pytest.raises(UntrustedVaultError) as caught:
        raise_for(check_vault(vault))
    assert len(caught.value.problems) == 3
    for where in (f"{vault}: anyone", "Inbox: belongs to uid 12345", "Rejected: anyone"):
        assert where in str(caught.value)


def test_linked_state_folder_is_refused(vault: Path, tmp_path: Path) -> None:
    """A `.hitl` that is a symlink is refused: commands would chmod the link's target."""
    (tmp_path / "elsewhere").mkdir(mode=0o700)
    (vault / ".hitl").symlink_to(tmp_path / "elsewhere")
    (message,) = check_vault(vault).errors
    assert message.startswith(f".hitl: is a symlink to {tmp_path / 'elsewhere'};")
    assert f"rm {vault / '.hitl'} && mv {tmp_path / 'elsewhere'} {vault / '.hitl'}" in message


def test_linked_done_folder_is_refused(vault: Path, tmp_path: Path) -> None:
    """A `Done` that is a symlink is refused: notes would land outside the vault."""
    (vault / "Done").rename(tmp_path / "outside")
    (vault / "Done").symlink_to(tmp_path / "outside")
    (message,) = check_vault(vault).errors
    assert message.startswith(f"Done: is a symlink to {tmp_path / 'outside'};")


def test_linked_rules_file_is_accepted(vault: Path, tmp_path: Path) -> None:
    """A rules file kept in a dotfiles repo and linked into the vault is fine."""
    target = tmp_path / "dotfiles.yaml"
    (vault / "hitl-vault.yaml").rename(target)
    (vault / "hitl-vault.yaml").symlink_to(target)
    assert check_vault(vault) == TrustReport()


@posix_only
def test_linked_rules_file_with_a_writable_target_is_refused(vault: Path, tmp_path: Path) -> None:
    """The target of a linked rules file is checked too, and named in the message."""
    target = tmp_path / "dotfiles.yaml"
    (vault / "hitl-vault.yaml").rename(target)
    (vault / "hitl-vault.yaml").symlink_to(target)
    _add_mode(target, 0o002)
    assert check_vault(vault).errors == (
        f"hitl-vault.yaml -> {target}: anyone may write it (chmod o-w {target})",
    )


def test_first_load_is_said() -> None:
    """The first rules loaded are journaled as a first load, with their hash."""
    digest, summary = policy_change(None, "rules: []\nactions: {}\n")
    assert len(digest) == 64 and int(digest, 16) >= 0
    assert summary == "first load (2 lines)"


def test_one_changed_line_is_shown() -> None:
    """A reload shows exactly which line changed, old and new."""
    old = "rules:\n  - action: pay\n    approvers: [ann]\nactions: {}\n"
    new = old.replace("[ann]", "[ann, bob]")
    digest, summary = policy_change(old, new)
    assert digest == policy_change(None, new)[0] != policy_change(None, old)[0]
    assert summary == "@@ -3 +3 @@\n-    approvers: [ann]\n+    approvers: [ann, bob]"


def test_a_large_change_is_cut() -> None:
    """A big rewrite stays a compact block ending with how many lines were left out."""
    old = "".join(f"key{i}: {i}\n" for i in range(100))
    new = "".join(f"key{i}: {i * 2} " + "x" * 300 + "\n" for i in range(100))
    _, summary = policy_change(old, new)
    lines = summary.splitlines()
    shown = [line for line in lines if line[:1] in "+-"]
    assert len(shown) <= MAX_DIFF_LINES and len(summary) <= 1600
    assert all(len(line) <= 120 for line in lines)
    assert lines[-1] == f"…and {200 - len(shown)} more changed lines"


def test_unchanged_rules_say_so() -> None:
    """Saving the rules without changing them journals no difference."""
    assert policy_change("a: 1\n", "a: 1\n")[1] == "no change"
