"""A journal that is damaged, or deleted under a running daemon: one plain line saying what
happened, naming the file and the fix; never a traceback, never a new empty journal."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from datetime import UTC, datetime
from pathlib import Path

import pytest

from hitl_vault import Status, Vault
from hitl_vault.errors import JournalDamagedError, JournalMissingError, JournalMovedError
from hitl_vault.journal.sqlite import Journal

from .helpers import DaemonProcess, VaultHelper, eventually

pytestmark = pytest.mark.process  # every test here starts a real process


def _garble(vault_path: Path, statement: str) -> None:
    """Bytes that are not UTF-8 where the journal keeps text, as a flipped bit leaves them."""
    db = sqlite3.connect(vault_path / ".hitl" / "journal.db", isolation_level=None)
    try:
        db.execute(statement)
    finally:
        db.close()


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    return lines[0]


def test_verify_on_a_damaged_journal_says_so_in_one_line(
    vault_path: Path, helper: VaultHelper
) -> None:
    """`hitl-vault verify` on a journal whose bytes are damaged: exit 1, one line with the file
    and the fix, no traceback."""
    with Vault(vault_path) as vault:
        vault.submit("payment", {"amount": 900})
    _garble(vault_path, "UPDATE policy_changes SET sha = CAST(X'61ff62' AS TEXT)")
    done = helper.hitl("verify")
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert ".hitl/journal.db" in line and "cannot be read" in line and "restore" in line


def test_run_once_on_a_damaged_journal_ends_in_one_line(
    vault_path: Path, helper: VaultHelper
) -> None:
    """`hitl-vault run --once` when a request's row is damaged: one error line, no traceback
    logged before it, no retries of what cannot heal."""
    with Vault(vault_path) as vault:
        vault.submit("payment", {"amount": 900})
    _garble(vault_path, "UPDATE requests SET summary = CAST(X'41ff42' AS TEXT)")
    done = helper.hitl("run", "--once")
    assert done.returncode == 1
    line = _one_line(done.stderr)
    assert ".hitl/journal.db" in line and "cannot be read" in line and "restore" in line


def test_a_journal_deleted_under_a_running_daemon_is_said_plainly(
    vault_path: Path, helper: VaultHelper
) -> None:
    """Deleting .hitl/journal.db under a daemon: other commands refuse (no new empty journal,
    no "not found"), the daemon stops saying what happened, and keeps a copy of what it held."""
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 900})
    journal = vault_path / ".hitl" / "journal.db"
    with DaemonProcess(vault_path) as daemon:
        journal.unlink()
        shown = helper.hitl("show", request.id)
        assert shown.returncode == 1
        line = _one_line(shown.stderr)
        assert (
            "journal.db: the journal was deleted or replaced while hitl-vault was running" in line
        )
        assert "hitl-vault verify" in line and "not found" not in line
        assert not journal.exists()  # no empty journal made in its place
        assert daemon.proc is not None
        eventually(lambda: daemon.proc.poll() is not None, timeout=30)  # type: ignore[union-attr]
        assert daemon.proc.returncode == 1
        log = daemon.log()
        assert "Traceback" not in log, log
        assert "was deleted or replaced while hitl-vault was running" in log
    (rescued,) = journal.parent.glob("journal.db.rescued-*")
    assert f"saved in {rescued}" in log
    again = helper.hitl("list")  # the daemon gone, its copy still says what happened
    assert again.returncode == 1 and f"move {rescued.name} to journal.db" in _one_line(again.stderr)
    assert not journal.exists()
    kept = Journal(rescued)
    try:
        assert kept.status_of(request.id) is Status.PENDING  # nothing it knew was lost
    finally:
        kept.close()


def test_a_journal_deleted_during_a_batch_is_rescued_without_waiting(vault_path: Path) -> None:
    """Deleted while a batch writes, the journal is found gone at once: the batch's writes are
    rolled back, the copy holds what was committed, and the batch ends in that error."""
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 900})
    path = vault_path / ".hitl" / "journal.db"
    journal = Journal(path)
    raised: list[BaseException] = []

    def batch_that_reads_the_feed() -> None:
        try:
            with journal.batch():
                journal.flag("Inbox/x.md", "never committed", datetime.now(UTC))
                path.unlink()
                journal.feed(0)  # what the daemon's step reads inside its batch
        except BaseException as e:
            raised.append(e)

    worker = threading.Thread(target=batch_that_reads_the_feed, daemon=True)
    try:
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "copying the deleted journal never finished"
    finally:
        if not worker.is_alive():
            journal.close()
    (error,) = raised
    (rescued,) = path.parent.glob("journal.db.rescued-*")
    assert isinstance(error, JournalMissingError) and str(rescued) in str(error)
    kept = Journal(rescued)
    try:
        assert kept.status_of(request.id) is Status.PENDING
        assert kept.attention() == []  # the batch's write is not in the copy
    finally:
        kept.close()


def test_a_row_hitl_vault_never_wrote_is_damage_not_a_traceback(
    vault_path: Path, helper: VaultHelper
) -> None:
    """A status no one writes, a time that is not one: reading them is JournalDamagedError."""
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 900})
    helper.sql("UPDATE requests SET status = 'aproved'")
    helper.sql("INSERT INTO attention (path, message, since) VALUES ('x.md', 'm', 'noon')")
    journal = Journal(vault_path / ".hitl" / "journal.db")
    try:
        for read in (
            lambda: journal.get(request.id),
            lambda: journal.status_of(request.id),
            journal.requests,
            journal.counts,
            journal.attention,
        ):
            with pytest.raises(JournalDamagedError, match=r"journal\.db: the journal cannot be"):
                read()
    finally:
        journal.close()


def test_a_vault_moved_under_a_running_daemon_is_a_move_not_a_deletion(
    vault_path: Path, helper: VaultHelper
) -> None:
    """Moving the vault folder under a daemon: the daemon stops saying the vault moved, makes
    no copy of the journal and never makes the old folder again; a new vault at the old
    place starts with a journal of its own, and the moved vault keeps every request."""
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 900})
    moved = vault_path.with_name("moved")
    with DaemonProcess(vault_path) as daemon:
        vault_path.rename(moved)
        touched = moved / "Inbox" / "poke.md"  # something for the daemon to look at
        touched.write_text("---\naction: payment\nparams: {amount: 1}\n---\n")
        eventually(lambda: daemon.proc.poll() is not None, timeout=30)  # type: ignore[union-attr]
        assert daemon.proc.returncode == 1  # type: ignore[union-attr]
        log = daemon.log()
    assert "Traceback" not in log, log
    assert f"the vault moved from {vault_path} while hitl-vault was running" in log, log
    assert "start it again from its new place" in log and "deleted" not in log
    assert not vault_path.exists()  # the old folder is not made again
    assert list(moved.joinpath(".hitl").glob("journal.db.rescued-*")) == []
    fresh = VaultHelper(vault_path)
    assert fresh.hitl("init", str(vault_path)).returncode == 0
    listed = fresh.hitl("list")
    assert listed.returncode == 0, listed.stderr
    assert request.id not in listed.stdout  # a journal of its own, not a copy of the old one
    kept = VaultHelper(moved).hitl("show", request.id)
    assert kept.returncode == 0 and request.id in kept.stdout, kept.stderr


def test_a_journal_renamed_under_an_open_vault_is_said_to_have_moved(
    vault_path: Path,
) -> None:
    """A journal renamed away while a Vault has it open lives on: the next write says the vault
    moved (naming the old place), and no copy is saved."""
    journal = vault_path / ".hitl" / "journal.db"
    with Vault(vault_path) as vault:
        vault.submit("payment", {"amount": 900})
        journal.rename(journal.with_name("elsewhere.db"))
        with pytest.raises(JournalMovedError, match=r"the vault moved from .*vault while"):
            vault.submit("payment", {"amount": 901})
    assert not journal.exists()
    assert list(journal.parent.glob("journal.db.rescued-*")) == []


def test_the_saved_copy_is_private_and_the_newest_is_named(
    vault_path: Path, helper: VaultHelper
) -> None:
    """A journal deleted under an open vault: its copy is 0600 like the journal, and the error
    names the newest copy (by time, not by the pid's digits) and how to start afresh."""
    journal = vault_path / ".hitl" / "journal.db"
    old = journal.with_name("journal.db.rescued-999999999")
    with Vault(vault_path) as vault:
        vault.submit("payment", {"amount": 900})
        journal.unlink()
        with pytest.raises(JournalMissingError) as raised:
            vault.submit("payment", {"amount": 901})
    rescued = raised.value.rescued
    assert rescued is not None and rescued.exists()
    assert stat.S_IMODE(rescued.stat().st_mode) == 0o600
    old.write_bytes(rescued.read_bytes())
    os.utime(old, (rescued.stat().st_mtime - 60,) * 2)  # an older copy, whose name sorts last
    assert sorted(journal.parent.glob("journal.db.rescued-*"))[-1] == old
    listed = helper.hitl("list")
    assert listed.returncode == 1
    line = _one_line(listed.stderr)
    assert f"move {rescued.name} to journal.db" in line and old.name not in line
    assert f"to start a fresh journal instead, move {rescued.name} out of" in line


@pytest.mark.parametrize(
    ("column", "value", "command"),
    [
        ("params", "null", "show"),
        ("params", "null", "list"),
        ("params", "[1, 2]", "approve"),
        ("params", "[1, 2]", "list"),
        ("pinned", "[1]", "approve"),
        ("pinned", "{bad", "approve"),
        ("params_created", "{bad", "approve"),
        ("params_created", '"text"', "show"),
    ],
)
def test_params_that_are_not_a_json_object_are_damage_in_one_line(
    vault_path: Path, helper: VaultHelper, column: str, value: str, command: str
) -> None:
    """Params, pinned or first params in the journal that are not a JSON object: the command
    that reads them says the journal is damaged, in one line naming the file and the fix."""
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 900})
    helper.sql(f"UPDATE requests SET {column} = ?", value)
    args = {"show": ("show", request.id), "list": ("list", "--json")}.get(
        command, ("approve", request.id, "--by", "alice")
    )
    done = helper.hitl(*args)
    assert done.returncode == 1, done.stdout
    line = _one_line(done.stderr)
    assert ".hitl/journal.db: the journal cannot be read" in line, line
    assert "not a JSON object" in line or "is not JSON" in line, line
    assert "restore .hitl/ from the backup" in line
