"""Each notification target has its own queue and sending thread, and a send timeout: a
receiver that accepts a connection and never answers holds up only its own messages."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from hitl_vault import Vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.notify.send import SEND_TIMEOUT, Message, send_within

from .helpers import eventually
from .receivers import Post, Receiver
from .test_notifications import Silent, add_notify


class Stamped(Receiver):
    """A receiver that notes when each post arrived (time.monotonic())."""

    def __init__(self) -> None:
        super().__init__()
        self.at: dict[str, float] = {}  # the first line of the message: arrival

    def arrived(self, post: Post) -> None:
        self.at.setdefault(post.title, time.monotonic())
        super().arrived(post)


@contextmanager
def running(root: Path, send_timeout: float = SEND_TIMEOUT) -> Iterator[tuple[Vault, Daemon]]:
    """The vault and a real daemon watching it in a thread (``hitl-vault run``'s loop)."""
    with Vault(root) as vault, Daemon(vault.engine) as daemon:
        daemon.notifier.send_timeout = send_timeout
        ready = threading.Event()
        runner = threading.Thread(target=daemon.run_forever, args=(ready,))
        runner.start()
        try:
            assert ready.wait(15)
            yield vault, daemon
        finally:
            daemon.stop()
            runner.join(30)
    assert not runner.is_alive()


@pytest.fixture
def silent() -> Iterator[Silent]:
    hanging = Silent()
    try:
        yield hanging
    finally:
        hanging.close()  # a send still in flight to it fails at once


@pytest.fixture
def healthy() -> Iterator[Stamped]:
    receiver = Stamped()
    with receiver.start():
        yield receiver


def both(root: Path, silent: Silent, healthy: Receiver) -> None:
    """The hanging target first, so a single sending thread would reach it first."""
    add_notify(
        root,
        f"""\
        - url: json://127.0.0.1:{silent.port}/hook
        - url: json://127.0.0.1:{healthy.port}/hook
        """,
    )


def test_a_hanging_receiver_never_holds_up_a_healthy_one(
    vault_path: Path, silent: Silent, healthy: Stamped
) -> None:
    """With a receiver that accepts and never answers beside it, a healthy json:// target
    hears of each of 20 requests within seconds of it being made."""
    both(vault_path, silent, healthy)
    made: dict[str, float] = {}
    with running(vault_path) as (vault, _):
        for n in range(20):
            vault.submit("payment", {"amount": 1000 + n}, summary=f"Pay {n}")
            made[f"[high] Pay {n} — waiting for approval"] = time.monotonic()
        posts = healthy.wait_for(20, timeout=30)
        eventually(lambda: silent.held, 15)  # its first send is on its way, unanswered
        silent.close()
    # each once (a send the receiver cut short is tried again later, so not always in order)
    assert sorted(p.title for p in posts) == sorted(made)
    late = {title: healthy.at[title] - at for title, at in made.items()}
    # A receiver read by the same thread would hold each message for its 5 s read timeout.
    assert max(late.values()) < 4, late


def test_a_send_with_no_answer_is_a_failed_try_tried_again_later(
    vault_path: Path, silent: Silent, healthy: Stamped
) -> None:
    """A send the receiver does not answer within the send timeout is recorded as a failed
    try with the reason, due again later, while the healthy target's message is sent."""
    both(vault_path, silent, healthy)
    with running(vault_path, send_timeout=0.5) as (vault, daemon):
        request = vault.submit("payment", {"amount": 1500}, summary="Pay ACME")
        healthy.wait_for(1)
        journal = daemon.notifier.journal
        eventually(lambda: journal.outgoing() and journal.outgoing()[0].attempts, 15)
        (row,) = journal.outgoing()
        silent.close()
    assert (row.request_id, row.event, row.target) == (
        request.id,
        "pending",
        f"json://127.0.0.1:{silent.port}/hook",
    )
    assert row.last_error == "no answer within 0.5 s (send timeout)"
    assert row.due > row.created  # tried again by the outbox's retry schedule


def test_send_within_gives_up_and_reports_the_earlier_send_first(silent: Silent) -> None:
    """A send left unanswered is given up after the bound; the next one from the same thread
    waits for it to end first rather than open a second connection."""
    url = f"json://127.0.0.1:{silent.port}/hook"
    started = time.monotonic()
    assert send_within(url, Message("t", "b"), 0.3) == "no answer within 0.3 s (send timeout)"
    assert time.monotonic() - started < 3
    eventually(lambda: silent.held, 15)
    said = send_within(url, Message("t", "b"), 0.3)
    assert said == "no answer to an earlier message after 0.6 s (send timeout)"
    assert len(silent.held) == 1  # never a second connection while the first is open
    silent.close()  # the first send ends at once
    assert send_within(url, Message("t", "b"), 10) is not None  # now refused, said so
