"""Two writers on one note: hitl-vault in two processes, or hitl-vault and a human saving.

The ``approval()`` example approved with ``hitl-vault approve`` from another shell (two
processes moving the same note), a human's save landing while hitl-vault writes the note,
and a Needs attention entry whose note has moved on.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from hitl_vault import Status, Vault
from hitl_vault.cli.template import init_vault
from hitl_vault.durable import move_note, write_note
from hitl_vault.errors import ChangedUnderfootError, NoteError
from hitl_vault.model import Request
from hitl_vault.notes.sync import NoteSync

from .helpers import eventually
from .test_approvers import vote_line, write_vault

# approval() as in the README: ask, wait for the human, then do it; prints what happened.
APPROVAL_SCRIPT = textwrap.dedent(
    """\
    import asyncio, logging, sys
    from hitl_vault import Rejected, TimedOut, Vault

    logging.basicConfig(stream=sys.stdout, format="%(levelname)s %(message)s")

    async def main():
        with Vault(sys.argv[1]) as vault:
            try:
                async with vault.approval(
                    "payment", {"amount": 1500}, timeout="1h", wait_timeout=60
                ) as req:
                    req.result = f"paid {req.params['amount']}"
                print("done", req.id, flush=True)
            except (Rejected, TimedOut) as refused:
                print("not paid:", refused, flush=True)

    asyncio.run(main())
    """
)


def _hitl(vault: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hitl_vault", "--vault", str(vault), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
@pytest.mark.process
@pytest.mark.parametrize("run", range(3))
def test_approve_from_another_shell_while_approval_waits(tmp_path: Path, run: int) -> None:
    """``approve`` prints the decision it made, and nothing is flagged when approval() moves
    the same note at once (3 runs of ~2 s; before, 2 in 12 printed "cannot move it")."""
    vault = tmp_path / "vault"
    init_vault(vault)
    script = subprocess.Popen(
        [sys.executable, "-c", APPROVAL_SCRIPT, str(vault)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        pending = vault / "Pending_Approval"
        note = eventually(lambda: next(iter(pending.glob("2*payment*.md")), None), 30)
        assert isinstance(note, Path)
        time.sleep(0.1 * run)  # pacing: approve at different points of approval()'s start
        approved = _hitl(vault, "approve", note.stem, "--by", "alice")
        output, _ = script.communicate(timeout=60)
    finally:
        if script.poll() is None:
            script.kill()
            script.wait(30)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout.strip() == f"{note.stem} approved"
    assert output.strip() == f"done {note.stem}", output
    assert (vault / "Done" / note.name).is_file()
    with Vault(vault) as v:
        assert v.get(note.stem).status is Status.EXECUTED
        assert v.engine.journal.attention() == []
        assert v.verify() == []


def test_approve_returns_the_decision_though_the_request_already_moved_on(tmp_path: Path) -> None:
    """``Vault.approve`` returns the request as the approval left it, even when a listener
    (another process, in real life) starts carrying it out before it returns."""
    vault_path = tmp_path / "vault"
    init_vault(vault_path)
    with Vault(vault_path) as vault:
        req = vault.submit("payment", {"amount": 1500}, requested_by="bot")
        started: list[str] = []

        def start(transition: object) -> None:
            vault.engine.start_execution(req.id, by="bot")
            started.append(req.id)

        vault.engine.listen(start, [Status.APPROVED])
        done = vault.approve(req.id, by="alice")
        assert started == [req.id]
        assert done.status is Status.APPROVED
        assert done.decided_by == "alice"
        assert vault.get(req.id).status is Status.EXECUTING


def _pending_note(vault: Vault) -> tuple[str, Path, bytes]:
    req = vault.submit("payment", {"amount": 1500}, requested_by="bot")
    assert req.path is not None
    return req.id, req.path, req.path.read_bytes()


def test_a_move_another_process_finished_first_is_no_conflict(tmp_path: Path) -> None:
    """The note moved to Approved/ by another process since we read it: we read again
    (ChangedUnderfootError), never "cannot move it: Approved/<id>.md already exists"."""
    init_vault(tmp_path / "vault")
    with Vault(tmp_path / "vault") as vault:
        rid, path, before = _pending_note(vault)
        dest = tmp_path / "vault" / "Approved" / path.name
        with Vault(tmp_path / "vault") as other:
            other.approve(rid, by="alice")  # its note is moved at once (no daemon)
        assert dest.is_file() and not path.exists()
        with pytest.raises(ChangedUnderfootError):
            move_note(path, before, dest, before + b"\nours\n", "Pending_Approval/x.md")
        assert b"ours" not in dest.read_bytes()


def test_a_move_another_process_is_making_is_no_conflict(tmp_path: Path) -> None:
    """The other process has written the note and linked its new name, not yet unlinked the
    old one: we read again, and its move stands."""
    init_vault(tmp_path / "vault")
    with Vault(tmp_path / "vault") as vault:
        _, path, before = _pending_note(vault)
        dest = tmp_path / "vault" / "Approved" / path.name
        theirs = before.replace(b"status: pending", b"status: approved")
        write_note(path, theirs, before, "x")
        os.link(path, dest)
        with pytest.raises(ChangedUnderfootError):
            move_note(path, before, dest, before + b"\nours\n", "Pending_Approval/x.md")
        assert dest.read_bytes() == theirs


def test_a_flag_on_a_note_that_moved_on_clears_when_the_note_is_synced(tmp_path: Path) -> None:
    """An entry under Needs attention naming the note where it was before it moved (what the
    losing writer of a race listed) clears once the note shows the journal elsewhere."""
    init_vault(tmp_path / "vault")
    with Vault(tmp_path / "vault") as vault:
        rid, path, _ = _pending_note(vault)
        engine, journal = vault.engine, vault.engine.journal
        vault.approve(rid, by="alice")  # the note is in Approved/ now
        where = f"Pending_Approval/{path.name}"
        journal.flag(where, f"{where}: cannot move it", engine.now(), rid)
        journal.flag("Inbox/other.md", "Inbox/other.md: not a proposal", engine.now())
        engine.start_execution(rid, by="bot")
        engine.finish_execution(rid, True, result="paid")
        engine.show_in_note(rid, engine.now())
        assert (tmp_path / "vault" / "Done" / path.name).is_file()
        assert [a.path for a in journal.attention()] == ["Inbox/other.md"]


# --- a human's save landing while hitl-vault writes the note -----------------------------


@pytest.fixture
def save_lands_before_replace(
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Callable[[Path, Callable[[Path], object]], None]]:
    """Arrange for ``save(note)`` to run right before hitl-vault's next ``os.replace`` onto
    ``note``: after it compared the note's bytes with those it read, before it swapped them
    (the window of a few microseconds two saves from the same base can share)."""
    real = os.replace
    armed: list[tuple[Path, Callable[[Path], object]]] = []

    def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if armed and Path(dst) == armed[0][0]:
            note, save = armed.pop()
            save(note)
        real(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    yield lambda note, save: armed.append((note, save))
    assert armed == [], "the save never ran"


def test_a_vote_saved_while_hitl_vault_writes_the_note_is_kept_and_counted(
    tmp_path: Path,
    save_lands_before_replace: Callable[[Path, Callable[[Path], object]], None],
) -> None:
    """bob votes with ``approve``; alice's vote, saved in place from the same base while
    hitl-vault writes bob's into the note, is neither overwritten nor lost: it counts."""
    vault_path = write_vault(tmp_path / "vault")
    with Vault(vault_path) as vault:
        req = vault.submit("payment", {"amount": 1500}, requested_by="bot")
        assert req.path is not None
        save_lands_before_replace(req.path, lambda note: vote_line(note, "alice", "approved"))
        vault.approve(req.id, by="bob")
        after = vault.get(req.id)  # alice's save was read again, and journaled first
        assert {t.by for t in after.votes()} == {"alice", "bob"}
        assert after.status is Status.APPROVED
        assert after.path is not None
        assert "alice: approved" in after.path.read_text(encoding="utf-8")
        assert vault.verify() == []


