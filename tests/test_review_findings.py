"""Seams a review of the binding and robustness work found open: each test is one that
failed before its fix (a poisoned claim, a rolled-back look, an approvers bypass in two
saves, a dropped outcome, verify on honest vaults, an older daemon, a rejection)."""

from __future__ import annotations

import fcntl
import os
import re
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import Request, Status, Vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import DaemonRunningError, JournalUnavailableError, NotAnApproverError
from hitl_vault.journal.lock import DaemonLock

from .helpers import (
    TEMPLATE_QUIET,
    Clock,
    add_param,
    eventually,
    returns_within,
    set_status,
)


def _edit_param(note: Path, key: str, value: str) -> None:
    text = re.sub(rf"(?m)^(\s+){key}:.*$", rf"\g<1>{key}: {value}", note.read_text(), count=1)
    note.write_text(text)


def test_a_python_rule_that_raises_for_one_request_holds_back_no_other(vault_path: Path) -> None:
    """One approval the daemon's rule cannot judge is refused alone; the others run."""
    ran: list[str] = []
    with Vault(vault_path) as cli:  # the CLI runs no Python rules: both are approved there
        bad = cli.submit("payment", {"memo": "no amount"}).id
        good = cli.submit("payment", {"amount": 900}).id
        cli.approve(bad, by="alice")
        cli.approve(good, by="alice")
    with Vault(vault_path) as vault:  # real time: run --once waits for notes to be quiet

        @vault.rule
        def big(proposal):
            return "ask" if proposal.params["amount"] > 10_000 else None  # KeyError for `bad`

        @vault.action("payment")
        def pay(request: Request) -> str:
            ran.append(request.id)
            return "paid"

        daemon = Daemon(vault.engine)
        returns_within(daemon.catch_up, "run --once", 30)
        daemon.close()
        assert ran == [good]
        assert vault.get(bad).status is Status.APPROVED  # refused, never claimed
        assert any("KeyError" in a.message for a in vault.engine.journal.attention())


