"""Lifecycle events: each committed transition reaches each listener once, whoever made it."""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import Event, Status, Vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import JournalUnavailableError
from hitl_vault.model import Request

from .helpers import Clock, eventually, set_status


def test_a_listener_hears_each_transition_of_this_process_once(vault: Vault) -> None:
    """Submit, approve: one event each, in order, with the transition the journal holds."""
    heard: list[tuple[str, str, str]] = []
    vault.on()(lambda e: heard.append((e.request_id, e.transition.move, e.transition.by)))
    req = vault.submit("payment", {"amount": 900}, requested_by="bot")
    vault.approve(req.id, by="alice")
    assert heard == [
        (req.id, "created → pending", "bot"),
        (req.id, "pending → approved", "alice"),
    ]


def test_a_listener_for_some_statuses_hears_only_those(vault: Vault) -> None:
    """``@vault.on(Status.REJECTED)`` is not called for a request that was approved."""
    rejected: list[Event] = []
    vault.on(Status.REJECTED)(rejected.append)
    kept = vault.submit("payment", {"amount": 900})
    vault.approve(kept.id, by="alice")
    refused = vault.submit("payment", {"amount": 901})
    vault.reject(refused.id, by="bob", reason="no")
    assert [(e.request_id, e.status, e.transition.reason) for e in rejected] == [
        (refused.id, Status.REJECTED, "no")
    ]
    request = rejected[0].request
    assert isinstance(request, Request) and request.decided_by == "bob"


def test_transitions_made_by_another_process_reach_the_listener(vault_path: Path) -> None:
    """A decision another Vault (the CLI, a phone's edit seen by the daemon) recorded is heard
    by this process's listener when it next acts or waits, once."""
    with Vault(vault_path) as mine, Vault(vault_path) as theirs:
        heard: list[str] = []
        mine.on(Status.APPROVED)(lambda e: heard.append(e.request_id))
        req = mine.submit("payment", {"amount": 900})
        theirs.approve(req.id, by="alice")
        assert heard == []  # nothing has looked at the journal yet
        assert mine.wait_sync(req.id, timeout=10).status is Status.APPROVED
        assert heard == [req.id]
        mine.list()
        mine.submit("payment", {"amount": 902})  # acting again hears nothing twice
        assert heard == [req.id]


def test_a_listener_that_raises_is_logged_and_never_undoes_the_transition(
    vault: Vault, caplog: pytest.LogCaptureFixture
) -> None:
    """Telling someone is never a reason for a decision not to stand; the others still hear."""
    after: list[str] = []

    @vault.on(Status.APPROVED)
    def broken(event: Event) -> None:
        raise RuntimeError("mail server down")

    vault.on(Status.APPROVED)(lambda e: after.append(e.request_id))
    req = vault.submit("payment", {"amount": 900})
    with caplog.at_level(logging.ERROR, logger="hitl_vault"):
        assert vault.approve(req.id, by="alice").status is Status.APPROVED
    assert after == [req.id]
    assert "listener" in caplog.text and "mail server down" in caplog.text


def test_a_listener_registered_late_hears_only_what_happens_after(vault: Vault) -> None:
    """No replay of history: a listener added now starts from now."""
    old = vault.submit("payment", {"amount": 900})
    heard: list[str] = []
    vault.on()(lambda e: heard.append(e.request_id))
    new = vault.submit("payment", {"amount": 901})
    assert heard == [new.id] and old.id not in heard


