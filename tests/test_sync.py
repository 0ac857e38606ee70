"""Sync tools and version control bring back old notes; the journal decides, nothing runs twice.

Each scenario approves and executes real requests through a real ``hitl-vault
run``, then brings back an old ``status: approved`` the way git, Syncthing,
Obsidian Sync or an editor's stale buffer would, and counts the executor's runs.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from hitl_vault import Status, Vault

from .helpers import DaemonProcess, VaultHelper, eventually, set_status

pytestmark = pytest.mark.process  # nearly every test here starts a real process

CONFLICT = ".sync-conflict-20261122-101500-ABCDEFG.md"


@pytest.fixture
def vault_path(vault_path: Path) -> Path:
    """The template vault with the recording executor and a 200 ms quiet period."""
    VaultHelper(vault_path).record_runs()
    return vault_path


def executed_once(
    helper: VaultHelper, vault: Vault, amount: int = 1500
) -> tuple[str, bytes, bytes]:
    """A request approved in its note and run: its id, the approved bytes, the final bytes."""
    req = vault.submit("payment", {"amount": amount})
    assert req.path is not None
    helper.settle()
    set_status(req.path, "approved", decided_by="alice")
    approved = req.path.read_bytes()
    eventually(lambda: helper.shows(req.id, Status.EXECUTED, "Done"), 30)
    return req.id, approved, (vault.root / "Done" / f"{req.id}.md").read_bytes()


def test_git_checkout_brings_back_the_approved_note_in_pending(
    vault_path: Path, daemon_process: DaemonProcess, helper: VaultHelper
) -> None:
    """git deletes Done/<id>.md and re-creates Pending_Approval/<id>.md with the old bytes."""
    with Vault(vault_path) as vault:
        done = [executed_once(helper, vault, 1500 + n) for n in range(5)]
        for request_id, approved, _ in done:
            (vault_path / "Done" / f"{request_id}.md").unlink()
            (vault_path / "Pending_Approval" / f"{request_id}.md").write_bytes(approved)
        for request_id, _, _ in done:
            eventually(lambda rid=request_id: helper.shows(rid, Status.EXECUTED, "Done"), 30)
            assert vault.engine.journal.status_of(request_id) is Status.EXECUTED
        assert sorted(helper.runs()) == sorted(rid for rid, _, _ in done)
        assert vault.verify() == []
    assert daemon_process.stop() == 0


def test_old_approved_bytes_written_over_the_executed_note_in_place(
    vault_path: Path, daemon_process: DaemonProcess, helper: VaultHelper
) -> None:
    """A sync tool (or a stale editor buffer) overwrites Done/<id>.md with the approved version."""
    with Vault(vault_path) as vault:
        request_id, approved, _ = executed_once(helper, vault)
        note = vault_path / "Done" / f"{request_id}.md"
        with open(note, "wb") as f:  # in place
            f.write(approved)
        eventually(lambda: b"status: executed" in note.read_bytes(), 30)
        # ... and the same again by temp file and rename, as Syncthing saves.
        tmp = note.with_name(f".syncthing.{note.name}.tmp")
        tmp.write_bytes(approved)
        os.replace(tmp, note)
        eventually(lambda: b"status: executed" in note.read_bytes(), 30)
        eventually(lambda: helper.shows(request_id, Status.EXECUTED, "Done"), 30)
        assert helper.runs() == [request_id]
        assert vault.engine.journal.status_of(request_id) is Status.EXECUTED
    assert daemon_process.stop() == 0


def test_a_checkout_that_adds_a_second_approved_copy_next_to_the_done_note(
    vault_path: Path, daemon_process: DaemonProcess, helper: VaultHelper
) -> None:
    """The old approved note comes back in Pending_Approval/ while Done/<id>.md stays."""
    with Vault(vault_path) as vault:
        request_id, approved, _ = executed_once(helper, vault)
        stale = vault_path / "Pending_Approval" / f"{request_id}.md"
        stale.write_bytes(approved)
        eventually(lambda: stale.name in helper.attention(), 30)
        assert helper.runs() == [request_id]
        assert vault.engine.journal.status_of(request_id) is Status.EXECUTED
        assert stale.read_bytes() == approved, "a copy it cannot act on is left as it is"
        assert (vault_path / "Done" / f"{request_id}.md").exists()
    assert daemon_process.stop() == 0


def test_a_sync_conflict_copy_saying_approved_never_runs(
    vault_path: Path, daemon_process: DaemonProcess, helper: VaultHelper
) -> None:
    """Sync conflict copies saying approved are flagged, left as they are, and never run."""
    with Vault(vault_path) as vault:
        request_id, approved, _ = executed_once(helper, vault)
        pending = vault.submit("payment", {"amount": 2500})
        assert pending.path is not None
        helper.settle()
        conflicts = [
            vault_path / "Done" / f"{request_id}{CONFLICT}",
            vault_path / "Pending_Approval" / f"{request_id}{CONFLICT}",
            # another device approved a request this one still has as pending
            vault_path / "Pending_Approval" / f"{pending.id}{CONFLICT}",
        ]
        conflicts[0].write_bytes(approved)
        conflicts[1].write_bytes(approved)
        pending_approved = pending.path.read_text().replace("status: pending", "status: approved")
        conflicts[2].write_text(pending_approved)
        for c in conflicts:
            eventually(lambda c=c: c.name in helper.attention(), 30)
        assert helper.runs() == [request_id]
        assert vault.engine.journal.status_of(pending.id) is Status.PENDING
        assert conflicts[2].read_text() == pending_approved
    assert daemon_process.stop() == 0


def test_a_note_deleted_then_recreated_with_its_approved_content(
    vault_path: Path, daemon_process: DaemonProcess, helper: VaultHelper
) -> None:
    """A sync tool's delete and create, apart and at once, with the approved version's bytes."""
    with Vault(vault_path) as vault:
        request_id, approved, _ = executed_once(helper, vault)
        note = vault_path / "Done" / f"{request_id}.md"
        note.unlink()
        time.sleep(0.5)  # pacing: the deletion is seen on its own first
        note.write_bytes(approved)
        eventually(lambda: helper.shows(request_id, Status.EXECUTED, "Done"), 30)
        assert b"approved \xe2\x86\x92 executing" in note.read_bytes()
        note.unlink()
        note.write_bytes(approved)
        eventually(lambda: helper.shows(request_id, Status.EXECUTED, "Done"), 30)
        assert helper.runs() == [request_id]
        assert vault.engine.journal.status_of(request_id) is Status.EXECUTED
    assert daemon_process.stop() == 0


def test_the_remote_pending_version_comes_back_and_is_approved_again(
    vault_path: Path, daemon_process: DaemonProcess, helper: VaultHelper
) -> None:
    """Obsidian Sync keeps the remote, just-created version; the human approves it once more."""
    with Vault(vault_path) as vault:
        req = vault.submit("payment", {"amount": 1500})
        assert req.path is not None
        helper.settle()
        created = req.path.read_bytes()
        request_id = req.id
        set_status(req.path, "approved", decided_by="alice")
        eventually(lambda: helper.shows(request_id, Status.EXECUTED, "Done"), 30)
        (vault_path / "Done" / f"{request_id}.md").unlink()
        req.path.write_bytes(created)  # the pending version is back in Pending_Approval/
        set_status(req.path, "approved", decided_by="bob")  # and somebody approves it again
        eventually(lambda: helper.shows(request_id, Status.EXECUTED, "Done"), 30)
        assert helper.runs() == [request_id]
        history = vault.get(request_id).history
        assert [t.by for t in history if t.to_status is Status.APPROVED] == ["alice"]
    assert daemon_process.stop() == 0


def test_two_devices_decided_differently_the_first_decision_stands(
    vault_path: Path, daemon_process: DaemonProcess, helper: VaultHelper
) -> None:
    """Rejected here; the other device's approval arrives later by sync: it is never acted on."""
    with Vault(vault_path) as vault:
        req = vault.submit("payment", {"amount": 1500})
        assert req.path is not None
        helper.settle()
        other_device = req.path.read_text().replace("status: pending", "status: approved")
        set_status(req.path, "rejected", reason="duplicate invoice")
        rejected = vault_path / "Rejected" / req.path.name
        eventually(lambda: helper.shows(req.id, Status.REJECTED, "Rejected"), 30)
        rejected.write_text(other_device)  # the sync tool lands the other version in place
        eventually(lambda: "ignored" in rejected.read_text() or req.id in helper.attention())
        eventually(lambda: helper.shows(req.id, Status.REJECTED, "Rejected"), 30)
        assert helper.runs() == []
        assert vault.engine.journal.status_of(req.id) is Status.REJECTED
    assert daemon_process.stop() == 0