def test_a_look_rolled_back_is_read_again_on_the_retry(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """A commit that fails (a disk I/O error, injected) leaves the note to be read afresh."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 1500})
    daemon.run_once(clock.now)
    assert request.path is not None
    set_status(request.path, "approved")
    real, calls = daemon._claim, []

    def failing_commit() -> list[tuple[Request, object]]:  # the fault this machine cannot make
        calls.append(1)
        if len(calls) == 1:
            raise JournalUnavailableError(vault.root / ".hitl" / "journal.db", "disk I/O error")
        return real()  # type: ignore[return-value]

    daemon._claim = failing_commit  # type: ignore[method-assign,assignment]
    daemon.notice(request.path)
    daemon.run_once(clock.now)
    assert vault.get(request.id).status is Status.PENDING

    daemon.run_once(clock.advance(timedelta(seconds=1)))

    eventually(lambda: ran == [request.id])


def test_an_edit_recorded_first_never_escapes_the_approvers_of_the_params_asked_for(
    vault_path: Path, clock: Clock
) -> None:
    """amount 1500 needs alice; mallory saves 999 first, then approves: refused as in one save."""
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text().replace(
            "    timeout: 1h\n", "    timeout: 1h\n    approvers: [alice]\n", 1
        )
    )
    with Vault(vault_path, clock=clock) as vault, Daemon(vault.engine, clock=clock) as daemon:
        request = vault.submit("payment", {"amount": 1500})
        assert request.path is not None
        _edit_param(request.path, "amount", "999")
        daemon.notice(request.path)
        daemon.run_once(clock.now)
        assert vault.get(request.id).params == {"amount": 999}  # recorded as an edit
        set_status(request.path, "approved", decided_by="mallory")
        daemon.notice(request.path)
        daemon.run_once(clock.advance(timedelta(seconds=1)))
        assert vault.get(request.id).status is Status.PENDING
        with pytest.raises(NotAnApproverError, match="mallory may not decide"):
            vault.approve(request.id, by="mallory", expect=vault.params_to_run(request.id)[1])


def test_an_outcome_the_journal_refuses_is_recorded_on_the_retry(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """A full disk while recording how an action went: kept and recorded later, never lost."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 100})  # allowed at once
    real, calls = vault.engine.finish_execution, []

    def full_disk(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise JournalUnavailableError(
                vault.root / ".hitl" / "journal.db", "database or disk is full"
            )
        return real(*args, **kwargs)

    vault.engine.finish_execution = full_disk  # type: ignore[method-assign]
    daemon.run_once(clock.now)
    daemon.actions.wait()
    for _ in range(3):
        daemon.run_once(clock.advance(timedelta(seconds=1)))
    assert ran == [request.id]
    assert vault.get(request.id).status is Status.EXECUTED


def test_verify_is_clean_for_a_reason_a_rule_overrode_and_two_edits_in_one_second(
    vault_path: Path, clock: Clock
) -> None:
    """Honest notes: the human's reason stays in the note, two same-second lines both count."""
    with Vault(vault_path, clock=clock) as vault, Daemon(vault.engine, clock=clock) as daemon:
        edited = vault.submit("payment", {"amount": 1500}).id
        note = vault_path / "Pending_Approval" / f"{edited}.md"
        for amount in ("1400", "1300"):  # within one second
            _edit_param(note, "amount", amount)
            daemon.notice(note)
            daemon.run_once(clock.now)
        blocked = vault.submit("payment", {"amount": 2000}).id
        rules = vault_path / "hitl-vault.yaml"
        rules.write_text(
            rules.read_text().replace(
                "rules:\n", "rules:\n  - name: freeze\n    action: payment\n    decision: block\n"
            )
        )
        vault.engine.reload_policy()
        path = vault_path / "Pending_Approval" / f"{blocked}.md"
        set_status(path, "approved", reason="invoice checked")
        daemon.notice(path)
        daemon.run_once(clock.now)
        daemon.run_once(clock.advance(TEMPLATE_QUIET * 3))
        assert vault.get(blocked).status is Status.REJECTED
        assert vault.verify() == []


def test_a_note_written_before_escaping_still_verifies(vault: Vault) -> None:
    """History lines an earlier version wrote unescaped (``by ops#1``) are not "different"."""
    request = vault.submit("payment", {"amount": 1500}, requested_by="ops#1")
    path = vault.get(request.id).path
    assert path is not None
    text = path.read_text()
    assert "by ops\\#1" in text
    path.write_text(text.replace("by ops\\#1", "by ops#1"))
    assert vault.verify() == []


def test_a_daemon_of_an_earlier_version_still_blocks_a_second_one(vault_path: Path) -> None:
    """Earlier versions locked .hitl/daemon.lock itself: while one holds it, none starts."""
    state = vault_path / ".hitl"
    state.mkdir(exist_ok=True)
    holder = state / "daemon.lock"
    holder.write_text("pid 1 on old-host since 2026-11-01T00:00:00Z\n")
    with open(holder, "rb") as old:
        fcntl.flock(old, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what the earlier daemon holds
        with pytest.raises(DaemonRunningError, match="old-host"):
            DaemonLock(holder).acquire()
    DaemonLock(holder).acquire().release()  # once it is gone, the lock is free


def test_a_rejection_stands_whatever_the_params_say(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """An unquoted date in params never blocks a "no", by note or by the CLI."""
    vault = clocked_vault
    by_note = vault.submit("payment", {"amount": 1500})
    by_cli = vault.submit("payment", {"amount": 1600})
    for request in (by_note, by_cli):
        assert request.path is not None
        add_param(request.path, "pay_on: 2026-12-01")
    assert by_note.path is not None
    set_status(by_note.path, "rejected")
    daemon.notice(by_note.path)
    daemon.run_once(clock.now)

    assert vault.reject(by_cli.id, by="alice", reason="no").status is Status.REJECTED
    assert vault.get(by_note.id).status is Status.REJECTED


def test_an_outcome_with_text_utf8_cannot_hold_is_recorded_and_holds_back_none(
    vault_path: Path,
) -> None:
    """A handler failing with a file name that is not UTF-8: recorded, "?" in its place."""
    with Vault(vault_path) as vault:

        @vault.action("payment")
        def pay(request: Request) -> str:
            if request.params["amount"] == 1:
                raise ValueError(os.fsdecode(b"cannot read inv-\xff.pdf"))
            return "paid"

        ids = [vault.submit("payment", {"amount": n}).id for n in (1, 2, 3)]  # allowed
        daemon = Daemon(vault.engine)
        returns_within(daemon.catch_up, "run --once", 30)
        daemon.close()
        statuses = [vault.get(i).status for i in ids]
        assert statuses == [Status.FAILED, Status.EXECUTED, Status.EXECUTED]
        assert "cannot read inv-?.pdf" in (vault.get(ids[0]).error or "")


def test_a_stop_before_recovery_leaves_an_idempotent_action_to_run_again(
    vault_path: Path, clock: Clock
) -> None:
    """Stopped before it recovered: an idempotent action left executing is not failed."""
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text() + "  refund:\n    run: [python3, -c, pass]\n    idempotent: true\n"
    )
    with Vault(vault_path, clock=clock) as vault:
        request = vault.submit("refund", {"amount": 5})
        vault.approve(request.id, by="alice")
        vault.engine.start_execution(request.id, by="executor")  # then the daemon died
        daemon = Daemon(vault.engine, clock=clock)
        daemon.stop()
        daemon.run_once(clock.now)
        daemon.close()
        assert vault.get(request.id).status is Status.EXECUTING


def test_an_approval_a_rule_could_not_judge_is_tried_again(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """A Python rule that fails once (a timeout of its own): flagged, then run on the retry."""
    vault = clocked_vault
    calls: list[int] = []

    @vault.rule
    def flaky(proposal):
        calls.append(1)
        if len(calls) == 2:  # the first call is at submit; the second, before running
            raise TimeoutError("the limits service did not answer")
        return None

    request = vault.submit("payment", {"amount": 100})  # allowed at once
    daemon.run_once(clock.now)
    assert ran == [] and vault.get(request.id).status is Status.APPROVED
    assert any("not run yet" in a.message for a in vault.engine.journal.attention())

    daemon.run_once(clock.advance(timedelta(seconds=31)))

    eventually(lambda: ran == [request.id])


def test_a_late_approval_that_timed_out_verifies_clean(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """decided_by typed into a note that then timed out stays the human's: no false problem."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 1500}, timeout="1m")
    assert request.path is not None
    set_status(request.path, "approved", decided_by="alice")
    daemon.notice(request.path)
    daemon.run_once(clock.advance(timedelta(minutes=2)))
    daemon.run_once(clock.advance(TEMPLATE_QUIET * 3))
    assert vault.get(request.id).status is Status.TIMED_OUT
    assert vault.verify() == []
