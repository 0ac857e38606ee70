"""The daemon's step, ``run_once(now)``, with injected time and real files, real SQLite.

Actions run on the daemon's worker threads; tests wait for them on conditions.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import Request, Status, Vault
from hitl_vault.daemon.loop import RESCAN_EVERY, Daemon
from hitl_vault.daemon.workers import INTERRUPTED

from .helpers import (
    TEMPLATE_QUIET,
    Clock,
    VaultHelper,
    ended,
    eventually,
    returns_within,
    set_status,
)


def test_decision_runs_at_once_and_the_note_moves_once_quiet(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """An approval in the note runs at once; the note moves to Done/ only once it is quiet."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500, "recipient": "v@x.y"})
    assert req.path is not None
    daemon.run_once(clock.now)
    set_status(req.path, "approved", decided_by="alice")
    daemon.notice(req.path)
    daemon.run_once(clock.now)  # the decision is journaled and the action started in this step
    eventually(lambda: ran == [req.id])
    ended(daemon, clock, req.id, Status.EXECUTED)
    assert req.path.exists(), "a note the human just saved is not moved before it is quiet"
    done = helper.settled(daemon, clock, req.id)
    assert done.path == vault.root / "Done" / f"{req.id}.md"
    assert not req.path.exists()
    text = helper.note(req.id)
    assert "status: executed" in text
    assert 'result: "paid 1500"' in text or "result: paid 1500" in text
    moves = [line for line in text.splitlines() if line.startswith("- ") and "→" in line]
    assert [m.split(" · ")[1] for m in moves] == [
        "created → pending",
        "pending → approved",
        "approved → executing",
        "executing → executed",
    ]
    assert "by alice" in moves[1]
    assert vault.verify() == []


