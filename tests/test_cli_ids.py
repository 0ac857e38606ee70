"""Ids on the command line: a unique prefix stands for the whole id wherever an id is taken,
an ambiguous one is a usage error listing the candidates, and the shell completes ids of
the vault named by --vault, $HITL_VAULT or ./vault (pending ones first for approve and
reject), through click's completion protocol, in process and as the installed command."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hitl_vault import Status, Vault
from hitl_vault.cli.main import cli

from .helpers import COMMAND

DAY = "20260101T000000Z"
# Pending payments, oldest first; the refund is decided by the rules at once (newest).
PAYMENTS = [f"{DAY}-payment-{token}" for token in ("a11111", "a22222", "b33333", "c44444")]
ALLOWED = f"{DAY}-read_file-d55555"


@pytest.fixture
def ids(vault_path: Path) -> list[str]:
    """Four pending payments with known ids, and one request the rules allowed at once."""
    tokens: Iterator[str] = iter([*PAYMENTS, ALLOWED])
    with Vault(vault_path, ids=lambda action, now: next(tokens)) as vault:
        for amount in (1500, 1600, 1700, 1800):
            vault.submit("payment", {"amount": amount})
        assert vault.submit("read_file", {"path": "a"}).status is Status.APPROVED
    return PAYMENTS


def invoke(vault: Path, *args: str) -> Result:
    result = CliRunner().invoke(
        cli, ["--vault", str(vault), *args], prog_name="hitl-vault", catch_exceptions=False
    )
    assert "Traceback" not in result.output + result.stderr
    return result


def status(vault: Path, request_id: str) -> Status:
    with Vault(vault) as v:
        return v.get(request_id).status


def test_a_unique_prefix_stands_for_the_id_in_every_command(
    vault_path: Path, ids: list[str]
) -> None:
    """show, approve, reject, cancel and retry take a unique prefix of an id."""
    shown = invoke(vault_path, "show", f"{DAY}-payment-b", "--json")
    assert shown.exit_code == 0, shown.stderr
    assert json.loads(shown.stdout)["id"] == ids[2]
    result = invoke(vault_path, "approve", f"{DAY}-payment-a1", "--by", "alice")
    assert (result.exit_code, result.stdout) == (0, f"{ids[0]} approved\n")
    result = invoke(vault_path, "reject", f"{DAY}-payment-a2", "--reason", "no")
    assert (result.exit_code, result.stdout) == (0, f"{ids[1]} rejected\n")
    result = invoke(vault_path, "cancel", f"{DAY}-payment-b")
    assert (result.exit_code, result.stdout) == (0, f"{ids[2]} cancelled\n")
    assert [status(vault_path, i) for i in ids] == [
        Status.APPROVED,
        Status.REJECTED,
        Status.CANCELLED,
        Status.PENDING,
    ]
    refused = invoke(vault_path, "retry", f"{DAY}-payment-c")  # pending: not retryable
    assert refused.exit_code == 1 and ids[3] in refused.stderr


def test_several_prefixes_to_approve_are_each_resolved(vault_path: Path, ids: list[str]) -> None:
    """`approve P1 P2` decides both requests the prefixes name."""
    result = invoke(vault_path, "approve", f"{DAY}-payment-a1", f"{DAY}-payment-c")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [f"{ids[0]} approved", f"{ids[3]} approved"]


@pytest.mark.parametrize("command", ["show", "approve", "reject", "cancel", "retry"])
def test_an_ambiguous_prefix_is_a_usage_error_listing_the_candidates(
    vault_path: Path, ids: list[str], command: str
) -> None:
    """A prefix of two ids exits 2 naming both and the fix; nothing is decided."""
    result = invoke(vault_path, command, f"{DAY}-payment-a")
    assert result.exit_code == 2, (result.stdout, result.stderr)
    assert f'"{DAY}-payment-a" matches 2 requests' in result.stderr
    assert ids[0] in result.stderr and ids[1] in result.stderr and ids[2] not in result.stderr
    assert "give more of the id" in result.stderr
    assert [status(vault_path, i) for i in ids] == [Status.PENDING] * 4


def test_a_prefix_of_many_lists_a_few_and_counts_the_rest(vault_path: Path, ids: list[str]) -> None:
    """A prefix of every request names some of them and says how many more match."""
    many = [f"{DAY}-x-{n:06x}" for n in range(12)]
    tokens = iter(many)
    with Vault(vault_path, ids=lambda action, now: next(tokens)) as vault:
        for _ in many:
            vault.submit("x")
    result = invoke(vault_path, "show", DAY)
    assert result.exit_code == 2
    assert f'"{DAY}" matches 17 requests' in result.stderr
    error = result.stderr.splitlines()[-1]  # after click's usage line, as for any usage error
    assert error.startswith(f'Error: ID "{DAY}" matches 17') and error.endswith(
        ", and 7 more (give more of the id)"
    )
    assert error.count(DAY) == 11  # the prefix, and 10 of the ids


@pytest.mark.parametrize("command", ["show", "approve", "reject", "cancel", "retry"])
def test_an_unknown_prefix_says_not_found(vault_path: Path, ids: list[str], command: str) -> None:
    """A prefix of no id is the one-line not-found error, exit 1, as an unknown id is."""
    result = invoke(vault_path, command, f"{DAY}-payment-e")
    assert result.exit_code == 1
    assert result.stderr.startswith(f"Error: request {DAY}-payment-e: not found")
    assert invoke(vault_path, command, "").exit_code == 1  # "" is no prefix of anything


@pytest.mark.parametrize("command", ["show", "approve", "reject", "cancel"])
def test_a_whole_id_no_request_has_is_not_a_prefix(vault_path: Path, command: str) -> None:
    """A well-formed id that is not in the vault is not found, even when a longer id (its
    action holding a dash) starts with it; nothing is decided."""
    longer = f"{DAY}-pay-abcdef-123456"
    with Vault(vault_path, ids=lambda action, now: longer) as vault:
        vault.submit("pay-abcdef", {"amount": 1500})
    result = invoke(vault_path, command, f"{DAY}-pay-abcdef")
    assert result.exit_code == 1, (result.stdout, result.stderr)
    assert result.stderr.startswith(f"Error: request {DAY}-pay-abcdef: not found")
    assert status(vault_path, longer) is Status.PENDING
    approved = invoke(vault_path, "approve", f"{DAY}-pay-abcdef-1")  # a prefix still works
    assert (approved.exit_code, approved.stdout) == (0, f"{longer} approved\n")


@pytest.mark.process
def test_the_installed_command_takes_a_prefix(vault_path: Path, ids: list[str]) -> None:
    """`hitl-vault show <prefix>` as a process: the request, or exit 2 when ambiguous."""
    argv = [str(COMMAND), "--vault", str(vault_path), "show"]
    run = subprocess.run([*argv, f"{DAY}-payment-c"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and f"id:           {ids[3]}" in run.stdout
    run = subprocess.run([*argv, f"{DAY}-pay"], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "matches 4 requests" in run.stderr
    assert "Traceback" not in run.stderr


# --- completion -------------------------------------------------------------------------


def complete(words: str, env: dict[str, str] | None = None, shell: str = "bash") -> list[str]:
    """What click's completion answers for the command line ``words`` (cursor at its end)."""
    result = CliRunner().invoke(
        cli,
        [],
        prog_name="hitl-vault",
        env={
            "_HITL_VAULT_COMPLETE": f"{shell}_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
            **(env or {}),
        },
        catch_exceptions=False,
    )
    assert result.exit_code == 0 and not result.stderr, result.stderr
    return [line for line in result.stdout.splitlines() if line]  # bash's answer may be ""


