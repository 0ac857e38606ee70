"""Sync tools and version control bring back old notes; the journal decides, nothing runs twice.

Each scenario approves and executes real requests through a real ``hitl-vault
run``, then brings back an old ``status: approved`` the way git, Syncthing,
Obsidian Sync or an editor's stale buffer would, and counts the executor's runs.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_vault import Status, Vault

from .helpers import DaemonProcess, eventually, set_status

RECORD = """\
import json, os, sys
request = json.load(sys.stdin)
fd = os.open(os.path.join(os.path.dirname(__file__), "runs.log"),
             os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
os.write(fd, (request["id"] + "\\n").encode())
os.close(fd)
print("paid", request["params"].get("amount"))
"""
FOLDERS = ("Pending_Approval", "Approved", "Done", "Rejected")
CONFLICT = ".sync-conflict-20261122-101500-ABCDEFG.md"


def configure(vault: Path) -> None:
    (vault / "scripts" / "record.py").write_text(RECORD)
    rules = vault / "hitl-vault.yaml"
    text = rules.read_text().replace("quiet: 2s", "quiet: 200ms")
    text = text.replace(
        "run: [python3, scripts/pay.py]", f"run: [{sys.executable}, scripts/record.py]"
    )
    rules.write_text(text)


def runs(vault: Path) -> list[str]:
    log = vault / "scripts" / "runs.log"
    return log.read_text().split() if log.exists() else []


def copies(vault: Path, request_id: str) -> list[Path]:
    return [
        vault / f / f"{request_id}.md" for f in FOLDERS if (vault / f / f"{request_id}.md").exists()
    ]


def shows(vault: Path, request_id: str, status: Status, folder: str) -> bool:
    """The only note of the request is in ``folder`` and says ``status``."""
    found = copies(vault, request_id)
    return found == [vault / folder / f"{request_id}.md"] and (
        f"status: {status}" in found[0].read_text(encoding="utf-8")
    )


def settle() -> None:
    """Pacing, not an assertion: leave the daemon a moment with a new note before editing it.

    Approving within a millisecond of a note appearing is tested on its own, in
    test_editors.py::test_an_approval_saved_the_moment_a_note_appears_is_never_missed.
    """
    time.sleep(0.4)


def attention(vault: Path) -> str:
    text = (vault / "Dashboard.md").read_text(encoding="utf-8")
    return text.split("## Needs attention", 1)[1].split("\n## ", 1)[0]


@pytest.fixture
def vault_path(vault_path: Path) -> Path:
    configure(vault_path)
    return vault_path


@pytest.fixture
def daemon(vault_path: Path) -> Iterator[DaemonProcess]:
    with DaemonProcess(vault_path) as d:
        yield d


def executed_once(vault: Vault, amount: int = 1500) -> tuple[str, bytes, bytes]:
    """A request approved in its note and run: its id, the approved bytes, the final bytes."""
    req = vault.submit("payment", {"amount": amount})
    assert req.path is not None
    settle()
    set_status(req.path, "approved", decided_by="alice")
    approved = req.path.read_bytes()
    eventually(lambda: shows(vault.root, req.id, Status.EXECUTED, "Done"), 30)
    return req.id, approved, (vault.root / "Done" / f"{req.id}.md").read_bytes()


def test_git_checkout_brings_back_the_approved_note_in_pending(
    vault_path: Path, daemon: DaemonProcess
) -> None:
    """git deletes Done/<id>.md and re-creates Pending_Approval/<id>.md with the old bytes."""
    with Vault(vault_path) as vault:
        done = [executed_once(vault, 1500 + n) for n in range(5)]
        for request_id, approved, _ in done:
            (vault_path / "Done" / f"{request_id}.md").unlink()
            (vault_path / "Pending_Approval" / f"{request_id}.md").write_bytes(approved)
        for request_id, _, _ in done:
            eventually(lambda rid=request_id: shows(vault_path, rid, Status.EXECUTED, "Done"), 30)
            assert vault.journal.status_of(request_id) is Status.EXECUTED
        assert sorted(runs(vault_path)) == sorted(rid for rid, _, _ in done)
        assert vault.verify() == []
    assert daemon.stop() == 0


def test_old_approved_bytes_written_over_the_executed_note_in_place(
    vault_path: Path, daemon: DaemonProcess
) -> None:
    """A sync tool (or a stale editor buffer) overwrites Done/<id>.md with the approved version."""
    with Vault(vault_path) as vault:
        request_id, approved, _ = executed_once(vault)
        note = vault_path / "Done" / f"{request_id}.md"
        with open(note, "wb") as f:  # in place
            f.write(approved)
        eventually(lambda: b"status: executed" in note.read_bytes(), 30)
        # ... and the same again by temp file and rename, as Syncthing saves.
        tmp = note.with_name(f".syncthing.{note.name}.tmp")
        tmp.write_bytes(approved)
        os.replace(tmp, note)
        eventually(lambda: b"status: executed" in note.read_bytes(), 30)
        eventually(lambda: shows(vault_path, request_id, Status.EXECUTED, "Done"), 30)
        assert runs(vault_path) == [request_id]
        assert vault.journal.status_of(request_id) is Status.EXECUTED
    assert daemon.stop() == 0


def test_a_checkout_that_adds_a_second_approved_copy_next_to_the_done_note(
    vault_path: Path, daemon: DaemonProcess
) -> None:
    """The old approved note comes back in Pending_Approval/ while Done/<id>.md stays."""
    with Vault(vault_path) as vault:
        request_id, approved, _ = executed_once(vault)
        stale = vault_path / "Pending_Approval" / f"{request_id}.md"
        stale.write_bytes(approved)
        eventually(lambda: stale.name in attention(vault_path), 30)
        assert runs(vault_path) == [request_id]
        assert vault.journal.status_of(request_id) is Status.EXECUTED
        assert stale.read_bytes() == approved, "a copy it cannot act on is left as it is"
        assert (vault_path / "Done" / f"{request_id}.md").exists()
    assert daemon.stop() == 0


def test_a_sync_conflict_copy_saying_approved_never_runs(
    vault_path: Path, daemon: DaemonProcess
) -> None:
    with Vault(vault_path) as vault:
        request_id, approved, _ = executed_once(vault)
        pending = vault.submit("payment", {"amount": 2500})
        assert pending.path is not None
        settle()
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
            eventually(lambda c=c: c.name in attention(vault_path), 30)
        assert runs(vault_path) == [request_id]
        assert vault.journal.status_of(pending.id) is Status.PENDING
        assert conflicts[2].read_text() == pending_approved
    assert daemon.stop() == 0


def test_a_note_deleted_then_recreated_with_its_approved_content(
    vault_path: Path, daemon: DaemonProcess
) -> None:
    """A sync tool's delete and create, apart and at once, with the approved version's bytes."""
    with Vault(vault_path) as vault:
        request_id, approved, _ = executed_once(vault)
        note = vault_path / "Done" / f"{request_id}.md"
        note.unlink()
        time.sleep(0.5)  # pacing: the deletion is seen on its own first
        note.write_bytes(approved)
        eventually(lambda: shows(vault_path, request_id, Status.EXECUTED, "Done"), 30)
        assert b"approved \xe2\x86\x92 executing" in note.read_bytes()
        note.unlink()
        note.write_bytes(approved)
        eventually(lambda: shows(vault_path, request_id, Status.EXECUTED, "Done"), 30)
        assert runs(vault_path) == [request_id]
        assert vault.journal.status_of(request_id) is Status.EXECUTED
    assert daemon.stop() == 0


def test_the_remote_pending_version_comes_back_and_is_approved_again(
    vault_path: Path, daemon: DaemonProcess
) -> None:
    """Obsidian Sync keeps the remote, just-created version; the human approves it once more."""
    with Vault(vault_path) as vault:
        req = vault.submit("payment", {"amount": 1500})
        assert req.path is not None
        settle()
        created = req.path.read_bytes()
        request_id = req.id
        set_status(req.path, "approved", decided_by="alice")
        eventually(lambda: shows(vault_path, request_id, Status.EXECUTED, "Done"), 30)
        (vault_path / "Done" / f"{request_id}.md").unlink()
        req.path.write_bytes(created)  # the pending version is back in Pending_Approval/
        set_status(req.path, "approved", decided_by="bob")  # and somebody approves it again
        eventually(lambda: shows(vault_path, request_id, Status.EXECUTED, "Done"), 30)
        assert runs(vault_path) == [request_id]
        history = vault.journal.history(request_id)
        assert [t.by for t in history if t.to_status is Status.APPROVED] == ["alice"]
    assert daemon.stop() == 0


def test_two_devices_decided_differently_the_first_decision_stands(
    vault_path: Path, daemon: DaemonProcess
) -> None:
    """Rejected here; the other device's approval arrives later by sync: it is never acted on."""
    with Vault(vault_path) as vault:
        req = vault.submit("payment", {"amount": 1500})
        assert req.path is not None
        settle()
        other_device = req.path.read_text().replace("status: pending", "status: approved")
        set_status(req.path, "rejected", reason="duplicate invoice")
        rejected = vault_path / "Rejected" / req.path.name
        eventually(lambda: shows(vault_path, req.id, Status.REJECTED, "Rejected"), 30)
        rejected.write_text(other_device)  # the sync tool lands the other version in place
        eventually(lambda: "ignored" in rejected.read_text() or req.id in attention(vault_path))
        eventually(lambda: shows(vault_path, req.id, Status.REJECTED, "Rejected"), 30)
        assert runs(vault_path) == []
        assert vault.journal.status_of(req.id) is Status.REJECTED
    assert daemon.stop() == 0


@pytest.mark.slow
def test_a_checkout_of_many_notes_while_the_daemon_is_down(vault_path: Path) -> None:
    """A branch switch of 40 executed notes back to their approved versions, daemon stopped."""
    with Vault(vault_path) as vault:
        with DaemonProcess(vault_path) as daemon:
            reqs = [vault.submit("payment", {"amount": 600 + n}) for n in range(40)]
            settle()
            approved = {}
            for r in reqs:
                assert r.path is not None
                set_status(r.path, "approved", decided_by="alice")
                approved[r.id] = r.path.read_bytes()
            for r in reqs:
                eventually(lambda r=r: shows(vault_path, r.id, Status.EXECUTED, "Done"), 30)
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
                eventually(lambda r=r: shows(vault_path, r.id, Status.EXECUTED, "Done"), 30)
            # and the same checkout again while it runs: 40 deletes and 40 creates at once
            for request_id, data in approved.items():
                (vault_path / "Done" / f"{request_id}.md").unlink()
                (vault_path / "Pending_Approval" / f"{request_id}.md").write_bytes(data)
            for r in reqs:
                eventually(lambda r=r: shows(vault_path, r.id, Status.EXECUTED, "Done"), 30)
            assert daemon.stop() == 0
        assert sorted(runs(vault_path)) == sorted(r.id for r in reqs)
        assert all(vault.journal.status_of(r.id) is Status.EXECUTED for r in reqs)
        assert vault.verify() == []


def test_two_processes_bringing_the_same_notes_up_to_date_at_once(vault_path: Path) -> None:
    """The CLI and a waiting script both write a decided note: one move, nothing lost, no error."""
    n = 40
    with Vault(vault_path) as setup:
        ids = [setup.submit("payment", {"amount": 1000 + i}).id for i in range(n)]
        now = setup.now()
        for rid in ids:  # decided in the journal; the notes still say pending
            setup.journal.transition(rid, Status.APPROVED, at=now, by="alice")
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def bring_up_to_date() -> None:
        with Vault(vault_path) as vault:
            start.wait()
            for rid in ids:
                try:
                    vault.notes.sync_now(rid, vault.now())
                except BaseException as e:  # any error at all is the finding
                    errors.append(e)

    workers = [threading.Thread(target=bring_up_to_date) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert errors == []
    assert not [p for p in (vault_path / "Pending_Approval").glob("2*.md")]
    for rid in ids:
        text = (vault_path / "Approved" / f"{rid}.md").read_text(encoding="utf-8")
        assert "status: approved" in text
        assert text.count("· pending → approved · by alice") == 1
    with Vault(vault_path) as vault:
        assert vault.verify() == []