def test_a_status_saved_while_hitl_vault_writes_the_note_is_not_overwritten(
    tmp_path: Path,
    save_lands_before_replace: Callable[[Path, Callable[[Path], object]], None],
) -> None:
    """A human's in-place save landing between hitl-vault's compare and its swap stands."""
    init_vault(tmp_path / "vault")
    with Vault(tmp_path / "vault") as vault:
        _, path, before = _pending_note(vault)
        theirs = before + b"\nmy own notes\n"
        save_lands_before_replace(path, lambda note: note.write_bytes(theirs))
        with pytest.raises(ChangedUnderfootError):
            write_note(path, before + b"\nhitl-vault's\n", before, "x")
        assert path.read_bytes() == theirs
        assert [p.name for p in path.parent.iterdir() if p.name.startswith(".")] == []


@pytest.mark.process
def test_a_flag_on_a_vanished_note_path_clears_at_run_once(tmp_path: Path) -> None:
    """A Needs attention entry naming a note path nothing is at any more (its note moved on
    while no daemon ran) is gone after ``hitl-vault run --once``; others stay."""
    vault_path = tmp_path / "vault"
    init_vault(vault_path)
    with Vault(vault_path) as vault:
        rid, path, _ = _pending_note(vault)
        engine, journal = vault.engine, vault.engine.journal
        vault.approve(rid, by="alice")
        engine.start_execution(rid, by="bot")
        engine.finish_execution(rid, True, result="paid")
        engine.show_in_note(rid, engine.now())
        assert (vault_path / "Done" / path.name).is_file()
        where = f"Pending_Approval/{path.name}"
        journal.flag(where, f"{where}: cannot move it", engine.now(), rid)
        journal.flag("Inbox/other.md", "Inbox/other.md: not a proposal", engine.now())
    done = _hitl(vault_path, "run", "--once")
    assert done.returncode == 0, done.stderr
    with Vault(vault_path) as vault:
        assert [a.path for a in vault.engine.journal.attention()] == ["Inbox/other.md"]