def test_completion_offers_the_ids_newest_first(vault_path: Path, ids: list[str]) -> None:
    """`show <TAB>` offers every id of the --vault vault, newest first; a prefix narrows it."""
    words = f"hitl-vault --vault {vault_path} show "
    assert complete(words) == [f"plain,{i}" for i in [ALLOWED, *reversed(ids)]]
    assert complete(words + f"{DAY}-payment-a") == [f"plain,{ids[1]}", f"plain,{ids[0]}"]
    assert complete(words + "nothing") == []


def test_approve_and_reject_offer_pending_ids_first(vault_path: Path, ids: list[str]) -> None:
    """For approve and reject the pending ids come first, then the rest; given ones are left out."""
    invoke(vault_path, "approve", ids[3])
    for command in ("approve", "reject"):
        got = complete(f"hitl-vault --vault {vault_path} {command} {ids[0]} ")
        assert got == [f"plain,{i}" for i in (ids[2], ids[1], ALLOWED, ids[3])]


def test_completion_reads_hitl_vault_else_dot_vault(
    vault_path: Path, ids: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no --vault, the ids come from $HITL_VAULT, else from ./vault."""
    monkeypatch.delenv("HITL_VAULT", raising=False)
    words = f"hitl-vault cancel {DAY}-payment-b"
    assert complete(words, {"HITL_VAULT": str(vault_path)}) == [f"plain,{ids[2]}"]
    monkeypatch.chdir(vault_path.parent)
    assert vault_path.name == "vault"
    assert complete(words) == [f"plain,{ids[2]}"]
    monkeypatch.chdir(vault_path)  # no ./vault here: nothing to offer, and no error
    assert complete(words) == []


def test_completion_shows_status_and_summary_where_the_shell_can(
    vault_path: Path, ids: list[str]
) -> None:
    """zsh gets each id with its status and summary beside it."""
    got = complete(f"hitl-vault --vault {vault_path} retry {DAY}-payment-c", shell="zsh")
    assert got[:2] == ["plain", ids[3]]
    assert got[2].startswith("pending") and "payment" in got[2]


@pytest.mark.process
def test_the_installed_command_completes_ids(vault_path: Path, ids: list[str]) -> None:
    """The console script answers bash's completion request with the vault's ids."""
    env = {
        **os.environ,
        "_HITL_VAULT_COMPLETE": "bash_complete",
        "COMP_WORDS": f"hitl-vault --vault {vault_path} approve {DAY}-payment-b",
        "COMP_CWORD": "4",
    }
    run = subprocess.run([str(COMMAND)], capture_output=True, text=True, env=env, timeout=60)
    assert (run.returncode, run.stdout, run.stderr) == (0, f"plain,{ids[2]}\n", "")


def test_completion_in_a_fresh_vault_creates_nothing(vault_path: Path) -> None:
    """`approve <TAB>` in a vault no command has opened yet offers nothing and makes no
    journal (nor .hitl/)."""
    assert not (vault_path / ".hitl").exists()
    assert complete(f"hitl-vault --vault {vault_path} approve ") == []
    assert not (vault_path / ".hitl").exists()


def test_completion_only_reads_the_journal(vault_path: Path, ids: list[str]) -> None:
    """Completing ids writes nothing to the journal and leaves no file behind in .hitl/."""
    state = vault_path / ".hitl"

    def entries() -> int:
        db = sqlite3.connect(state / "journal.db")
        try:
            return int(db.execute("SELECT count(*) FROM entries").fetchone()[0])
        finally:
            db.close()

    count = entries()
    before = {p.name: p.stat().st_mtime_ns for p in state.iterdir()}
    assert complete(f"hitl-vault --vault {vault_path} show {DAY}-payment-c") == [f"plain,{ids[3]}"]
    assert {p.name: p.stat().st_mtime_ns for p in state.iterdir()} == before
    assert entries() == count


@pytest.mark.parametrize("exclusive", [False, True], ids=["write lock", "exclusive lock"])
def test_completion_does_not_wait_for_a_journal_another_process_holds(
    vault_path: Path, ids: list[str], exclusive: bool
) -> None:
    """While another connection holds the journal's write lock, `approve <TAB>` answers
    within a couple of seconds: the ids when it can read them, else nothing."""
    db = sqlite3.connect(vault_path / ".hitl" / "journal.db", isolation_level=None)
    try:
        if exclusive:  # readers are shut out too
            db.execute("PRAGMA locking_mode=EXCLUSIVE")
        db.execute("BEGIN EXCLUSIVE")
        db.execute("UPDATE requests SET summary = summary")
        started = time.monotonic()
        got = complete(f"hitl-vault --vault {vault_path} approve {DAY}-payment-c")
        assert time.monotonic() - started < 5
        assert got == ([] if exclusive else [f"plain,{ids[3]}"])
    finally:
        db.execute("ROLLBACK")
        db.close()
