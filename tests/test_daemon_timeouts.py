"""Escalation and expiry that keep failing: the request is put off on its own (the others
go on), listed under Needs attention until it goes through, logged once, and the daemon
never spins on it (injected time, and one short real run)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from hitl_vault import Proposal, Status, Vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.daemon.retries import RETRY_FIRST
from hitl_vault.daemon.timeouts import Timeouts
from hitl_vault.errors import JournalUnavailableError
from hitl_vault.model import Transition

from .helpers import Clock, VaultHelper, eventually

ESCALATING = """
rules:
  - name: wires
    action: wire
    decision: ask
    approvers: [alice, bob]
    escalate_after: 1s
    escalate_to: [dave]
"""


class Calendar:
    """A Python rule that raises ("calendar unavailable") for the amounts in ``broken``."""

    def __init__(self) -> None:
        self.broken: set[int] = set()

    def __call__(self, proposal: Proposal) -> None:
        if proposal.params.get("amount") in self.broken:
            raise ValueError("calendar unavailable")


@pytest.fixture
def calendar() -> Calendar:
    return Calendar()


@pytest.fixture
def escalating(vault_path: Path, clock: Clock, calendar: Calendar) -> Iterator[Vault]:
    """The template vault with a ``wire`` rule escalating after 1 s, on the test's clock,
    with the :class:`Calendar` rule."""
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(rules.read_text().replace("\nrules:\n", ESCALATING, 1))
    with Vault(vault_path, clock=clock) as vault:
        vault.rule(calendar)
        yield vault


@pytest.fixture
def stepped(escalating: Vault, clock: Clock) -> Iterator[Daemon]:
    with Daemon(escalating.engine, clock=clock) as d:
        yield d


def _flagged(vault: Vault, request_id: str) -> list[str]:
    return [a.message for a in vault.engine.journal.attention() if a.request_id == request_id]


def test_a_raising_escalation_puts_the_request_off_instead_of_waking_the_daemon_at_once(
    escalating: Vault, stepped: Daemon, clock: Clock, calendar: Calendar
) -> None:
    """After a step whose escalation raised, the next wake is in the future (0.5 s, then
    longer each time), not the escalation time already missed."""
    request = escalating.submit("wire", {"amount": 13})
    calendar.broken.add(13)
    stepped.run_once(clock.advance(timedelta(seconds=2)))
    assert not escalating.get(request.id).escalated
    assert stepped.next_wake(clock.now) == clock.now + RETRY_FIRST
    stepped.run_once(clock.advance(RETRY_FIRST))
    wake = stepped.next_wake(clock.now)
    assert wake is not None and wake > clock.now
    assert stepped.timeouts.next_wake(clock.now) == clock.now + 2 * RETRY_FIRST  # growing
    stepped.run_once(clock.advance(RETRY_FIRST))  # not due yet: not tried
    assert stepped.timeouts.next_wake(clock.now) == clock.now + RETRY_FIRST


def test_a_raising_escalation_of_one_request_does_not_hold_back_another(
    escalating: Vault, stepped: Daemon, clock: Clock, calendar: Calendar
) -> None:
    """The request whose escalation raises stays put; the one due after it is escalated."""
    broken = escalating.submit("wire", {"amount": 13})
    clock.advance(timedelta(seconds=1))
    fine = escalating.submit("wire", {"amount": 14})
    calendar.broken.add(13)
    stepped.run_once(clock.advance(timedelta(seconds=3)))
    assert escalating.get(fine.id).escalated
    assert not escalating.get(broken.id).escalated


def test_a_failing_escalation_is_listed_and_logged_once_and_leaves_once_it_goes_through(
    escalating: Vault,
    stepped: Daemon,
    clock: Clock,
    calendar: Calendar,
    helper: VaultHelper,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Needs attention names the request, the rule's error and the fix; however often it is
    tried, the log says it once; once the rule is fixed it is escalated and the flag goes."""
    request = escalating.submit("wire", {"amount": 13})
    calendar.broken.add(13)
    with caplog.at_level(logging.INFO, logger="hitl_vault"):
        for _ in range(6):
            stepped.run_once(clock.advance(timedelta(seconds=31)))
        (message,) = _flagged(escalating, request.id)
        assert message.startswith(f"request {request.id}: not escalated yet")
        assert "calendar unavailable" in message and "fix it" in message
        assert "not escalated yet" in helper.attention(stepped, clock)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1 and request.id in errors[0].getMessage()
        assert errors[0].exc_info is None, "a rule's error is no bug: no traceback"

        calendar.broken.clear()
        stepped.run_once(clock.advance(timedelta(seconds=31)))
    assert escalating.get(request.id).escalated
    assert _flagged(escalating, request.id) == []
    assert "Nothing needs attention" in helper.attention(stepped, clock)