def test_moving_the_note_into_a_folder_is_the_decision(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """Dragging a note into Approved/ or Rejected/ decides it, as editing its status does."""
    vault = clocked_vault
    keep = vault.submit("payment", {"amount": 900})
    drop = vault.submit("payment", {"amount": 901})
    assert keep.path and drop.path
    daemon.run_once(clock.now)
    moved = vault.root / "Approved" / keep.path.name
    shutil.move(keep.path, moved)
    thrown = vault.root / "Rejected" / drop.path.name
    shutil.move(drop.path, thrown)
    daemon.notice(moved)
    daemon.notice(thrown)
    daemon.run_once(clock.now)
    eventually(lambda: ran == [keep.id])
    assert vault.engine.journal.status_of(drop.id) is Status.REJECTED
    assert helper.settled(daemon, clock, keep.id).status is Status.EXECUTED
    assert "status: rejected" in thrown.read_text()


def test_a_pending_request_times_out_at_expiry(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """A pending request times out at its expiry, not before; its note then moves to Rejected/."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500}, timeout="1h")
    daemon.run_once(clock.now)
    assert daemon.engine.journal.next_expiry() == req.expires
    daemon.run_once(clock.advance(timedelta(minutes=59)))
    assert vault.engine.journal.status_of(req.id) is Status.PENDING
    daemon.run_once(clock.advance(timedelta(minutes=1, seconds=1)))
    assert vault.engine.journal.status_of(req.id) is Status.TIMED_OUT
    final = helper.settled(daemon, clock, req.id)
    assert final.path == vault.root / "Rejected" / f"{req.id}.md"
    assert "pending → timed_out" in helper.note(req.id)
    assert ran == []


def test_an_approval_after_expiry_never_runs(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """An approval saved after the request expired never runs: it stays timed out."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500}, timeout="1h")
    assert req.path is not None
    daemon.run_once(clock.now)
    set_status(req.path, "approved")
    daemon.notice(req.path)
    daemon.run_once(clock.advance(timedelta(hours=2)))
    assert vault.engine.journal.status_of(req.id) is Status.TIMED_OUT
    helper.settled(daemon, clock, req.id)
    assert ran == []


def test_a_typo_is_never_acted_on_and_the_true_status_comes_back(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """A mistyped status is never acted on: it is flagged, and the note says pending again."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    daemon.run_once(clock.now)
    set_status(req.path, "aproved")
    daemon.notice(req.path)
    daemon.run_once(clock.now)
    assert vault.engine.journal.status_of(req.id) is Status.PENDING
    attention = helper.attention(daemon, clock)
    assert req.path.name in attention and "aproved" in attention
    daemon.run_once(clock.advance(TEMPLATE_QUIET + timedelta(seconds=1)))
    text = req.path.read_text()
    assert "status: pending" in text
    assert 'kept pending · ignored status "aproved"' in text
    assert ran == []
    assert "aproved" in helper.attention(daemon, clock)  # until a human changes the note


def test_a_reverted_status_never_runs_an_action_twice(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """A git checkout or a sync conflict brings back `status: approved` for an executed request."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    daemon.run_once(clock.now)
    set_status(req.path, "approved")
    old_bytes = req.path.read_bytes()
    daemon.notice(req.path)
    daemon.run_once(clock.now)
    done = helper.settled(daemon, clock, req.id)
    assert done.status is Status.EXECUTED and ran == [req.id]
    assert done.path is not None
    done.path.write_bytes(old_bytes)  # the old approved version, back in Done/
    req.path.write_bytes(old_bytes)  # and a copy back where it was
    daemon.notice(done.path)
    daemon.notice(req.path)
    daemon.run_once(clock.now)
    helper.settled(daemon, clock, req.id)
    assert ran == [req.id]
    assert vault.engine.journal.status_of(req.id) is Status.EXECUTED
    assert "status: executed" in done.path.read_text()


def test_edited_params_run_as_edited_and_the_history_says_what_changed(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """Params edited in the note as it is approved run as edited; the history says what changed."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500, "recipient": "v@x.y"})
    assert req.path is not None
    daemon.run_once(clock.now)
    text = req.path.read_text().replace("amount: 1500", "amount: 1000")
    req.path.write_text(text.replace("status: pending", "status: approved"))
    daemon.notice(req.path)
    daemon.run_once(clock.now)
    done = helper.settled(daemon, clock, req.id)
    assert done.params["amount"] == 1000
    assert "amount 1500 → 1000" in helper.note(req.id)


def test_editable_false_turns_an_edited_approval_into_a_rejection(
    vault_path: Path, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """With editable: false, an approval with edited params becomes a rejection; nothing runs."""
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text().replace("    timeout: 1h\n", "    timeout: 1h\n    editable: false\n")
    )
    with Vault(vault_path, clock=clock) as vault, Daemon(vault.engine, clock=clock) as daemon:

        @vault.action("payment")
        def pay(r: Request) -> str:
            ran.append(r.id)
            return "paid"

        req = vault.submit("payment", {"amount": 1500})
        assert req.path is not None
        text = req.path.read_text().replace("amount: 1500", "amount: 1000")
        req.path.write_text(text.replace("status: pending", "status: approved"))
        daemon.run_once(clock.now)
        final = helper.settled(daemon, clock, req.id)
    assert final.status is Status.REJECTED
    assert final.reason and "large-payments" in final.reason and "edit" in final.reason
    assert ran == []


def test_inbox_proposals_become_requests_and_broken_ones_stay(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """Inbox proposals become requests (an allowed one runs); a broken one stays and is flagged."""
    vault = clocked_vault
    inbox = vault.root / "Inbox"
    (inbox / "pay.md").write_text(
        "---\naction: payment\nparams:\n  amount: 2000\nsummary: Pay the rent\n"
        "requested_by: rent-bot\n---\nplease\n"
    )
    (inbox / "small.json").write_text(json.dumps({"action": "payment", "params": {"amount": 5}}))
    broken = inbox / "broken.md"
    broken.write_text("---\naction: payment\nparams: {amount: [\n---\n")
    broken_bytes = broken.read_bytes()
    daemon.run_once(clock.now)
    by_summary = {r.summary: r for r in vault.list()}
    assert by_summary["Pay the rent"].status is Status.PENDING
    assert by_summary["Pay the rent"].requested_by == "rent-bot"
    small = [r for r in vault.list() if r.params == {"amount": 5}]
    assert len(small) == 1
    eventually(lambda: ran == [small[0].id])
    assert sorted(p.name for p in inbox.iterdir()) == ["_README.md", "broken.md"]
    assert broken.read_bytes() == broken_bytes
    attention = helper.attention(daemon, clock)
    assert "Inbox/broken.md" in attention
    daemon.run_once(clock.now)
    assert len(vault.list()) == 2


def test_a_bad_rules_edit_keeps_the_old_rules_and_says_so(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, helper: VaultHelper
) -> None:
    """A broken rules edit keeps the old rules in force and is listed under Needs attention."""
    vault = clocked_vault
    rules = vault.root / "hitl-vault.yaml"
    rules.write_text(rules.read_text().replace("decision: allow", "decision: alow"))
    daemon.notice(rules)
    daemon.run_once(clock.now)
    daemon.run_once(clock.advance(vault.policy.defaults.quiet))  # reloaded once quiet
    assert vault.submit("payment", {"amount": 5}).status is Status.APPROVED
    attention = helper.attention(daemon, clock)
    assert "hitl-vault.yaml" in attention and "alow" in attention


@pytest.mark.process
def test_after_a_crash_an_interrupted_action_fails_and_an_idempotent_one_reruns(
    vault_path: Path, clock: Clock, helper: VaultHelper
) -> None:
    """After a crash an interrupted action fails; an idempotent one is run again, once."""
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text()
        + "  refund:\n    run: [python3, -c, 'print(\"refunded\")']\n    idempotent: true\n"
    )
    with Vault(vault_path, clock=clock) as vault:
        pay = vault.submit("payment", {"amount": 1500})
        refund = vault.submit("refund", {"amount": 1})
        for r in (pay, refund):
            vault.approve(r.id, by="alice")
            assert vault.engine.start_execution(r.id, by="executor") is not None
        # The process that started them died here; a new daemon starts.
        with Daemon(vault.engine, clock=clock) as daemon:
            daemon.run_once(clock.now)
            ended(daemon, clock, refund.id, Status.EXECUTED)
            failed = helper.settled(daemon, clock, pay.id)
            again = helper.settled(daemon, clock, refund.id)
    assert failed.status is Status.FAILED and failed.error == INTERRUPTED
    assert again.result == "refunded"
    assert [t.to_status for t in again.history].count(Status.EXECUTING) == 1


def test_only_what_a_worker_starts_is_claimed(vault_path: Path, clock: Clock) -> None:
    """An approval waiting for a worker stays approved: a crash never calls it interrupted.

    With one worker and two approvals, only the first is journaled ``executing``;
    the second is claimed by the step after the first ends, and each runs once.
    """
    started: list[str] = []
    first_may_end = threading.Event()
    with Vault(vault_path, clock=clock) as vault:

        @vault.action("payment")
        def pay(request: Request) -> str:
            started.append(request.id)
            if len(started) == 1:
                assert first_may_end.wait(20)
            return "paid"

        ids = [vault.submit("payment", {"amount": 1500 + i}).id for i in range(2)]
        for request_id in ids:
            vault.approve(request_id, by="alice")
        with Daemon(vault.engine, clock=clock, workers=1) as daemon:
            daemon.run_once(clock.now)
            eventually(lambda: len(started) == 1)
            statuses = {vault.get(request_id).status for request_id in ids}
            assert statuses == {Status.EXECUTING, Status.APPROVED}
            first_may_end.set()
            for request_id in ids:
                ended(daemon, clock, request_id, Status.EXECUTED)
            history = [vault.get(request_id).history for request_id in ids]
    assert started == sorted(ids)
    assert all([t.to_status for t in h].count(Status.EXECUTED) == 1 for h in history)


def test_closing_a_daemon_journals_the_outcomes_of_actions_in_flight(
    vault_path: Path, clock: Clock
) -> None:
    """A script that steps the daemon itself and closes it loses no outcome."""
    may_end = threading.Event()
    with Vault(vault_path, clock=clock) as vault:

        @vault.action("payment")
        def pay(request: Request) -> str:
            assert may_end.wait(20)
            return "paid"

        req = vault.submit("payment", {"amount": 1500})
        vault.approve(req.id, by="alice")
        with Daemon(vault.engine, clock=clock) as daemon:
            daemon.run_once(clock.now)
            assert vault.engine.journal.status_of(req.id) is Status.EXECUTING
            may_end.set()
        assert vault.get(req.id).status is Status.EXECUTED
        assert vault.get(req.id).result == "paid"


def test_run_once_stopped_by_a_signal_leaves_queued_actions_approved(
    vault_path: Path, clock: Clock
) -> None:
    """SIGTERM during ``run --once``: it returns, and nothing it had not started runs."""
    ran: list[str] = []
    with Vault(vault_path, clock=clock) as vault:
        vault.action("payment")(lambda request: ran.append(request.id))
        req = vault.submit("payment", {"amount": 1500})
        vault.approve(req.id, by="alice")
        with Daemon(vault.engine, clock=clock) as daemon:
            daemon.stop()
            returns_within(daemon.catch_up, "catch_up after stop()", timeout=20)
        assert ran == []
        assert vault.engine.journal.status_of(req.id) is Status.APPROVED


def test_a_file_in_the_way_of_a_move_is_on_the_dashboard_until_removed(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """A folder named like the note in Done/: the move waits, and Dashboard.md says why."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    in_the_way = vault.root / "Done" / req.path.name
    in_the_way.mkdir()
    set_status(req.path, "approved", decided_by="alice")
    daemon.notice(req.path)
    daemon.run_once(clock.now)
    helper.settled(daemon, clock, req.id)
    # The folder's own event counts as a touch of the note (same id): one more quiet period.
    done = helper.settled(daemon, clock, req.id)
    assert done.status is Status.EXECUTED and ran == [req.id]
    assert done.path == req.path, "the note stays where it is"
    listed = helper.attention(daemon, clock)
    assert f"cannot move it: Done/{req.path.name} already exists" in listed

    in_the_way.rmdir()
    daemon.notice(in_the_way)
    daemon.run_once(clock.advance(RESCAN_EVERY))  # the next rescan tries again
    helper.settled(daemon, clock, req.id)
    assert vault.get(req.id).path == in_the_way
    assert "cannot move it" not in helper.attention(daemon, clock)


def test_the_dashboard_lists_at_most_200_files_needing_attention(
    daemon: Daemon, clock: Clock, helper: VaultHelper
) -> None:
    """Needs attention lists at most 200 files, then says how many more there are."""
    for i in range(230):
        daemon.engine.journal.flag(f"Inbox/broken-{i:03}.md", f"broken {i}", clock.now)
    listed = helper.attention(daemon, clock)
    assert sum(line.startswith("- ") for line in listed.splitlines()) == 200
    assert "and 30 more" in listed


def test_requests_made_through_approval_are_never_run_by_the_daemon(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """A request from `requires_approval` is carried out by its requester, never by the daemon."""
    vault = clocked_vault
    handed: list[str] = []

    @vault.requires_approval("payment")
    def pay(amount: int) -> str:
        return "done by requester"

    thread = threading.Thread(target=lambda: handed.append(pay(amount=1500)))
    thread.start()
    req = eventually(lambda: vault.list(status=Status.PENDING))[0]  # type: ignore[index]
    vault.approve(req.id, by="alice")
    daemon.run_once(clock.now)
    thread.join(20)
    assert handed == ["done by requester"]
    assert ran == []
    assert vault.get(req.id).status is Status.EXECUTED


def test_an_approved_request_without_an_executor_rests_in_approved(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """An approved request whose action has no executor rests in Approved/, still approved."""
    vault = clocked_vault
    req = vault.submit("deploy", {"environment": "production"})
    vault.approve(req.id, by="alice")
    daemon.run_once(clock.now)
    daemon.run_once(clock.advance(TEMPLATE_QUIET + timedelta(seconds=1)))
    final = vault.get(req.id)
    assert final.status is Status.APPROVED
    assert final.path == vault.root / "Approved" / f"{req.id}.md"


def test_a_half_saved_note_is_not_flagged_and_a_broken_one_is_once_quiet(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """An editor truncates, then writes a moment later: the empty moment is no problem."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    daemon.run_once(clock.now)
    text = req.path.read_text().replace("status: pending", "status: approved")
    req.path.write_text("")  # truncated; the daemon looks right now
    daemon.notice(req.path)
    daemon.run_once(clock.now)
    assert req.path.name not in helper.attention(daemon, clock)
    req.path.write_text(text)
    daemon.notice(req.path)
    daemon.run_once(clock.now)
    eventually(lambda: ran == [req.id])
    broken = vault.root / "Pending_Approval" / "broken.md"
    broken.write_text("---\nstatus: [\n")
    daemon.notice(broken)
    daemon.run_once(clock.now)
    assert "broken.md" not in helper.attention(daemon, clock)
    daemon.run_once(clock.advance(TEMPLATE_QUIET))
    assert "broken.md" in helper.attention(daemon, clock)
    assert req.path.name not in helper.attention(daemon, clock)


@pytest.mark.parametrize("journal_says", ["old name", "new name"])
def test_a_move_cut_short_by_a_crash_is_finished_not_flagged(
    vault_path: Path, journal_says: str
) -> None:
    """A move cut short by a crash is finished by the next start, not flagged.

    A kill between giving a note its new name and removing the old one leaves one file
    under two names (whichever the journal recorded); the next start keeps the right one.
    """
    with Vault(vault_path) as vault:
        req = vault.submit("payment", {"amount": 1500})
        assert req.path is not None
        vault.reject(req.id, by="alice", reason="no")
        moved = vault_path / "Rejected" / req.path.name
        os.link(moved, req.path)  # the state a crash between link and unlink leaves
        if journal_says == "old name":
            vault.engine.journal.set_path(req.id, f"Pending_Approval/{req.path.name}")
        Daemon(vault.engine).run(once=True)
        assert moved.exists() and not req.path.exists()
        assert "status: rejected" in moved.read_text()
        assert vault.get(req.id).path == moved
        assert vault.engine.journal.attention() == []
        assert vault.verify() == []


def test_a_note_copied_by_hand_into_another_folder_is_flagged_not_deleted(
    vault_path: Path,
) -> None:
    """A note copied by hand into another folder is flagged and kept, never deleted.

    A real copy (its own file, as cp or a sync tool makes) is never taken for a cut-short
    move: it stays, byte for byte, and is listed under Needs attention.
    """
    with Vault(vault_path) as vault:
        req = vault.submit("payment", {"amount": 1500})
        assert req.path is not None
        vault.reject(req.id, by="alice", reason="no")
        moved = vault_path / "Rejected" / req.path.name
        shutil.copyfile(moved, req.path)
        Daemon(vault.engine).run(once=True)
        assert req.path.read_bytes() == moved.read_bytes()
        assert [a.path for a in vault.engine.journal.attention()] == [
            f"Pending_Approval/{req.path.name}"
        ]
