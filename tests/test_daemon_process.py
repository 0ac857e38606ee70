"""A real `hitl-vault run` process on a real folder, driven as people and editors drive it."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from hitl_vault import Status, Vault
from hitl_vault.daemon.workers import INTERRUPTED

from .helpers import DaemonProcess, VaultHelper, eventually, save_by_rename, set_status

pytestmark = pytest.mark.process  # nearly every test here starts a real process


@pytest.fixture
def vault_path(vault_path: Path) -> Path:
    """The template vault, with a quick quiet period and an executor that logs every run."""
    VaultHelper(vault_path).record_runs()
    return vault_path


def test_saves_in_place_by_rename_and_by_folder_move_each_run_once(
    vault_path: Path, daemon_process: DaemonProcess, helper: VaultHelper
) -> None:
    """Approvals saved in place, by rename or by a folder move each run once; a rejection never."""
    with Vault(vault_path) as vault:
        a, b, c, d = (vault.submit("payment", {"amount": 1000 + i}) for i in range(4))
        assert a.path and b.path and c.path and d.path
        set_status(a.path, "approved", decided_by="alice")  # VS Code: truncate and rewrite
        save_by_rename(b.path, b.path.read_text().replace("status: pending", "status: Yes"))
        shutil.move(c.path, vault_path / "Approved" / c.path.name)  # drag into Approved/
        set_status(d.path, "rejected", reason="not this month")
        for r in (a, b, c):
            eventually(lambda r=r: helper.shows(r.id, Status.EXECUTED, "Done", vault=vault), 30)
        eventually(lambda: helper.shows(d.id, Status.REJECTED, "Rejected", vault=vault), 30)
        assert sorted(helper.runs()) == sorted([a.id, b.id, c.id])
        done = (vault_path / "Done" / f"{a.id}.md").read_text()
        assert "result: paid 1000" in done and "pending → approved · by alice" in done
        assert "reason: not this month" in (vault_path / "Rejected" / f"{d.id}.md").read_text()
        assert vault.verify() == []
    assert daemon_process.stop() == 0


def test_timeout_inbox_typo_and_revert(
    vault_path: Path, daemon_process: DaemonProcess, helper: VaultHelper
) -> None:
    """A real daemon times out, takes an Inbox proposal, ignores a typo, never reruns a revert."""
    with Vault(vault_path) as vault:
        late = vault.submit("payment", {"amount": 700}, timeout="1s")
        typo = vault.submit("payment", {"amount": 800})
        done = vault.submit("payment", {"amount": 900})
        assert typo.path and done.path
        (vault_path / "Inbox" / "rent.json").write_text(
            json.dumps({"action": "payment", "params": {"amount": 5}, "summary": "rent"})
        )
        set_status(typo.path, "aproved")
        set_status(done.path, "approved")
        old_approved = done.path.read_bytes()
        eventually(lambda: helper.shows(late.id, Status.TIMED_OUT, "Rejected", vault=vault), 30)
        eventually(lambda: not (vault_path / "Inbox" / "rent.json").exists(), 30)
        rent = next(r for r in vault.list() if r.summary == "rent")
        eventually(lambda: helper.shows(rent.id, Status.EXECUTED, "Done", vault=vault), 30)
        typo_note = typo.path
        eventually(lambda: 'kept pending · ignored status "aproved"' in typo_note.read_text(), 30)
        assert "status: pending" in typo_note.read_text()
        eventually(lambda: helper.shows(done.id, Status.EXECUTED, "Done", vault=vault), 30)
        # A git revert brings the approved version back where it was.
        (vault_path / "Done" / done.path.name).unlink()
        done.path.write_bytes(old_approved)
        eventually(lambda: helper.shows(done.id, Status.EXECUTED, "Done", vault=vault), 30)
        assert "pending → approved" in (vault_path / "Done" / done.path.name).read_text()
        assert sorted(helper.runs()) == sorted([rent.id, done.id])
        assert "aproved" in daemon_process.log()
    assert daemon_process.stop() == 0


def test_kill_9_mid_action_then_restart_never_runs_it_again(
    vault_path: Path, helper: VaultHelper
) -> None:
    """kill -9 mid-action: the restarted daemon marks it interrupted and never runs it again."""
    with Vault(vault_path) as vault, DaemonProcess(vault_path) as daemon:
        req = vault.submit("payment", {"amount": 1500, "hold": True})
        vault.approve(req.id, by="alice")
        eventually(lambda: (vault_path / "scripts" / f"{req.id}.started").exists(), 30)
        assert vault.engine.journal.status_of(req.id) is Status.EXECUTING
        daemon.kill()
        daemon.start()
        eventually(lambda: helper.shows(req.id, Status.FAILED, "Done", vault=vault), 30)
        assert vault.get(req.id).error == INTERRUPTED
        assert helper.runs() == [req.id]
        assert daemon.stop() == 0


def test_a_second_daemon_on_the_same_vault_exits_with_a_clear_message(
    helper: VaultHelper, daemon_process: DaemonProcess
) -> None:
    """A second `hitl-vault run` on a watched vault exits 1 saying one is already running."""
    second = helper.hitl("run", env={**os.environ, "PYTHONWARNINGS": "error"})
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert "Traceback" not in second.stderr
    assert daemon_process.proc is not None and daemon_process.proc.poll() is None


def test_watchdogs_stop_race_is_not_logged_as_an_error(caplog: pytest.LogCaptureFixture) -> None:
    """watchdog's "called when the thread is inactive" (a race as it stops) stays out of the
    daemon's log; its other errors do not."""
    import logging

    import hitl_vault.watcher  # noqa: F401  (installs the filter)

    inotify = logging.getLogger("watchdog.observers.inotify")
    with caplog.at_level(logging.ERROR):
        inotify.error("InotifyEmitter.queue_events() called when the thread is inactive")
        inotify.error("inotify watch limit reached")
    assert [r.getMessage() for r in caplog.records] == ["inotify watch limit reached"]