def test_the_daemon_tells_listeners_once_per_transition_and_never_a_rolled_back_one(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """A human's approval in the note, its execution: each heard once, after its commit; a
    step whose commit fails says nothing until the retry lands it."""
    heard: list[tuple[str, Status]] = []
    daemon.engine.listen(lambda e: heard.append((e.request_id, e.status)))
    req = clocked_vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    real_claim, calls = daemon._claim, []

    def failing_commit() -> list[tuple[Request, object]]:
        calls.append(1)
        if len(calls) == 1:
            raise JournalUnavailableError(clocked_vault.root / ".hitl" / "journal.db", "disk full")
        return real_claim()  # type: ignore[return-value]

    daemon._claim = failing_commit  # type: ignore[method-assign,assignment]
    set_status(req.path, "approved", decided_by="alice")
    daemon.notice(req.path)
    daemon.run_once(clock.now)
    assert (req.id, Status.APPROVED) not in heard  # rolled back: never said
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    eventually(lambda: ran == [req.id])
    for _ in range(3):
        daemon.actions.wait()
        daemon.run_once(clock.advance(timedelta(seconds=1)))
    assert [s for rid, s in heard if rid == req.id] == [
        Status.PENDING,
        Status.APPROVED,
        Status.EXECUTING,
        Status.EXECUTED,
    ]


def test_listeners_are_called_on_the_thread_that_published_never_concurrently(
    vault: Vault,
) -> None:
    """Two threads deciding at once: every event arrives once, none lost or doubled."""
    heard: list[str] = []
    lock = threading.Lock()

    def listener(e: Event) -> None:
        with lock:
            heard.append(e.request_id)

    vault.on(Status.APPROVED)(listener)
    reqs = [vault.submit("payment", {"amount": 900 + i}) for i in range(10)]
    threads = [
        threading.Thread(target=vault.approve, args=(r.id,), kwargs={"by": "alice"}) for r in reqs
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(heard) == sorted(r.id for r in reqs)


# --- durable listeners: a cursor kept in the journal ---------------------------------------


def _durable(vault: Vault, heard: list[tuple[str, str]], started: list[int]) -> None:
    """An ``audit`` durable listener on ``vault`` that notes each entry's request and move."""
    vault.engine.events.durable(
        "audit",
        lambda e: heard.append((e.request_id, e.transition.move)),
        first=lambda: started.append(vault.engine.journal.last_seq()),
    )


def test_a_durable_listener_hears_what_no_process_listened_to_once_across_restarts(
    vault_path: Path,
) -> None:
    """The first time, no past (``first`` instead); then every entry once, also those made
    while it did not run, and none again after a restart."""
    with Vault(vault_path) as plain:
        before = plain.submit("payment", {"amount": 900})
    heard: list[tuple[str, str]] = []
    started: list[int] = []
    with Vault(vault_path) as vault:
        _durable(vault, heard, started)
        assert vault.engine.events.catch_up() == 0
        assert heard == [] and started == [1]  # before's entry is the past
        made = vault.submit("payment", {"amount": 901})
        assert heard == []  # heard at catch_up, not at publish
        assert vault.engine.events.catch_up() == 1
    with Vault(vault_path) as plain:  # no durable listener runs: the CLI, a script
        plain.approve(made.id, by="alice")
        plain.reject(before.id, by="bob")
    with Vault(vault_path) as vault:  # a restart
        _durable(vault, heard, started)
        assert vault.engine.events.catch_up() == 2
        assert vault.engine.events.catch_up() == 0
    assert started == [1]
    assert heard == [
        (made.id, "created → pending"),
        (made.id, "pending → approved"),
        (before.id, "pending → rejected"),
    ]


def test_a_durable_listener_that_raises_undoes_its_writes_and_hears_the_same_again(
    vault: Vault,
) -> None:
    """Its journal writes and its cursor commit together: a failure leaves neither, and the
    next catch-up hands it the same entries, each once."""
    journal = vault.engine.journal
    heard: list[str] = []
    failing = [True]

    def listener(event: Event) -> None:
        journal.flag(f"seen {event.seq}", "seen", event.transition.at)
        if event.status is Status.APPROVED and failing[0]:
            raise RuntimeError("the audit log's disk is full")
        heard.append(event.transition.move)

    vault.engine.events.durable("audit", listener)
    vault.engine.events.catch_up()  # the first time: from here on
    req = vault.submit("payment", {"amount": 900})
    vault.approve(req.id, by="alice")
    with pytest.raises(RuntimeError, match="disk is full"):
        vault.engine.events.catch_up()
    assert journal.attention() == [] and heard == ["created → pending"]
    failing[0] = False
    heard.clear()
    assert vault.engine.events.catch_up() == 2
    assert heard == ["created → pending", "pending → approved"]
    assert len(journal.attention()) == 2
    assert vault.engine.events.catch_up() == 0


def test_recorded_shows_a_batch_its_own_entries_and_listeners_hear_them_once_committed(
    vault: Vault,
) -> None:
    """Inside a batch, ``recorded()`` shows what it wrote (for work in the same commit);
    listeners hear it only after the commit, and never what was rolled back."""
    heard: list[str] = []
    vault.on()(lambda e: heard.append(e.transition.move))
    req = vault.submit("payment", {"amount": 900})
    journal, events = vault.engine.journal, vault.engine.events
    clock = vault.engine.now
    with pytest.raises(RuntimeError), journal.batch():
        journal.transition(req.id, Status.APPROVED, at=clock(), by="alice")
        assert [e.status for e in events.recorded()] == [Status.APPROVED]
        assert events.publish() == 0  # not committed yet
        raise RuntimeError("the commit failed")
    assert events.recorded() == [] and events.publish() == 0
    with journal.batch():
        journal.transition(req.id, Status.APPROVED, at=clock(), by="alice")
        assert [e.request_id for e in events.recorded()] == [req.id]
    assert heard == ["created → pending"]
    assert events.publish() == 1
    assert heard == ["created → pending", "pending → approved"]
    assert events.recorded() == []
