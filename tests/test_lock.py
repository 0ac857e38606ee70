"""The daemon lock: one daemon per vault, whatever sits at (or vanished from) daemon.lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_vault import Vault
from hitl_vault.errors import DaemonRunningError
from hitl_vault.journal.lock import DaemonLock, daemon_running
from hitl_vault.journal.sqlite import Journal
from hitl_vault.model import Status
from hitl_vault.times import utcnow

from .helpers import DaemonProcess, VaultHelper, returns_within


@pytest.fixture
def lock_path(vault_path: Path) -> Path:
    return vault_path / ".hitl" / "daemon.lock"


@pytest.fixture
def held(lock_path: Path) -> Iterator[DaemonLock]:
    lock = DaemonLock(lock_path).acquire()
    yield lock
    lock.release()


def test_a_second_acquire_in_the_same_process_names_the_holder(
    lock_path: Path, held: DaemonLock
) -> None:
    """A second DaemonLock on the same vault raises DaemonRunningError naming the holder's pid."""
    with pytest.raises(DaemonRunningError, match=rf"pid {os.getpid()} on "):
        DaemonLock(lock_path).acquire()
    assert daemon_running(lock_path)


def test_deleting_the_lock_file_does_not_free_the_lock(lock_path: Path) -> None:
    """With daemon.lock deleted the vault stays locked; after release it is free again."""
    first = DaemonLock(lock_path).acquire()
    try:
        lock_path.unlink()
        with pytest.raises(DaemonRunningError, match="unknown process"):
            DaemonLock(lock_path).acquire()
        assert daemon_running(lock_path)
    finally:
        first.release()
    assert not daemon_running(lock_path)
    again = DaemonLock(lock_path).acquire()
    try:
        assert f"pid {os.getpid()} on " in lock_path.read_text()
        assert daemon_running(lock_path)
    finally:
        again.release()
    assert not daemon_running(lock_path)


@pytest.mark.process
def test_a_second_daemon_is_refused_after_the_lock_file_is_deleted(tmp_path: Path) -> None:
    """`rm .hitl/daemon.lock` under a running daemon does not let `run --once` start beside it."""
    helper = VaultHelper(tmp_path / "vault")  # not made yet: `init` makes it
    vault = helper.root
    made = helper.hitl("init", script=True)
    assert made.returncode == 0, made.stderr
    with DaemonProcess(vault) as first:
        (vault / ".hitl" / "daemon.lock").unlink()
        second = helper.hitl("run", "--once", script=True)
        assert second.returncode != 0, second.stderr
        assert "another hitl-vault daemon is already running" in second.stderr
        assert "unknown process" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.proc is not None and first.proc.poll() is None
        assert first.stop() == 0


@pytest.mark.process
def test_a_fifo_at_the_lock_path_blocks_nothing(helper: VaultHelper, lock_path: Path) -> None:
    """A FIFO at daemon.lock: daemon_running, `approve` and acquire all return at once."""
    submitted = helper.hitl("submit", "payment", "-p", "amount=1500", "-p", "recipient=a@b.c",
                            "--json", script=True)  # fmt: skip
    assert submitted.returncode == 0, submitted.stderr
    request = json.loads(submitted.stdout)
    assert request["status"] == "pending"
    lock_path.parent.mkdir(exist_ok=True)
    if lock_path.exists():
        lock_path.unlink()
    os.mkfifo(lock_path)

    assert returns_within(lambda: daemon_running(lock_path), "daemon_running on a FIFO") is False
    approved = helper.hitl("approve", request["id"], "--by", "alice", timeout=30, script=True)
    assert approved.returncode == 0, approved.stderr
    assert approved.stdout == f"{request['id']} approved\n"

    lock = returns_within(lambda: DaemonLock(lock_path).acquire(), "acquire beside a FIFO")
    try:
        assert returns_within(lambda: daemon_running(lock_path), "daemon_running, locked")
        with pytest.raises(DaemonRunningError, match="unknown process"):
            returns_within(lambda: DaemonLock(lock_path).acquire(), "a second acquire")
    finally:
        lock.release()
    assert os.path.exists(lock_path) and not lock_path.is_file()  # a human's FIFO is left alone


@pytest.mark.parametrize("kind", ["folder", "symlink"])
def test_a_folder_or_symlink_at_the_lock_path_is_left_alone(
    tmp_path: Path, lock_path: Path, kind: str
) -> None:
    """A folder or a symlink at daemon.lock neither breaks the lock nor gets written through."""
    target = tmp_path / "elsewhere.txt"
    target.write_text("keep me\n")
    lock_path.parent.mkdir(exist_ok=True)
    if kind == "folder":
        lock_path.mkdir()
    else:
        lock_path.symlink_to(target)
    lock = DaemonLock(lock_path).acquire()
    try:
        assert daemon_running(lock_path)
        with pytest.raises(DaemonRunningError, match="unknown process"):
            DaemonLock(lock_path).acquire()
    finally:
        lock.release()
    assert not daemon_running(lock_path)
    assert target.read_text() == "keep me\n"


def test_the_journal_works_while_the_state_folder_is_locked(
    vault_path: Path, lock_path: Path
) -> None:
    """SQLite's own locks do not collide with the flock on .hitl/: the journal opens and writes."""
    Journal(lock_path.parent / "journal.db").close()  # a daemon opens its journal, then locks
    held = DaemonLock(lock_path).acquire()
    try:
        journal = returns_within(lambda: Journal(lock_path.parent / "journal.db"), "Journal()")
        try:
            write = returns_within(lambda: journal.flag("x.md", "broken", utcnow()), "a write")
            assert write is True
            assert [a.path for a in journal.attention()] == ["x.md"]
        finally:
            journal.close()
        with Vault(vault_path) as vault:
            request = returns_within(lambda: vault.submit("payment", {"amount": 1500}), "submit")
            assert vault.engine.journal.status_of(request.id) is Status.PENDING
        assert daemon_running(lock_path)
    finally:
        held.release()


@pytest.mark.process
def test_the_module_imports_and_locks_without_fcntl(tmp_path: Path) -> None:
    """With fcntl missing and sys.platform "win32", lock.py imports and locks through msvcrt."""
    script = textwrap.dedent(
        """
        import importlib, sys, types
        from pathlib import Path
        import hitl_vault.vault  # the rest of the package, imported as usual

        held = {}
        def locking(fd, mode, nbytes):
            key = Path(f"/proc/self/fd/{fd}").resolve()
            if mode == msvcrt.LK_NBLCK:
                if key in held:
                    raise OSError(36, "Resource deadlock avoided")
                held[key] = fd
            elif mode == msvcrt.LK_UNLCK:
                del held[key]
        msvcrt = types.ModuleType("msvcrt")
        msvcrt.LK_NBLCK, msvcrt.LK_UNLCK, msvcrt.locking = 2, 0, locking

        sys.modules.pop("hitl_vault.journal.lock")
        sys.modules["fcntl"] = None
        sys.modules["msvcrt"] = msvcrt
        sys.platform = "win32"
        lock = importlib.import_module("hitl_vault.journal.lock")
        path = Path(sys.argv[1]) / ".hitl" / "daemon.lock"
        first = lock.DaemonLock(path).acquire()
        assert held and lock.daemon_running(path)
        try:
            lock.DaemonLock(path).acquire()
        except lock.DaemonRunningError as e:
            assert "pid " in str(e), e
        else:
            raise AssertionError("a second acquire succeeded")
        first.release()
        assert not held and not lock.daemon_running(path)
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert (out.returncode, out.stdout, out.stderr) == (0, "ok\n", "")