@pytest.mark.slow
def test_a_checkout_of_many_notes_while_the_daemon_is_down(
    vault_path: Path, helper: VaultHelper
) -> None:
    """A branch switch of 40 executed notes back to their approved versions, daemon stopped."""
    with Vault(vault_path) as vault:
        with DaemonProcess(vault_path) as daemon:
            reqs = [vault.submit("payment", {"amount": 600 + n}) for n in range(40)]
            helper.settle()
            approved = {}
            for r in reqs:
                assert r.path is not None
                set_status(r.path, "approved", decided_by="alice")
                approved[r.id] = r.path.read_bytes()
            for r in reqs:
                eventually(lambda r=r: helper.shows(r.id, Status.EXECUTED, "Done"), 30)
            assert daemon.stop() == 0
        for request_id, data in approved.items():
            (vault_path / "Done" / f"{request_id}.md").unlink()
            (vault_path / "Pending_Approval" / f"{request_id}.md").write_bytes(data)
        again = DaemonProcess(vault_path)
        # A log of its own: helpers.DaemonProcess.start looks for "watching" at a byte offset
        # of the decoded log, which misses it once earlier lines hold multi-byte characters.
        again.log_path = vault_path.parent / "daemon-again.log"
        with again as daemon:
            for r in reqs:
                eventually(lambda r=r: helper.shows(r.id, Status.EXECUTED, "Done"), 30)
            # and the same checkout again while it runs: 40 deletes and 40 creates at once
            for request_id, data in approved.items():
                (vault_path / "Done" / f"{request_id}.md").unlink()
                (vault_path / "Pending_Approval" / f"{request_id}.md").write_bytes(data)
            for r in reqs:
                eventually(lambda r=r: helper.shows(r.id, Status.EXECUTED, "Done"), 30)
            assert daemon.stop() == 0
        assert sorted(helper.runs()) == sorted(r.id for r in reqs)
        assert all(vault.engine.journal.status_of(r.id) is Status.EXECUTED for r in reqs)
        assert vault.verify() == []


