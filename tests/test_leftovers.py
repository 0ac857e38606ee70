"""What a write of a note cut short by a crash leaves beside it: removed, or listed if it may
hold a human's save; never left for sync tools and git to spread."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import Status, Vault, durable
from hitl_vault.cli.template import init_vault
from hitl_vault.notes.leftovers import Leftovers

from .helpers import eventually

# Rejects a request in a process of its own and stops for good right before (or right
# after) the new content replaces the note, so the test can SIGKILL it at that moment.
CHILD = textwrap.dedent(
    """\
    import os, sys, time
    from pathlib import Path
    from hitl_vault import Vault

    root, request_id, moment, marker = sys.argv[1:5]
    real = os.replace

    def replace(src, dst):
        if str(src).endswith(".hitl-tmp") and ".old." not in str(src):
            if moment == "after":
                real(src, dst)
            Path(marker).write_text("there")
            time.sleep(120)
        real(src, dst)

    os.replace = replace
    with Vault(root) as vault:
        vault.reject(request_id, by="alice", reason="no")
    """
)


def temp_files(root: Path) -> list[Path]:
    """The temp files of writes: beside the notes, and new notes' in ``.hitl/new/``."""
    staging = root / ".hitl" / "new"
    return sorted(
        p
        for p in root.rglob("*.hitl-tmp")
        if p.parent == staging or ".hitl" not in p.relative_to(root).parts
    )


def pending(root: Path) -> tuple[Vault, str, Path]:
    init_vault(root)
    vault = Vault(root)
    req = vault.submit("payment", {"amount": 1500}, requested_by="bot")
    assert req.path is not None
    return vault, req.id, req.path


@pytest.mark.process
@pytest.mark.parametrize("moment", ["before", "after"])
def test_a_writer_killed_while_swapping_the_note_leaves_nothing_after_run_once(
    tmp_path: Path, moment: str
) -> None:
    """A process SIGKILLed right before or after os.replace of the note: run --once removes
    its temp file and the note's second name, and the note shows the rejection."""
    root = tmp_path / "vault"
    vault, rid, note = pending(root)
    marker = tmp_path / "at-the-moment"
    with vault:
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(root), rid, moment, str(marker)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            eventually(marker.exists, 30)
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
        left = [p.name for p in temp_files(root)]
        assert any(".old." in name for name in left), left  # what the crash left
        assert len(left) == (2 if moment == "before" else 1), left
        vault.run(once=True)
        assert temp_files(root) == []
        moved = root / "Rejected" / note.name
        assert "status: rejected" in moved.read_text(encoding="utf-8")
        assert vault.get(rid).status is Status.REJECTED
        assert vault.engine.journal.attention() == []


def test_a_second_name_holding_someone_elses_save_is_listed_never_deleted(tmp_path: Path) -> None:
    """A leftover second name of the note holding bytes nobody recorded (a save that could not
    be put back) stays, listed under Needs attention saying what to do, until deleted."""
    root = tmp_path / "vault"
    vault, rid, note = pending(root)
    with vault:
        saved = note.read_bytes().replace(b"status: pending", b"status: approved")
        digest = hashlib.sha256(note.read_bytes()).hexdigest()[:16]  # what the writer read
        named = note.with_name(f".{note.name}.0badf00d-{digest}.old.hitl-tmp")
        unnamed = note.with_name(f".{note.name}.0ddba11a.old.hitl-tmp")  # an older version's
        named.write_bytes(saved)
        unnamed.write_bytes(saved + b"\nmy notes\n")
        vault.run(once=True)
        assert named.read_bytes() == saved and unnamed.exists()
        listed = {a.path: a.message for a in vault.engine.journal.attention()}
        for leftover in (named, unnamed):
            message = listed[f"Pending_Approval/{leftover.name}"]
            assert f"a copy of the note Pending_Approval/{note.name}" in message
            assert "may hold a save" in message and "then delete this file" in message
        assert vault.get(rid).status is Status.PENDING  # nothing in it was acted on
        named.unlink()
        unnamed.unlink()
        vault.run(once=True)
        assert vault.engine.journal.attention() == []


def test_leftovers_holding_what_was_read_or_recorded_are_removed_at_start(tmp_path: Path) -> None:
    """Second names holding the bytes the writer read, the bytes the journal recorded, or
    the note itself (a hard link), and new content of any age: all removed at start."""
    root = tmp_path / "vault"
    vault, _, note = pending(root)
    with vault:
        data = note.read_bytes()
        digest = hashlib.sha256(data).hexdigest()[:16]
        read = note.with_name(f".{note.name}.00000001-{digest}.old.hitl-tmp")
        recorded = note.with_name(f".{note.name}.00000002.old.hitl-tmp")
        linked = note.with_name(f".{note.name}.00000003.old.hitl-tmp")
        fresh = note.with_name(f".{note.name}.00000004.hitl-tmp")
        read.write_bytes(data)
        recorded.write_bytes(data)
        os.link(note, linked)
        fresh.write_bytes(data.replace(b"status: pending", b"status: approved"))
        vault.run(once=True)
        assert temp_files(root) == []
        assert note.read_bytes() == data
        assert vault.engine.journal.attention() == []


