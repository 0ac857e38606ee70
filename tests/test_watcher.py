"""The daemon's file watcher (hitl_vault/watcher.py, FolderWatcher): the vault's own folders
and nothing else, a folder that appears later watched from then on, one that goes away
dropped. Each test runs on both ways of watching: inotify read directly (Linux) and
watchdog's observer (every platform)."""

from __future__ import annotations

import os
import shutil
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_vault import watcher
from hitl_vault.watcher import FolderWatcher

from .helpers import eventually

FOLDERS = ("Pending_Approval", "Inbox")


class Seen:
    """The paths a watcher reported, from its thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.paths: list[Path] = []

    def __call__(self, path: Path) -> None:
        with self._lock:
            self.paths.append(path)

    def clear(self) -> None:
        with self._lock:
            self.paths.clear()

    def __contains__(self, path: Path) -> bool:
        with self._lock:
            return path in self.paths


@pytest.fixture(params=["inotify", "observer"])
def watching(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Path, Seen]]:
    if request.param == "observer":
        monkeypatch.setattr(sys, "platform", "darwin")  # (no inotify there: the observer)
    elif not sys.platform.startswith("linux"):
        pytest.skip("inotify is Linux's")
    root = tmp_path / "vault"
    (root / "Pending_Approval").mkdir(parents=True)
    (root / "Other" / "deep").mkdir(parents=True)
    seen = Seen()
    with FolderWatcher(root, FOLDERS, seen, ignored=(".hitl-tmp",)) as watching:
        inotify = isinstance(watching._backend, watcher._InotifyBackend)
        assert inotify == (request.param == "inotify")
        yield root, seen


def test_a_save_in_a_watched_folder_is_reported_and_the_rest_of_the_vault_is_not(
    watching: tuple[Path, Seen],
) -> None:
    """A note saved in a request folder, and the rules beside them, are reported; a note
    in a folder of the user's own (or deeper in a request folder) costs the daemon nothing."""
    root, seen = watching
    (root / "Other" / "deep" / "mine.md").write_text("mine")
    (root / "Other" / "mine.md").write_text("mine")
    (root / "Pending_Approval" / "sub").mkdir()
    (root / "Pending_Approval" / "sub" / "x.md").write_text("deeper")
    note = root / "Pending_Approval" / "r1.md"
    note.write_text("status: approved\n")
    (root / "hitl-vault.yaml").write_text("rules: []\n")
    eventually(lambda: note in seen and root / "hitl-vault.yaml" in seen)
    assert not [p for p in seen.paths if "Other" in p.parts or "sub" in p.parts[-2:-1]]


def test_the_temp_files_of_our_own_writes_are_never_reported(
    watching: tuple[Path, Seen],
) -> None:
    """A note written through a temp file (created, written, linked, deleted): only the note
    is reported, its temp file costs the daemon nothing; a folder so named still counts."""
    root, seen = watching
    tmp = root / "Pending_Approval" / ".r1.md.0a1b2c3d.hitl-tmp"
    tmp.write_text("status: pending\n")
    os.link(tmp, root / "Pending_Approval" / "r1.md")
    tmp.unlink()
    (root / "Pending_Approval" / "odd.hitl-tmp").mkdir()
    marker = root / "Pending_Approval" / "r2.md"
    marker.write_text("status: pending\n")  # last, in the same folder: reported after the rest
    eventually(lambda: marker in seen)
    assert root / "Pending_Approval" / "r1.md" in seen
    assert root / "Pending_Approval" / "odd.hitl-tmp" in seen
    assert tmp not in seen


def test_a_folder_that_appears_later_is_watched_from_then_on(
    watching: tuple[Path, Seen],
) -> None:
    """The Inbox made after the daemon started (a sync, a git checkout): the folder itself is
    reported (the daemon looks at what it already holds) and a file saved in it later too."""
    root, seen = watching
    inbox = root / "Inbox"
    inbox.mkdir()
    eventually(lambda: inbox in seen)
    proposal = inbox / "p.json"
    proposal.write_text("{}")  # watched before the folder was reported
    eventually(lambda: proposal in seen)


def test_a_folder_deleted_and_made_again_is_watched_again(watching: tuple[Path, Seen]) -> None:
    root, seen = watching
    folder = root / "Pending_Approval"
    shutil.rmtree(folder)
    eventually(lambda: folder in seen)
    seen.clear()
    folder.mkdir()
    eventually(lambda: folder in seen)  # watched again before it is reported
    note = folder / "r2.md"
    note.write_text("status: pending\n")
    eventually(lambda: note in seen)


def test_a_folder_moved_away_reports_nothing_under_its_old_name(
    watching: tuple[Path, Seen],
) -> None:
    """Pending_Approval renamed to Archive: a save in Archive is not taken for a save in
    Pending_Approval (its watch went with the move)."""
    root, seen = watching
    (root / "Pending_Approval").rename(root / "Archive")
    eventually(lambda: root / "Archive" in seen or root / "Pending_Approval" in seen)
    (root / "Archive" / "r3.md").write_text("status: approved\n")
    marker = root / "hitl-vault.yaml"
    marker.write_text("rules: []\n")
    eventually(lambda: marker in seen)
    assert root / "Pending_Approval" / "r3.md" not in seen


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="counts /proc/self/fd")
def test_starting_and_stopping_many_watchers_leaves_no_file_descriptor_open(
    tmp_path: Path,
) -> None:
    """A process that starts and stops daemons (tests, a supervisor in Python) keeps the
    same number of open files: each watcher closes its inotify instance and its wake-up pipe
    when it stops."""
    (tmp_path / "Pending_Approval").mkdir()
    seen = Seen()
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        with FolderWatcher(tmp_path, FOLDERS, seen):
            (tmp_path / "hitl-vault.yaml").write_text("rules: []\n")
    assert len(os.listdir("/proc/self/fd")) <= before


def test_a_callback_that_raises_does_not_stop_the_watching(tmp_path: Path) -> None:
    """A bug in what handles one event is logged; the next events still come, those read
    with it too (nothing may end the reading: the vault would go unwatched)."""
    (tmp_path / "Pending_Approval").mkdir()
    seen = Seen()
    first = tmp_path / "Pending_Approval" / "r1.md"

    def flaky(path: Path) -> None:
        if path == first:
            raise RuntimeError("a bug")
        seen(path)

    with FolderWatcher(tmp_path, FOLDERS, flaky):
        first.write_text("one")
        second = tmp_path / "Pending_Approval" / "r2.md"
        second.write_text("two")
        eventually(lambda: second in seen)


def test_a_folders_watch_is_forgotten_by_its_number_however_high(tmp_path: Path) -> None:
    """The kernel numbers watches on from 1 and never reuses a number soon: a folder deleted
    and made again for the 300th time is forgotten by its watch's number (compared by value:
    above 256, two equal numbers are two objects), so the next watch on it is made."""
    watches = watcher._Watches()
    folder = tmp_path / "Pending_Approval"
    number = int("300")  # (as the kernel's event reads it: another object than the first)
    watches.by_folder[folder] = (300, 300)
    assert watches.take(folder, number) == (300, 300)
    assert folder not in watches.by_folder
