"""How soon the daemon's loop steps after what it hears (hitl_vault/daemon/wakes.py): word of
the journal's writes is gathered for a moment, an approval is not (someone waits to see it
run)."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hitl_vault import Vault, durable
from hitl_vault.daemon.loop import Daemon
from hitl_vault.daemon.wakes import Wakes
from hitl_vault.model import Status
from hitl_vault.notes import sync
from hitl_vault.notes.written import WrittenHere

from .helpers import Clock, eventually, set_status


def test_an_approval_heard_from_the_feed_wakes_the_loop_at_once(
    clocked_vault: Vault, daemon: Daemon
) -> None:
    """A new request heard from the feed (the service submits in the daemon's process) waits
    to be gathered with the rest of a stream of submits; an approval asks for a step at once,
    so the action starts without the gathering's delay."""
    daemon.wakes.begin()
    request = clocked_vault.submit("payment", {"amount": 1500})
    assert daemon.wakes.wanted == "later"  # its note already shows it
    clocked_vault.approve(request.id, by="alice")
    assert daemon.wakes.wanted == "now"


def test_a_submit_in_the_daemons_process_leaves_it_no_note_to_check(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """The service submits in the daemon's process and writes each new note whole after
    journaling it: hearing the creation, the daemon has nothing to check in that note once
    quiet (a journal query, a read and a digest a submit). A request whose note another
    process wrote is still checked (its maker may have died before writing it)."""
    ours = clocked_vault.submit("payment", {"amount": 1500})
    with Vault(clocked_vault.root, clock=clock) as other:  # its own engine: another writer
        theirs = other.submit("payment", {"amount": 1600})
    clocked_vault.engine.publish()  # the daemon's engine reads the other's entry
    daemon.followed.act(clock.now)
    assert theirs.id in daemon.quiet.waiting
    assert ours.id not in daemon.quiet.waiting
    # Anything after the creation is news again: the note is to show it once quiet.
    clocked_vault.approve(ours.id, by="alice")
    daemon.followed.act(clock.now)
    assert ours.id in daemon.quiet.waiting


def test_what_can_wait_is_gathered_until_something_sooner_comes() -> None:
    """Words that can wait (:meth:`Wakes.later`) are gathered for the patience the daemon
    allows them, ended at once by a file saved or the journal written by another process."""
    wakes = Wakes(gather=0.01, patience=0.05)
    wakes.later()
    assert wakes.wait(None)  # over once the patience is
    wakes.begin()
    patient = Wakes(gather=0.01, patience=600)
    patient.later()
    woken = threading.Timer(0.05, patient.soon)
    woken.start()
    started = time.monotonic()
    assert patient.wait(None)
    assert time.monotonic() - started < 300  # the soon word ended the ten minutes' gathering
    woken.join()


def test_a_note_this_process_wrote_wakes_nothing_and_a_save_over_it_wakes_at_once(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """In ``serve`` the service writes each new request's note in the daemon's process: its
    file events are no news (the journal has those bytes) and wake no step, and the request
    leaves no wake-up behind for its note. A human's save over it, even one made at once
    (same size, same clock tick), is news: a step at once, and the decision counts."""
    request = clocked_vault.submit("payment", {"amount": 1500})
    note = clocked_vault.root / "Pending_Approval" / f"{request.id}.md"
    daemon.run_once(clock.now)  # what the feed said of the submit
    daemon.wakes.begin()
    daemon.notice(note)  # the events of the service's own write
    assert daemon.wakes.wanted is None
    assert daemon.quiet.next_wake(clock.now) is None  # no look at the note later, either
    set_status(note, "approved")
    daemon.notice(note)
    assert daemon.wakes.wanted == "now"
    daemon.run_once(clock.now)
    eventually(lambda: ran == [request.id])


def test_our_write_is_ours_from_the_moment_its_bytes_land(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The watcher's thread hears a note the moment it lands, while the writing thread is
    still in its syscalls: the service's new note, and the daemon's own move of a decided
    note, must be known as ours by then, or every submit costs the daemon a look."""
    landed: list[tuple[str, bool]] = []

    def heard_at_once(write: Callable[..., None], dest: int) -> Callable[..., None]:
        def landing(*args: Any, **options: Any) -> None:
            write(*args, **options)
            path = args[dest]
            landed.append((path.parent.name, daemon.looker.wants(path)))

        return landing

    monkeypatch.setattr(sync, "write_note", heard_at_once(durable.write_note, 0))
    monkeypatch.setattr(sync, "move_note", heard_at_once(durable.move_note, 2))
    request = clocked_vault.submit("payment", {"amount": 1500})
    note = clocked_vault.root / "Pending_Approval" / f"{request.id}.md"
    set_status(note, "rejected")
    daemon.notice(note)  # a human's save: journaled at once, moved once quiet
    daemon.run_once(clock.now)
    daemon.run_once(clock.advance(timedelta(minutes=1)))
    assert clocked_vault.get(request.id).status is Status.REJECTED
    assert ("Pending_Approval", False) in landed and ("Rejected", False) in landed
    assert all(not wanted for _, wanted in landed), landed


def test_a_save_of_other_bytes_over_our_write_is_never_taken_for_ours(tmp_path: Path) -> None:
    """Content decides, not times: the same size written in the same clock tick still
    counts as someone's save, and so does a note that is gone."""
    written = WrittenHere()
    note = tmp_path / "r1.md"
    note.write_bytes(b"status: pending\n")
    written.wrote(note, b"status: pending\n")
    assert written.holds_ours(note)
    note.write_bytes(b"status: PENDING\n")  # same length, same tick
    assert not written.holds_ours(note)
    note.unlink()
    assert not written.holds_ours(note)
    assert written.knows(note) and not written.knows(tmp_path / "r2.md")


def test_an_inbox_that_appears_with_proposals_in_it_is_taken_at_once(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, tmp_path: Path
) -> None:
    """The Inbox synced in whole, a proposal already inside: the folder's own event is all
    the watcher reports, and the daemon looks at what it holds (not at the next rescan)."""
    inbox = clocked_vault.root / "Inbox"
    shutil.rmtree(inbox, ignore_errors=True)
    daemon.run_once(clock.now)  # (the first step's rescan is behind it)
    synced = tmp_path / "Inbox"
    synced.mkdir()
    (synced / "rent.json").write_text('{"action": "payment", "params": {"amount": 1600}}')
    synced.rename(inbox)
    daemon.notice(inbox)
    daemon.run_once(clock.now)
    assert [r.action for r in clocked_vault.list()] == ["payment"]


def test_a_copy_of_a_moved_note_that_comes_back_is_looked_at(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """The daemon moved a rejected note to Rejected/; a sync or a checkout then brings the
    old pending copy back to Pending_Approval/: that is news (it is flagged or put right),
    even though this process once wrote those very bytes there."""
    request = clocked_vault.submit("payment", {"amount": 1500})
    pending = clocked_vault.root / "Pending_Approval" / f"{request.id}.md"
    old = pending.read_bytes()
    clocked_vault.reject(request.id, by="alice")  # no daemon holds the lock: moved at once
    assert not pending.exists()
    pending.write_bytes(old)
    assert daemon.looker.wants(pending)


def test_the_journal_changing_wakes_the_daemon_for_another_writer_only(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """A commit shows as a change of the journal's -wal. One made through the daemon's own
    connection (the service in its process) is told through the feed and wakes nothing
    here; one made by any other connection (a CLI, a script's Vault) wakes the daemon."""
    wal = clocked_vault.root / ".hitl" / "journal.db-wal"
    daemon.notice(wal)  # (the first look has nothing to compare with)
    clocked_vault.submit("payment", {"amount": 1500})  # this connection (the feed tells it)
    daemon.wakes.begin()
    daemon.notice(wal)
    assert daemon.wakes.wanted is None
    with Vault(clocked_vault.root) as other:  # another connection, as another process's
        other.submit("payment", {"amount": 1600})
    daemon.notice(wal)
    assert daemon.wakes.wanted == "soon"
    daemon.wakes.begin()
    daemon.notice(clocked_vault.root / ".hitl" / "journal.db")  # anything else: may be news
    assert daemon.wakes.wanted == "soon"


def test_a_stop_just_before_a_step_begins_is_not_waited_past() -> None:
    """SIGTERM between the loop's look at "stopping" and its next step: the step's start
    clears what was asked, yet the wait after it returns at once (it used to sleep until the
    next timed step, minutes on a quiet vault, and the daemon outlived its service manager's
    patience)."""
    wakes = Wakes()
    wakes.finish()  # the stop, as Daemon.stop asks for it
    wakes.begin()  # the step the loop had already decided to take
    assert wakes.wait(30) is True  # woken, not timed out
