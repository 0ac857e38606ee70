"""Regressions a review of the events and notifications change found; each was seen to fail."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import Request, Status, Vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import JournalUnavailableError, RulesError
from hitl_vault.journal.lock import daemon_running

from .helpers import Clock, set_status
from .receivers import Receiver

REFUSED = "json://127.0.0.1:9/hook"  # the discard port: nothing listens, refused at once


def _notify(vault_path: Path, entries: str, defaults: str = "") -> None:
    rules = vault_path / "hitl-vault.yaml"
    text = rules.read_text()
    if defaults:
        text = text.replace("\ndefaults:\n", f"\ndefaults:\n{defaults}", 1)
    rules.write_text(text + "\nnotify:\n" + entries)


def test_an_approval_saved_again_after_a_failed_commit_runs_the_params_approved(
    vault_path: Path, clock: Clock
) -> None:
    """A commit that failed left a stale copy queued; the human's second save must still run,
    with the params of that save, not be refused as "not the params that were approved"."""
    gate, ran = threading.Event(), []
    with Vault(vault_path, clock=clock) as vault:

        @vault.action("payment")
        def pay(r: Request) -> str:
            if r.params["amount"] == 9000:
                gate.wait(30)
            ran.append(r.params["amount"])
            return "ok"

        with Daemon(vault.engine, clock=clock, workers=1) as daemon:
            busy = vault.submit("payment", {"amount": 9000})
            x = vault.submit("payment", {"amount": 5000})
            daemon.run_once(clock.now)
            daemon.run_once(clock.advance(timedelta(seconds=5)))
            vault.approve(busy.id, by="alice")
            daemon.run_once(clock.now)  # the only worker is now busy
            note = vault.get(x.id).path
            assert note is not None
            set_status(note, "approved")
            journal = vault.engine.journal
            real, fail = journal.batch, [True]

            @contextmanager
            def failing_batch() -> Iterator[None]:
                with real():
                    yield
                    if fail and journal.batching:
                        fail.pop()
                        raise JournalUnavailableError(Path("journal.db"), "disk I/O error")

            journal.batch = failing_batch  # type: ignore[method-assign]
            daemon.notice(note)
            daemon.run_once(clock.advance(timedelta(seconds=1)))
            journal.batch = real  # type: ignore[method-assign]
            assert vault.get(x.id).status is Status.PENDING  # rolled back
            note.write_text(re.sub("amount: 5000", "amount: 4000", note.read_text()))
            daemon.notice(note)
            daemon.run_once(clock.advance(timedelta(seconds=1)))
            gate.set()
            for _ in range(5):
                daemon.actions.wait()
                daemon.run_once(clock.advance(timedelta(seconds=1)))
            assert vault.get(x.id).status is Status.EXECUTED
            assert ran == [9000, 4000]


def test_a_target_down_for_many_tries_never_stops_the_others(
    vault_path: Path, clock: Clock
) -> None:
    """Fifty failed tries of one target (past where the backoff overflowed) and the other
    target still hears of the next request."""
    with Receiver().start() as receiver:
        _notify(vault_path, f"  - url: {REFUSED}\n  - url: json://127.0.0.1:{receiver.port}/hook\n")
        with Vault(vault_path, clock=clock) as vault, Daemon(vault.engine, clock=clock) as daemon:
            vault.submit("payment", {"amount": 5000})
            daemon.run_once(clock.now)
            daemon.notifier.send_due()
            for _ in range(50):
                waiting = vault.engine.journal.outgoing()
                if not waiting:
                    break
                clock.now = max(clock.now, min(w.due for w in waiting))
                daemon.notifier.send_due()
            assert vault.engine.journal.outgoing()[0].attempts >= 50
            vault.submit("payment", {"amount": 6000})
            daemon.run_once(clock.now)
            daemon.notifier.send_due()
            assert len(receiver.wait_for(2)) == 2


def test_a_reminder_whose_recording_failed_is_recorded_on_the_next_step(
    vault_path: Path, clock: Clock
) -> None:
    """A journal held too long while the reminder fell due: it is recorded a step later."""
    _notify(vault_path, f"  - url: {REFUSED}\n    on: [reminder]\n", "  remind_before: 50m\n")
    with Vault(vault_path, clock=clock) as vault, Daemon(vault.engine, clock=clock) as daemon:
        vault.submit("payment", {"amount": 5000})  # expires in 1 h
        daemon.run_once(clock.now)
        journal = vault.engine.journal
        real = journal.enqueue

        def held(*args: object, **kwargs: object) -> int:
            raise JournalUnavailableError(Path("journal.db"), "database is locked")

        journal.enqueue = held  # type: ignore[method-assign]
        daemon.run_once(clock.advance(timedelta(minutes=11)))  # due; recording fails
        journal.enqueue = real  # type: ignore[method-assign]
        daemon.run_once(clock.advance(timedelta(seconds=1)))
        assert [o.event for o in journal.outgoing()] == ["reminder"]


def test_a_notify_added_back_later_does_not_tell_of_the_past(
    vault_path: Path, clock: Clock
) -> None:
    """notify: removed for a month, then added again: nothing from that month is sent."""
    rules = vault_path / "hitl-vault.yaml"
    base = rules.read_text()
    block = f"\nnotify:\n  - url: {REFUSED}\n    on: [executed]\n"
    rules.write_text(base + block)
    with Vault(vault_path, clock=clock) as vault:
        vault.action("payment")(lambda r: "ok")
        with Daemon(vault.engine, clock=clock) as daemon:
            daemon.run_once(clock.now)
            rules.write_text(base)
            vault.engine.reload_policy()
            for i in range(3):
                r = vault.submit("payment", {"amount": 5000 + i})
                vault.approve(r.id, by="alice")
                daemon.run_once(clock.advance(timedelta(seconds=1)))
                daemon.actions.wait()
                daemon.run_once(clock.advance(timedelta(seconds=1)))
            assert {r.status for r in vault.list()} == {Status.EXECUTED}
            rules.write_text(base + block)
            vault.engine.reload_policy()
            daemon.run_once(clock.advance(timedelta(days=30)))
            assert vault.engine.journal.outgoing() == []


def test_a_bad_notify_url_at_start_leaves_no_lock_behind(vault_path: Path) -> None:
    """The daemon refuses to start, says why, and a fixed file starts it in the same process."""
    _notify(vault_path, "  - url: nosuchscheme://x/y\n")
    rules = vault_path / "hitl-vault.yaml"
    with Vault(vault_path) as vault:
        with pytest.raises(RulesError, match="nosuchscheme"):
            vault.run(once=True)
        assert not daemon_running(vault_path / ".hitl" / "daemon.lock")
        rules.write_text(rules.read_text().replace("nosuchscheme://x/y", REFUSED))
        vault.run(once=True)


def test_the_refused_port_is_refused_here() -> None:
    """The tests above rely on nothing listening on 127.0.0.1:9."""
    with socket.socket() as s, pytest.raises(OSError):
        s.settimeout(2)
        s.connect(("127.0.0.1", 9))
