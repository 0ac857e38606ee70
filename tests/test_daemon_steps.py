"""The daemon's step as a whole: what it tells Dashboard.md at once, which path queues an
approval, and when each part says the daemon must next wake (all with injected time)."""

from __future__ import annotations

import shutil
import subprocess
import traceback
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from hitl_vault import Request, Status, Vault
from hitl_vault.daemon.loop import RESCAN_EVERY, Daemon
from hitl_vault.errors import JournalUnavailableError

from .helpers import TEMPLATE_QUIET, Clock, VaultHelper, ended, eventually, set_status


@contextmanager
def refusing_new_files(folder: Path) -> Iterator[None]:
    """``chattr +i``: a folder even root may not add a file to (skips where the file system
    cannot). The tests run as root, whom ``chmod`` does not stop."""
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)]).returncode != 0:
        pytest.skip("this file system cannot make a folder refuse new files")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


# --- Needs attention, at once ----------------------------------------------------------------


@pytest.mark.process  # chattr, to make a folder refuse new files
def test_a_move_the_system_refuses_is_on_the_dashboard_in_the_same_step_and_stays(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """A note that may not move into Done/ is on Dashboard.md after the step that failed (even
    under a second after the last rewrite), and stays there when the daemon sees its own
    half-done write; it leaves once the move is made."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 1500})
    vault.approve(request.id, by="alice")
    daemon.run_once(clock.now)
    eventually(lambda: ran == [request.id])
    ended(daemon, clock, request.id, Status.EXECUTED)
    note = vault.root / "Approved" / f"{request.id}.md"
    with refusing_new_files(vault.root / "Done"):
        clock.advance(TEMPLATE_QUIET - timedelta(milliseconds=500))
        proposal = vault.root / "Inbox" / "rent.json"
        proposal.write_text('{"action": "payment", "params": {"amount": 1600}}')
        daemon.notice(proposal)
        daemon.run_once(clock.now)  # a new request: Dashboard.md is rewritten ...
        daemon.run_once(clock.advance(timedelta(milliseconds=600)))  # ... 0.6 s before this
        shown = helper.attention()  # no step in between
        assert f"Approved/{request.id}.md: cannot bring the note up to date" in shown
        assert "Operation not permitted" in shown and "may write" in shown

        daemon.notice(note)  # the new content was written in place before the move failed
        daemon.run_once(clock.advance(timedelta(milliseconds=100)))
        assert f"Approved/{request.id}.md" in helper.attention(daemon, clock)
    daemon.run_once(clock.advance(timedelta(seconds=30)))  # the retry of the refused write
    assert (vault.root / "Done" / f"{request.id}.md").exists()
    assert "Nothing needs attention" in helper.attention(daemon, clock)


# --- one path into the worker queue ------------------------------------------------------


def test_an_approval_whose_commit_failed_leaves_nothing_queued_and_runs_once_on_the_retry(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """An approval saved in a note is queued from the journal's feed and claimed in the commit
    that records it: when that commit fails (a disk I/O error, injected), nothing stays
    queued; the retry runs it, once."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 1500})
    daemon.run_once(clock.now)
    assert request.path is not None
    real, calls = daemon._claim, []

    def failing_commit() -> list[tuple[Request, object]]:  # the fault this machine cannot make
        calls.append(1)
        if len(calls) == 1:
            raise JournalUnavailableError(vault.root / ".hitl" / "journal.db", "disk I/O error")
        return real()  # type: ignore[return-value]

    daemon._claim = failing_commit  # type: ignore[method-assign,assignment]
    set_status(request.path, "approved", decided_by="alice")
    daemon.notice(request.path)
    daemon.run_once(clock.now)
    assert vault.get(request.id).status is Status.PENDING
    assert not daemon.actions.waiting, "a decision that was rolled back is in the queue"

    daemon.run_once(clock.advance(timedelta(seconds=1)))
    eventually(lambda: ran == [request.id])
    ended(daemon, clock, request.id, Status.EXECUTED)
    daemon.run_once(clock.advance(timedelta(seconds=5)))
    assert ran == [request.id]


# --- each part says when the daemon must next wake ----------------------------------------------


def test_the_daemon_wakes_for_the_soonest_time_any_part_asks_for(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """The next rescan, an expiry, the rules file quiet after an edit, a decided note quiet
    at last: after each step the daemon's next wake is the soonest its parts wait for."""
    vault = clocked_vault
    daemon.run_once(clock.now)
    start = clock.now
    assert daemon.next_wake(start) == start + RESCAN_EVERY  # nothing else waits

    request = vault.submit("payment", {"amount": 1500}, timeout="1m")
    assert request.expires is not None and request.path is not None
    daemon.run_once(clock.advance(timedelta(seconds=5)))
    assert daemon.next_wake(clock.now) == request.expires

    rules = vault.root / "hitl-vault.yaml"
    rules.write_text(rules.read_text())
    daemon.notice(rules)
    daemon.run_once(clock.advance(timedelta(seconds=5)))
    assert daemon.next_wake(clock.now) == clock.now + TEMPLATE_QUIET  # reloaded once quiet
    daemon.run_once(clock.advance(TEMPLATE_QUIET))
    assert daemon.next_wake(clock.now) == request.expires

    set_status(request.path, "approved", decided_by="alice")
    daemon.notice(request.path)
    daemon.run_once(clock.advance(timedelta(seconds=5)))
    assert daemon.next_wake(clock.now) == clock.now + TEMPLATE_QUIET  # the note, once quiet
    eventually(lambda: ran == [request.id])
    ended(daemon, clock, request.id, Status.EXECUTED)
    daemon.run_once(clock.advance(TEMPLATE_QUIET))
    assert (vault.root / "Done" / f"{request.id}.md").exists()
    assert daemon.next_wake(clock.now) == start + RESCAN_EVERY


def test_a_part_added_to_the_daemon_is_woken_for_without_the_loop_knowing_it(
    daemon: Daemon, clock: Clock
) -> None:
    """A new part brings its own deadline: the loop wakes for it, however many others wait."""
    daemon.run_once(clock.now)
    soon = clock.now + timedelta(seconds=7)

    class Reports:
        def next_wake(self, now: datetime) -> datetime | None:
            return soon if now < soon else None

    daemon.parts.append(Reports())
    assert daemon.next_wake(clock.now) == soon
    assert daemon.next_wake(soon) == clock.now + RESCAN_EVERY


@pytest.mark.process  # chattr, to make a folder refuse new files
def test_a_refused_move_made_by_hand_while_no_daemon_ran_leaves_the_dashboard_at_the_start(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """The daemon may not move a note and stops; a human moves it into Done/ by hand. The next
    daemon finds the note where it belongs and takes the flag off Dashboard.md."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 1500})
    vault.approve(request.id, by="alice")
    daemon.run_once(clock.now)
    eventually(lambda: ran == [request.id])
    ended(daemon, clock, request.id, Status.EXECUTED)
    with refusing_new_files(vault.root / "Done"):
        daemon.run_once(clock.advance(TEMPLATE_QUIET))
    assert f"Approved/{request.id}.md" in helper.attention()
    daemon.close()
    note = vault.root / "Approved" / f"{request.id}.md"
    note.rename(vault.root / "Done" / note.name)  # what the flag asked for, done by hand

    with Daemon(vault.engine, clock=clock) as restarted:
        restarted.run_once(clock.advance(timedelta(seconds=1)))
        assert "Nothing needs attention" in helper.attention()


# --- which looks hold the journal ------------------------------------------------------------


def test_a_note_its_maker_wrote_elsewhere_is_looked_at_without_holding_the_journal(
    vault_path: Path,
    clocked_vault: Vault,
    daemon: Daemon,
    clock: Clock,
    ran: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process's submit (a script, the CLI) lands a note holding exactly what its
    journal entry recorded: the daemon's look finds nothing to journal, and opens no batch
    for it (a batch holds the journal from everyone else, the service's threads too, while
    it lasts). A human's save in that note is looked at in one, and counts."""
    batch, look, looks = daemon.journal.batch, daemon.looker.look, list[Path]()
    for_looks: list[bool] = []  # each batch the daemon opened: was it for a look?

    def spied() -> AbstractContextManager[None]:
        for_looks.append(any(f.name == "_look_safely" for f in traceback.extract_stack()))
        return batch()

    def looking(path: Path, now: datetime) -> bool:
        looks.append(path)
        return look(path, now)

    monkeypatch.setattr(daemon.journal, "batch", spied)
    monkeypatch.setattr(daemon.looker, "look", looking)
    daemon.run_once(clock.now)
    with Vault(vault_path, clock=clock) as elsewhere:
        request = elsewhere.submit("payment", {"amount": 1500})
    note = clocked_vault.root / "Pending_Approval" / f"{request.id}.md"
    for_looks.clear()
    looks.clear()
    daemon.notice(note)
    assert daemon.run_once(clock.now)  # looked at: the dashboard shows the new request
    assert looks == [] and not any(for_looks) and daemon.quiet.knows(note)
    set_status(note, "approved")
    daemon.notice(note)
    daemon.run_once(clock.now)
    assert looks == [note] and any(for_looks)
    ended(daemon, clock, request.id, Status.EXECUTED)
    assert ran == [request.id]