def test_two_processes_bringing_the_same_notes_up_to_date_at_once(vault_path: Path) -> None:
    """The CLI and a waiting script both write a decided note: one move, nothing lost, no error."""
    n = 40
    with Vault(vault_path) as setup:
        ids = [setup.submit("payment", {"amount": 1000 + i}).id for i in range(n)]
        now = setup.engine.now()
        for rid in ids:  # decided in the journal; the notes still say pending
            setup.engine.journal.transition(rid, Status.APPROVED, at=now, by="alice")
    start = threading.Barrier(2, timeout=120)
    errors: list[BaseException] = []
    not_shown: list[str] = []  # sync_now said the note does not show the journal

    def bring_up_to_date() -> None:
        with Vault(vault_path) as vault:
            start.wait()
            for rid in ids:
                try:
                    if not vault.engine.notes.sync_now(rid, vault.engine.now()):
                        not_shown.append(rid)
                except BaseException as e:  # any error at all is the finding
                    errors.append(e)

    workers = [threading.Thread(target=bring_up_to_date) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(240)  # generous: a loaded machine's fsyncs are slow, and both must be done
    assert not any(w.is_alive() for w in workers), "a writer was still at work after 240 s"
    assert errors == []
    assert not_shown == []
    assert not [p for p in (vault_path / "Pending_Approval").glob("2*.md")]
    for rid in ids:
        text = (vault_path / "Approved" / f"{rid}.md").read_text(encoding="utf-8")
        assert "status: approved" in text
        assert text.count("· pending → approved · by alice") == 1
    with Vault(vault_path) as vault:
        assert vault.verify() == []