def test_after_start_only_leftovers_older_than_a_live_write_are_touched(tmp_path: Path) -> None:
    """On a later rescan a young temp file may be a live writer's in another process: it is
    left alone; one older than the age is removed."""
    root = tmp_path / "vault"
    vault, _, note = pending(root)
    with vault:
        young = note.with_name(f".{note.name}.0000000a.hitl-tmp")
        old = note.with_name(f".{note.name}.0000000b.hitl-tmp")
        linked = note.with_name(f".{note.name}.0000000c.old.hitl-tmp")
        young.write_bytes(b"new content")
        old.write_bytes(b"new content")
        os.link(note, linked)
        an_hour_ago = time.time() - 3600
        os.utime(old, (an_hour_ago, an_hour_ago))
        leftovers = Leftovers(root, vault.engine.journal, age=timedelta(minutes=1))
        assert leftovers.clear(vault.engine.now()) is True
        assert young.exists() and linked.exists() and not old.exists()
        later = Leftovers(root, vault.engine.journal, wall_clock=lambda: time.time() + 120)
        later.clear(vault.engine.now())
        assert temp_files(root) == [] and note.exists()


def test_a_writer_whose_temp_file_a_starting_daemon_removed_writes_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A daemon starting up removes a live writer's temp file (it looks like a crash's): the
    new note is written again, and an update is retried, never a FileNotFoundError."""
    real = durable._write_temp
    taken: list[str] = []

    def taken_once(folder: Path, name: str, data: bytes, mode: int | None) -> Path:
        tmp = real(folder, name, data, mode)
        if len(taken) < 2 and name not in taken:  # the first temp file of each note
            taken.append(name)
            Leftovers(root, vault.engine.journal).clear(vault.engine.now(), starting=True)
            assert not tmp.exists()
        return tmp

    root = tmp_path / "vault"
    init_vault(root)
    with Vault(root) as vault:
        monkeypatch.setattr(durable, "_write_temp", taken_once)
        req = vault.submit("payment", {"amount": 1500}, requested_by="bot")
        assert req.path is not None and "status: pending" in req.path.read_text(encoding="utf-8")
        taken.clear()
        assert vault.reject(req.id, by="alice").status is Status.REJECTED
        assert taken  # the update's temp file was taken too
        note = tmp_path / "vault" / "Rejected" / req.path.name
        assert "status: rejected" in note.read_text(encoding="utf-8")
        assert temp_files(tmp_path / "vault") == []
        assert vault.engine.journal.attention() == []


def test_a_new_note_appears_whole_and_no_temp_file_comes_and_goes_beside_it(
    tmp_path: Path,
) -> None:
    """A sync tool (or any watcher) of a request folder sees a new note appear once, whole:
    its content was written in ``.hitl/new/`` and linked into place."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler
    from watchdog.observers import Observer

    root = tmp_path / "vault"
    init_vault(root)
    seen: list[str] = []

    class Names(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            seen.append(Path(str(event.src_path)).name)

    observer = Observer()
    observer.schedule(Names(), str(root / "Pending_Approval"))
    observer.start()
    try:
        with Vault(root) as vault:
            req = vault.submit("payment", {"amount": 1500}, requested_by="bot")
        assert req.path is not None
        eventually(lambda: req.path is not None and req.path.name in seen, 10)
        made = {p.name for p in (root / "Pending_Approval").iterdir()} - {"_README.md"}
    finally:
        observer.stop()
        observer.join(10)
    assert made == {req.path.name}
    assert not [name for name in seen if name.endswith(".hitl-tmp")], seen
    assert list((root / ".hitl" / "new").iterdir()) == []


def test_new_content_a_crash_left_in_the_staging_folder_is_removed_at_start(
    tmp_path: Path,
) -> None:
    """New content is hitl-vault's own (the journal has it): a crash's leftover in
    ``.hitl/new/`` goes at the next start, and the note stands."""
    root = tmp_path / "vault"
    vault, _, note = pending(root)
    with vault:
        left = root / ".hitl" / "new" / f".{note.name}.0000000d.hitl-tmp"
        left.write_bytes(note.read_bytes())
        assert temp_files(root) == [left]
        vault.run(once=True)
        assert temp_files(root) == [] and note.exists()
        assert vault.engine.journal.attention() == []


def test_a_new_note_is_written_beside_itself_where_the_staging_folder_cannot_be_used(
    tmp_path: Path,
) -> None:
    """No staging folder (its parent missing), or one on another filesystem: the note is
    written as before, its temp file beside it, and nothing is left anywhere."""
    folder = tmp_path / "notes"
    folder.mkdir()
    durable.write_note(folder / "a.md", b"a\n", None, "a.md", staging=tmp_path / "no" / "new")
    assert (folder / "a.md").read_bytes() == b"a\n" and not (tmp_path / "no").exists()
    assert os.listdir(folder) == ["a.md"]  # its temp file beside it, gone
    elsewhere = Path("/dev/shm")
    if not elsewhere.is_dir() or elsewhere.stat().st_dev == folder.stat().st_dev:
        pytest.skip("no second filesystem here to stage on")
    staging = elsewhere / f"hitl-vault-test-{os.getpid()}"
    try:
        durable.write_note(folder / "b.md", b"b\n", None, "b.md", staging=staging)
        assert (folder / "b.md").read_bytes() == b"b\n"
        assert list(staging.iterdir()) == [] and sorted(os.listdir(folder)) == ["a.md", "b.md"]
    finally:
        for p in staging.glob("*"):
            p.unlink()
        staging.rmdir()