def test_a_name_another_process_drops_again_at_once_is_not_in_the_way(tmp_path: Path) -> None:
    """Another process's move undone (it found the note saved between its steps) leaves the
    new name for a moment: the move waits it out rather than flag "already exists"."""
    init_vault(tmp_path / "vault")
    with Vault(tmp_path / "vault") as vault:
        _, path, before = _pending_note(vault)
        dest = tmp_path / "vault" / "Approved" / path.name
        dest.write_bytes(b"another process's, about to be dropped\n")
        dropping = threading.Timer(0.01, dest.unlink)
        dropping.start()
        try:
            move_note(path, before, dest, before + b"\nours\n", "Pending_Approval/x.md")
        finally:
            dropping.join()
        assert dest.read_bytes() == before + b"\nours\n"
        assert not path.exists()


def test_a_file_that_stays_in_the_way_is_flagged(tmp_path: Path) -> None:
    """A different file under the name the note moves to is a real conflict: NoteError."""
    init_vault(tmp_path / "vault")
    with Vault(tmp_path / "vault") as vault:
        _, path, before = _pending_note(vault)
        dest = tmp_path / "vault" / "Approved" / path.name
        dest.write_bytes(b"someone's own file\n")
        with pytest.raises(NoteError, match="already exists"):
            move_note(path, before, dest, before + b"\nours\n", "Pending_Approval/x.md")
        assert path.read_bytes() == before


# --- what cannot be brought up to date now is said, never dropped -------------------------


def test_a_note_saved_during_every_attempt_is_flagged_then_brought_up_to_date(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A human saving the note during each attempt of ``approve`` (no daemon) to show the
    decision: the approval stands, their saves stand, and Needs attention says the note does
    not show it yet; the next sync, once they stop, brings it up to date and clears that."""
    init_vault(tmp_path / "vault")
    with Vault(tmp_path / "vault") as vault:
        rid, path, _ = _pending_note(vault)
        real = os.replace
        saves: list[int] = []

        def replace(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
            if Path(dst) == path and ".old." not in Path(src).name and len(saves) < 50:
                saves.append(len(saves))  # a save in place between hitl-vault's compare and swap
                path.write_bytes(path.read_bytes() + f"\nmy notes {len(saves)}\n".encode())
            real(src, dst)

        monkeypatch.setattr(os, "replace", replace)
        done = vault.approve(rid, by="alice")
        assert done.status is Status.APPROVED
        assert len(saves) == 5  # one save during each attempt
        assert path.is_file() and f"my notes {len(saves)}" in path.read_text(encoding="utf-8")
        where = f"Pending_Approval/{path.name}"
        flagged = [(a.path, a.request_id) for a in vault.engine.journal.attention()]
        assert flagged == [(where, rid)]
        assert (
            "does not show what the journal holds yet"
            in vault.engine.journal.attention()[0].message
        )
        monkeypatch.undo()  # they stopped editing
        vault.engine.show_in_note(rid, vault.engine.now())
        text = (tmp_path / "vault" / "Approved" / path.name).read_text(encoding="utf-8")
        assert "status: approved" in text and f"my notes {len(saves)}" in text
        assert not path.exists()
        assert vault.engine.journal.attention() == []


class MovedMeanwhile(NoteSync):
    """A NoteSync whose first look for the note races another writer moving it to
    Approved/: the note is moved right after it was found (``found``), or right before
    (``found=False``: every folder was looked into before it arrived)."""

    def __init__(self, vault: Vault, found: bool) -> None:
        super().__init__(
            vault.root, vault.engine.journal, self._one_approver, vault.engine.notes.record_decision
        )
        self.found = found
        self.raced = False

    @staticmethod
    def _one_approver(request: Request) -> tuple[dict[str, str] | None, list[str]]:
        return None, []

    def locate(self, request_id: str, known: str | None = None) -> Path | None:
        path = super().locate(request_id, known)
        if self.raced or path is None:
            return path
        self.raced = True
        path.rename(self.root / "Approved" / path.name)
        return path if self.found else None


@pytest.mark.parametrize("found", [True, False], ids=["after-found", "before-found"])
def test_a_note_moved_while_being_looked_for_is_looked_for_again(
    tmp_path: Path, found: bool
) -> None:
    """A note another writer moves as hitl-vault finds it (gone when read, or there when a
    new one is written): read again and brought up to date, not a silent False."""
    init_vault(tmp_path / "vault")
    with Vault(tmp_path / "vault") as vault:
        rid, path, _ = _pending_note(vault)
        vault.engine.journal.transition(rid, Status.APPROVED, at=vault.engine.now(), by="alice")
        sync = MovedMeanwhile(vault, found)
        assert sync.sync_now(rid, vault.engine.now()) is True
        assert sync.raced
        text = (tmp_path / "vault" / "Approved" / path.name).read_text(encoding="utf-8")
        assert "status: approved" in text
        assert text.count("· pending → approved · by alice") == 1
        assert vault.verify() == []