def test_a_put_off_request_decided_meanwhile_leaves_needs_attention(
    escalating: Vault, stepped: Daemon, clock: Clock, calendar: Calendar
) -> None:
    """A request whose escalation kept failing and that a human then rejects is no longer
    listed (nothing is left to fix)."""
    request = escalating.submit("wire", {"amount": 13})
    calendar.broken.add(13)
    stepped.run_once(clock.advance(timedelta(seconds=2)))
    assert _flagged(escalating, request.id)
    calendar.broken.clear()  # the rule judges the rejection
    escalating.reject(request.id, by="alice", reason="no")
    stepped.run_once(clock.advance(timedelta(seconds=1)))
    assert _flagged(escalating, request.id) == []
    assert stepped.timeouts.put_off == {}


def test_an_expiry_that_raises_puts_off_only_that_request_with_its_traceback_once(
    escalating: Vault, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """An expiry that raises (a bug) for one request: the other times out, the failing one is
    listed, put off, and its traceback logged once however often it is tried."""
    engine = escalating.engine
    stuck = escalating.submit("payment", {"amount": 900}, timeout="1m")
    other = escalating.submit("payment", {"amount": 901}, timeout="1m")
    shown: list[str] = []

    def expire(request_id: str, now: datetime) -> Transition | None:
        if request_id == stuck.id:
            raise KeyError("a bug")
        return engine.expire(request_id, now)

    timeouts = Timeouts(engine.journal, expire, engine.escalate, shown.append)
    with caplog.at_level(logging.ERROR, logger="hitl_vault"):
        for _ in range(5):
            timeouts.expire(clock.advance(timedelta(minutes=1)))
    assert escalating.get(other.id).status is Status.TIMED_OUT and shown == [other.id]
    assert escalating.get(stuck.id).status is Status.PENDING
    (message,) = _flagged(escalating, stuck.id)
    assert "not timed out yet: KeyError" in message
    (error,) = caplog.records
    assert error.exc_info is not None, "a bug: the log says where"
    next_wake = timeouts.next_wake(clock.now)
    assert next_wake is not None and next_wake > clock.now


def test_the_daemon_never_waits_less_than_a_retry_after_a_part_failed(
    escalating: Vault, stepped: Daemon, clock: Clock
) -> None:
    """A journal held by another process while an escalation is overdue: the step fails, and
    the loop waits at least RETRY_FIRST before the next, not 0 s."""
    escalating.submit("wire", {"amount": 13})
    stepped.run_once(clock.now)
    stepped.journal.wait_for_lock(0.05)
    other = sqlite3.connect(escalating.root / ".hitl" / "journal.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")  # another process's write, held
        stepped.run_once(clock.advance(timedelta(seconds=2)))
        assert stepped.retries.failed_now
        delay = stepped.next_delay()
        assert delay is not None and delay >= RETRY_FIRST.total_seconds()
    finally:
        other.execute("ROLLBACK")
        other.close()


def test_a_real_daemon_whose_escalation_keeps_failing_takes_few_steps(
    vault_path: Path, calendar: Calendar
) -> None:
    """Run for a second of real time with an escalation that raises: a handful of steps, not
    thousands (each with a traceback)."""
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(rules.read_text().replace("\nrules:\n", ESCALATING, 1))
    with Vault(vault_path) as vault, Daemon(vault.engine) as daemon:
        vault.rule(calendar)
        request = vault.submit("wire", {"amount": 13})
        calendar.broken.add(13)
        steps: list[float] = []
        step = daemon.run_once

        def counted(now: datetime | None = None) -> bool:
            steps.append(time.monotonic())
            return step(now)

        daemon.run_once = counted  # type: ignore[method-assign]
        runner = threading.Thread(target=daemon.run_forever)
        runner.start()
        try:
            eventually(lambda: _flagged(vault, request.id))  # tried once, and failed
            counted_from = len(steps)
            time.sleep(1.0)  # the measurement: how many steps a second of real time takes
            assert len(steps) - counted_from <= 10
        finally:
            daemon.stop()
            runner.join(timeout=30)
        assert not runner.is_alive()


def test_journal_unavailable_is_not_put_off_per_request(escalating: Vault, clock: Clock) -> None:
    """A journal that fails fails the whole part (tried again shortly), not one request."""
    engine = escalating.engine
    escalating.submit("wire", {"amount": 13})

    def escalate(request_id: str, now: datetime) -> Transition | None:
        raise JournalUnavailableError(escalating.root / ".hitl" / "journal.db", "disk I/O error")

    timeouts = Timeouts(engine.journal, engine.expire, escalate, lambda _: None)
    with pytest.raises(JournalUnavailableError):
        timeouts.escalate(clock.advance(timedelta(seconds=2)))
    assert timeouts.put_off == {}
