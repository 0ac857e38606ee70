"""Notifications end to end: real receivers (SMTP, HTTP, a silent socket), the journal's
outbox, restarts, ``run --once``, a real daemon process and ``hitl-vault notify test``."""

from __future__ import annotations

import base64
import email
import email.policy
import os
import queue
import socket
import sqlite3
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from hitl_vault import Request, Status, Vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.times import parse_ts

from .helpers import QUIET, Clock, DaemonProcess, VaultHelper, ended, eventually, set_status
from .receivers import Receiver, free_port, smtp_server

VAULT_NAME = "My Vault"
RULES = "hitl-vault.yaml"


def add_notify(root: Path, targets: str, *, vault_name: str | None = VAULT_NAME) -> int:
    """Append ``notify:`` with ``targets`` (YAML list items) to the vault's hitl-vault.yaml,
    as a user would; returns the line number of the first target."""
    rules = root / RULES
    text = rules.read_text(encoding="utf-8")
    text += "" if text.endswith("\n") else "\n"
    first = text.count("\n") + 2  # the line after "notify:"
    items = textwrap.indent(textwrap.dedent(targets).strip("\n"), "  ")
    block = f"notify:\n{items}\n" + (f"notify_vault: {vault_name}\n" if vault_name else "")
    rules.write_text(text + block, encoding="utf-8")
    return first


def edit_rules(root: Path, old: str, new: str) -> None:
    rules = root / RULES
    text = rules.read_text(encoding="utf-8")
    assert old in text, f"{rules} has no {old!r}"
    rules.write_text(text.replace(old, new, 1), encoding="utf-8")


def outbox(root: Path) -> list[dict[str, Any]]:
    """Every row of the journal's outbox, oldest first (read with plain SQL)."""
    db = sqlite3.connect(root / ".hitl" / "journal.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(row) for row in db.execute("SELECT * FROM outbox ORDER BY id")]
    finally:
        db.close()


@contextmanager
def stepped(root: Path, clock: Clock) -> Iterator[tuple[Vault, Daemon]]:
    """The vault on the test's clock with an in-process payment executor, and a daemon
    stepped by hand (conftest's ``clocked_vault`` and ``daemon``), opened after the test
    wrote its ``notify:``, as a daemon started then would read it."""
    with Vault(root, clock=clock) as vault:

        @vault.action("payment")
        def pay(request: Request) -> str:
            return f"paid {request.params['amount']}"

        with Daemon(vault.engine, clock=clock) as daemon:
            yield vault, daemon


def submit_cli(helper: VaultHelper, amount: int, summary: str, *more: str) -> str:
    done = helper.hitl("submit", "payment", "-p", f"amount={amount}", "--summary", summary, *more)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[0]


def run_once(helper: VaultHelper, env: dict[str, str] | None = None) -> str:
    """``hitl-vault run --once``, which must exit 0; returns its log."""
    done = helper.hitl("run", "--once", env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stderr


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def late_receiver() -> Iterator[Receiver]:
    """A receiver that is down until the test starts it."""
    r = Receiver()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def smtp() -> Iterator[tuple[int, queue.Queue[bytes]]]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1: its port and the mails it accepted."""
    with smtp_server() as server:
        yield server


class Silent:
    """A TCP server that accepts every connection and never answers a byte."""

    def __init__(self) -> None:
        self._server = socket.create_server(("127.0.0.1", 0), backlog=16)
        self._server.settimeout(0.05)
        self.port = self._server.getsockname()[1]
        self.held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            self.held.append(conn)

    def close(self) -> None:
        """Stop listening and drop every connection: a send in flight fails at once."""
        self._stop.set()
        self._thread.join(10)
        self._server.close()
        for conn in self.held:
            conn.close()


# --- 1. a real e-mail -------------------------------------------------------------------


def test_a_pending_request_sends_one_email_saying_what_why_and_how_to_decide(
    vault_path: Path, clock: Clock, smtp: tuple[int, queue.Queue[bytes]]
) -> None:
    """A request that needs a human sends one e-mail with the ask, the rule's reason, the
    command to approve it, the note and a link that opens it in Obsidian."""
    port, mails = smtp
    add_notify(
        vault_path, f"- url: mailto://127.0.0.1:{port}?from=hitl@example.com&to=alice@example.com"
    )
    with stepped(vault_path, clock) as (vault, daemon):
        req = vault.submit(
            "payment",
            {"amount": 1500, "recipient": "vendor@example.com"},
            summary="Pay invoice INV-2024-001",
            requested_by="invoice-bot",
        )
        daemon.run_once(clock.now)
        assert daemon.notifier.send_due()
        mail = email.message_from_bytes(mails.get(timeout=10), policy=email.policy.default)
        daemon.run_once(clock.advance(timedelta(minutes=1)))
        assert not daemon.notifier.send_due()  # nothing more to say
    assert mails.empty()

    assert mail["To"] == "alice@example.com"
    assert mail["Subject"] == "[high] Pay invoice INV-2024-001 — waiting for approval"
    part: Any = mail.get_body(preferencelist=("plain",))
    body = part.get_content()
    note = f"Pending_Approval/{req.id}.md"
    for said in (
        "Pay invoice INV-2024-001",
        "- amount: 1500",
        "- recipient: vendor@example.com",
        "Rule: large-payments — payment with amount >= 500 needs approval.",
        "Requested by: invoice-bot",
        f"Decide by: {req.expires:%Y-%m-%dT%H:%M}Z",
        f"hitl-vault approve {req.id}",
        f"Note: {note}",
        f"obsidian://open?vault=My%20Vault&file={req.id}.md",
    ):
        assert said in body, f"{said!r} not in the e-mail:\n{body}"
    assert (vault_path / note).exists()
    (row,) = outbox(vault_path)
    assert (row["request_id"], row["event"], row["attempts"]) == (req.id, "pending", 1)
    assert row["sent_at"] is not None and row["last_error"] is None


# --- 2. json:// and ntfy:// for a request's whole life ----------------------------------


def test_json_and_ntfy_receivers_hear_pending_approved_and_executed(
    vault_path: Path, clock: Clock, receiver: Receiver
) -> None:
    """json:// and ntfy:// targets each get one message when a request waits, when it is
    approved (by whom) and when it ran (with the result), sent by the daemon's sender thread."""
    add_notify(
        vault_path,
        f"""\
        - url: json://127.0.0.1:{receiver.port}/hook
          on: [pending, approved, executed]
        - url: ntfy://127.0.0.1:{receiver.port}/approvals
          on: [pending, approved, executed]
        """,
    )
    with stepped(vault_path, clock) as (vault, daemon):
        daemon.notifier.start()  # the sender thread of ``hitl-vault run``
        try:
            req = vault.submit("payment", {"amount": 1500}, summary="Pay ACME")
            daemon.run_once(clock.now)
            receiver.wait_for(2)
            vault.approve(req.id, by="alice")
            ended(daemon, clock, req.id, Status.EXECUTED)
            daemon.run_once(clock.now)  # records what the last step journaled
            receiver.wait_for(6)
        finally:
            daemon.notifier.stop()

    json_posts, ntfy_posts = receiver.got("/hook"), receiver.got("/")
    assert len(json_posts) == len(ntfy_posts) == 3
    assert {p.payload["topic"] for p in ntfy_posts} == {"approvals"}
    for posts in (json_posts, ntfy_posts):
        assert [p.title for p in posts] == [
            "[high] Pay ACME — waiting for approval",
            "[high] Pay ACME — approved by alice",
            "[high] Pay ACME — executed",
        ]
        pending, approved, executed = (p.message for p in posts)
        assert f"hitl-vault approve {req.id}" in pending
        assert "Decided: approved by alice" in approved
        assert "hitl-vault approve" not in approved
        assert "Result: paid 1500" in executed
        for message in (pending, approved, executed):
            assert "obsidian://open?vault=My%20Vault&file=" in message
    assert [r["sent_at"] is not None for r in outbox(vault_path)] == [True] * 6


def test_filters_keep_only_the_requests_a_target_asked_for(
    vault_path: Path, clock: Clock, receiver: Receiver
) -> None:
    """Targets with ``risk``, ``rules`` or ``actions`` hear only about the requests that match."""
    add_notify(
        vault_path,
        f"""\
        - url: json://127.0.0.1:{receiver.port}/critical
          on: all
          risk: critical
        - url: json://127.0.0.1:{receiver.port}/large
          on: [pending, approved, executed]
          rules: large-payments
        - url: json://127.0.0.1:{receiver.port}/payments
          on: approved
          actions: [payment]
        - url: json://127.0.0.1:{receiver.port}/refunds
          on: all
          actions: refund
        """,
    )
    with stepped(vault_path, clock) as (vault, daemon):
        daemon.run_once(clock.now)  # a daemon ran before: everything after is told
        large = vault.submit("payment", {"amount": 1500}, summary="large")
        small = vault.submit("payment", {"amount": 20}, summary="small")
        assert small.status is Status.APPROVED  # by the small-payments rule
        daemon.run_once(clock.now)  # the daemon sees it pending (a request decided before
        vault.approve(large.id, by="alice")  # it looked is never announced as waiting)
        ended(daemon, clock, large.id, Status.EXECUTED)
        ended(daemon, clock, small.id, Status.EXECUTED)
        daemon.run_once(clock.now)
        daemon.notifier.send_due()

    def heard(path: str) -> list[str]:
        return [p.title.split("] ", 1)[1] for p in receiver.got(path)]

    assert heard("/critical") == heard("/refunds") == []
    assert heard("/large") == [
        "large — waiting for approval",
        "large — approved by alice",
        "large — executed",
    ]
    assert sorted(t.split(" — ")[0] for t in heard("/payments")) == ["large", "small"]
    assert all(" — approved" in t for t in heard("/payments"))
    assert len(outbox(vault_path)) == 5


def test_an_outcome_message_links_to_where_the_note_ends_up(
    vault_path: Path, clock: Clock, helper: VaultHelper, receiver: Receiver
) -> None:
    """The note path and Obsidian link in an executed or rejected message open the note, which
    by then rests in Done/ or Rejected/."""
    add_notify(
        vault_path,
        f"""\
        - url: json://127.0.0.1:{receiver.port}/hook
          on: [executed, rejected]
        """,
    )
    with stepped(vault_path, clock) as (vault, daemon):
        quiet = vault.policy.defaults.quiet
        paid = vault.submit("payment", {"amount": 1500}, summary="paid")
        refused = vault.submit("payment", {"amount": 1600}, summary="refused")
        daemon.run_once(clock.now)
        for req, word in ((paid, "approved"), (refused, "rejected")):
            assert req.path is not None
            set_status(req.path, word)  # decided in the note, as a human does
            daemon.notice(req.path)
        ended(daemon, clock, paid.id, Status.EXECUTED)
        daemon.run_once(clock.now)
        daemon.notifier.send_due()  # what the sender thread does at once
        daemon.run_once(clock.advance(quiet + timedelta(seconds=1)))  # notes settle, move
        assert helper.shows(paid.id, Status.EXECUTED, "Done")
        assert helper.shows(refused.id, Status.REJECTED, "Rejected")
    posts = receiver.wait_for(2)
    for post in posts:
        note = next(line[6:] for line in post.message.splitlines() if line.startswith("Note: "))
        assert (vault_path / note).is_file(), f"{post.title} links {note}"


# --- 3. a receiver that is down, then comes up -------------------------------------------


def test_a_receiver_that_was_down_gets_the_message_once_after_backoff(
    vault_path: Path, clock: Clock, late_receiver: Receiver
) -> None:
    """A message to a receiver that is down is kept with its error and tried again after
    5 s, then 10 s (never sooner), and delivered exactly once when the receiver is back."""
    add_notify(vault_path, f"- url: json://127.0.0.1:{late_receiver.port}/hook")
    with stepped(vault_path, clock) as (vault, daemon):
        req = vault.submit("payment", {"amount": 1500})
        daemon.run_once(clock.now)
        start = clock.now
        assert not daemon.notifier.send_due()
        (row,) = outbox(vault_path)
        assert row["attempts"] == 1 and row["sent_at"] is None
        assert "Connection refused" in row["last_error"]
        assert parse_ts(row["due"]) == start + timedelta(seconds=5)

        daemon.run_once(clock.advance(timedelta(seconds=4)))
        assert not daemon.notifier.send_due()
        assert outbox(vault_path)[0]["attempts"] == 1  # not tried before it is due
        daemon.run_once(clock.advance(timedelta(seconds=1)))
        assert not daemon.notifier.send_due()
        (row,) = outbox(vault_path)
        assert row["attempts"] == 2
        assert parse_ts(row["due"]) == start + timedelta(seconds=15)  # 10 s later: backoff

        late_receiver.start()
        daemon.run_once(clock.advance(timedelta(seconds=9)))
        assert not daemon.notifier.send_due()
        assert late_receiver.got() == []  # up, but not due yet
        daemon.run_once(clock.advance(timedelta(seconds=1)))
        assert daemon.notifier.send_due()
        (row,) = outbox(vault_path)
        assert row["attempts"] == 3 and parse_ts(row["sent_at"]) == clock.now
        for _ in range(3):  # later steps and sends find nothing left to send
            daemon.run_once(clock.advance(timedelta(minutes=1)))
            assert not daemon.notifier.send_due()
    (post,) = late_receiver.got()
    assert req.id in post.message
    assert len(outbox(vault_path)) == 1


def test_a_message_failing_for_24_hours_is_given_up_and_listed(
    vault_path: Path, clock: Clock, helper: VaultHelper
) -> None:
    """A receiver down for a day: its message is tried at most 30 s apart, then given up and
    listed under Needs attention with the target and the error."""
    port = free_port()
    add_notify(vault_path, f"- url: json://127.0.0.1:{port}/hook")
    with stepped(vault_path, clock) as (vault, daemon):
        req = vault.submit("payment", {"amount": 1500})
        daemon.run_once(clock.now)
        gaps = []
        for _ in range(5):
            assert not daemon.notifier.send_due()
            (row,) = outbox(vault_path)
            gaps.append(parse_ts(row["due"]) - clock.now)
            clock.advance(gaps[-1])
        assert [g.total_seconds() for g in gaps] == [5, 10, 20, 30, 30]
        clock.advance(timedelta(hours=24))
        assert not daemon.notifier.send_due()
        (row,) = outbox(vault_path)
        assert row["given_up_at"] is not None and row["sent_at"] is None
        assert daemon.engine.journal.outgoing() == []  # never tried again
        attention = helper.attention(daemon, clock)
    assert f"json://127.0.0.1:{port}/hook" in attention
    assert req.id in attention and "Connection refused" in attention


# --- 4. never repeated across restarts ---------------------------------------------------


@pytest.mark.process
def test_run_once_twice_sends_each_notification_once(
    vault_path: Path, helper: VaultHelper, receiver: Receiver
) -> None:
    """Each ``run --once`` sends only what was not sent before: a second run sends nothing."""
    helper.set_quiet(QUIET)
    add_notify(
        vault_path,
        f"""\
        - url: json://127.0.0.1:{receiver.port}/hook
          on: [pending, approved, executed]
        """,
    )
    rid = submit_cli(helper, 1500, "Pay ACME")
    run_once(helper)
    assert [p.title for p in receiver.got()] == ["[high] Pay ACME — waiting for approval"]
    run_once(helper)
    assert len(receiver.got()) == 1

    assert helper.hitl("approve", rid, "--by", "alice").returncode == 0
    run_once(helper)
    run_once(helper)
    assert [p.title for p in receiver.got()] == [
        "[high] Pay ACME — waiting for approval",
        "[high] Pay ACME — approved by alice",
        "[high] Pay ACME — executed",
    ]
    rows = outbox(vault_path)
    assert [(r["event"], r["attempts"]) for r in rows] == [
        ("pending", 1),
        ("approved", 1),
        ("executed", 1),
    ]
    assert all(r["sent_at"] for r in rows)


@pytest.mark.process
def test_a_notification_recorded_by_a_daemon_that_died_is_sent_by_the_next_once(
    vault_path: Path, clock: Clock, helper: VaultHelper, receiver: Receiver
) -> None:
    """A daemon that recorded a notification and died before sending it: the next start
    sends it, once, and a later one sends nothing."""
    add_notify(vault_path, f"- url: json://127.0.0.1:{receiver.port}/hook")
    with stepped(vault_path, clock) as (vault, daemon):
        req = vault.submit("payment", {"amount": 1500}, summary="Pay ACME")
        daemon.run_once(clock.now)  # records, and then the daemon is gone: nothing sent
    (row,) = outbox(vault_path)
    assert (row["request_id"], row["event"], row["sent_at"]) == (req.id, "pending", None)
    assert receiver.got() == []

    run_once(helper)
    (post,) = receiver.got()
    assert post.title == "[high] Pay ACME — waiting for approval"
    (row,) = outbox(vault_path)
    assert row["sent_at"] is not None and row["attempts"] == 1
    run_once(helper)
    assert len(receiver.got()) == 1 and len(outbox(vault_path)) == 1


# --- 5. requests made while no daemon ran ---------------------------------------------------


@pytest.mark.slow
@pytest.mark.process
def test_requests_made_while_no_daemon_ran_are_told_when_it_starts(
    vault_path: Path, helper: VaultHelper, receiver: Receiver
) -> None:
    """Requests made with the CLI before any daemon ever ran, and decisions made while it was
    stopped, are each told once when the daemon next starts."""
    helper.set_quiet(QUIET)
    add_notify(
        vault_path,
        f"""\
        - url: json://127.0.0.1:{receiver.port}/hook
          on: [pending, approved, rejected, cancelled, executed]
        """,
    )
    first = submit_cli(helper, 1500, "first")
    second = submit_cli(helper, 2500, "second")
    fourth = submit_cli(helper, 3500, "fourth")
    assert receiver.got() == []  # no daemon yet
    run_once(helper)
    assert sorted(p.title for p in receiver.got()) == [
        "[high] first — waiting for approval",
        "[high] fourth — waiting for approval",
        "[high] second — waiting for approval",
    ]

    # The daemon is stopped again: a new request and three decisions, all made with the CLI.
    third = submit_cli(helper, 900, "third")
    assert helper.hitl("approve", first, "--by", "alice").returncode == 0
    assert helper.hitl("reject", second, "--by", "bob", "--reason", "dup").returncode == 0
    assert helper.hitl("cancel", fourth).returncode == 0
    assert len(receiver.got()) == 3
    run_once(helper)
    titles = sorted(p.title for p in receiver.got()[3:])
    assert titles[0] == "[high] first — approved by alice"
    assert titles[1] == "[high] first — executed"
    assert titles[2].startswith("[high] fourth — cancelled")
    assert titles[3:] == [
        "[high] second — rejected by bob",
        "[high] third — waiting for approval",
    ]
    (rejected,) = [p for p in receiver.got() if p.title == "[high] second — rejected by bob"]
    assert "Reason: dup" in rejected.message
    run_once(helper)
    assert len(receiver.got()) == 8
    sent = {(r["request_id"], r["event"]) for r in outbox(vault_path) if r["sent_at"]}
    assert sent == {
        (first, "pending"),
        (second, "pending"),
        (fourth, "pending"),
        (first, "approved"),
        (first, "executed"),
        (second, "rejected"),
        (fourth, "cancelled"),
        (third, "pending"),
    }


def test_requests_made_through_the_api_while_no_daemon_ran_are_told_once_at_its_start(
    vault_path: Path, receiver: Receiver
) -> None:
    """Requests and decisions made with the Python API while no daemon ran are each told once
    when ``Vault.run(once=True)`` next starts; a later start tells none of them again."""
    add_notify(
        vault_path,
        f"""\
        - url: json://127.0.0.1:{receiver.port}/hook
          on: [pending, approved, rejected, executed]
        """,
    )

    def start_daemon() -> None:
        with Vault(vault_path) as vault:
            vault.action("payment")(lambda r: f"paid {r.params['amount']}")
            vault.run(once=True)

    with Vault(vault_path) as vault:
        early = vault.submit("payment", {"amount": 1500}, summary="early")
    start_daemon()
    assert [p.title for p in receiver.got()] == ["[high] early — waiting for approval"]

    with Vault(vault_path) as vault:  # the daemon is gone: a script asks and decides
        vault.approve(early.id, by="alice")
        later = vault.submit("payment", {"amount": 2500}, summary="later")
        vault.reject(later.id, by="bob")
        third = vault.submit("payment", {"amount": 3500}, summary="third")
    assert len(receiver.got()) == 1
    start_daemon()
    assert sorted(p.title for p in receiver.got()[1:]) == [
        "[high] early — approved by alice",
        "[high] early — executed",
        "[high] later — rejected by bob",  # never asked for: decided before anyone was told
        "[high] third — waiting for approval",
    ]
    start_daemon()  # a restart
    assert len(receiver.got()) == 5
    rows = [(r["request_id"], r["event"], r["attempts"]) for r in outbox(vault_path)]
    assert sorted(rows) == sorted(
        [
            (early.id, "pending", 1),
            (early.id, "approved", 1),
            (early.id, "executed", 1),
            (later.id, "rejected", 1),
            (third.id, "pending", 1),
        ]
    )


@pytest.mark.slow
@pytest.mark.process
def test_run_once_keeps_what_it_could_not_send_for_a_later_run(
    vault_path: Path, helper: VaultHelper, late_receiver: Receiver
) -> None:
    """``run --once`` with the receiver down still exits 0 and keeps the message with why;
    a later run, once the retry is due, sends it, once."""
    helper.set_quiet(QUIET)
    add_notify(vault_path, f"- url: json://127.0.0.1:{late_receiver.port}/hook")
    rid = submit_cli(helper, 1500, "Pay ACME")
    log = run_once(helper)
    assert "could not tell" in log and "Connection refused" in log
    (row,) = outbox(vault_path)
    assert row["attempts"] == 1 and row["sent_at"] is None
    assert "Connection refused" in row["last_error"]

    late_receiver.start()
    due = parse_ts(row["due"])  # 5 s after the failed try
    eventually(lambda: datetime.now(UTC) >= due, 20)  # then one run, not one run after another
    run_once(helper)
    assert late_receiver.got()
    run_once(helper)
    (post,) = late_receiver.got()
    assert rid in post.message
    (row,) = outbox(vault_path)
    assert row["attempts"] == 2 and row["sent_at"] is not None


@pytest.mark.process
@pytest.mark.slow
def test_a_daemon_killed_with_a_message_in_flight_sends_it_at_the_next_start(
    vault_path: Path, helper: VaultHelper
) -> None:
    """A daemon killed (kill -9) while a receiver holds its message unanswered sends that
    message again when it next starts: at least once, never lost, then never again."""
    silent = Silent()
    try:
        add_notify(vault_path, f"- url: json://127.0.0.1:{silent.port}/hook")
        with DaemonProcess(vault_path) as proc:
            rid = submit_cli(helper, 1500, "Pay ACME")
            eventually(lambda: silent.held, 15)  # the message is on its way
            proc.kill()
    finally:
        silent.close()
    (row,) = outbox(vault_path)
    assert (row["request_id"], row["attempts"], row["sent_at"]) == (rid, 0, None)
    receiver = Receiver(silent.port).start()  # the same receiver, answering now
    try:
        run_once(helper)
        run_once(helper)
    finally:
        receiver.stop()
    (post,) = receiver.got()
    assert post.title == "[high] Pay ACME — waiting for approval"
    (row,) = outbox(vault_path)
    assert row["attempts"] == 1 and row["sent_at"] is not None


# --- 6. a slow or dead receiver never delays a decision -------------------------------------


@pytest.mark.process
@pytest.mark.slow
def test_a_silent_and_an_unreachable_receiver_never_delay_an_approval(
    vault_path: Path, helper: VaultHelper
) -> None:
    """With one receiver that accepts but never answers and one that cannot be reached, a
    running daemon still executes an approval at once and moves its note to Done/."""
    helper.record_runs()
    silent = Silent()
    try:
        add_notify(
            vault_path,
            f"""\
            - url: json://127.0.0.1:{silent.port}/hook
              on: all
            - url: json://192.0.2.1:9/hook
              on: all
            """,
        )
        with DaemonProcess(vault_path) as proc:
            rid = submit_cli(helper, 1500, "Pay ACME")
            eventually(lambda: silent.held, 15)  # the sender is now stuck on its first send
            note = vault_path / "Pending_Approval" / f"{rid}.md"
            started = time.monotonic()
            set_status(note, "approved", decided_by="alice")
            eventually(lambda: helper.shows(rid, Status.EXECUTED, "Done"), 10)
            took = time.monotonic() - started
            assert took < 4, f"the approval took {took:.1f}s:\n{proc.log()}"
            assert helper.runs() == [rid]

            def silent_rows() -> list[dict[str, Any]]:
                return [r for r in outbox(vault_path) if f":{silent.port}/" in r["target"]]

            # The outcome's message is queued with the step's other words, within 50 ms of
            # the step (it may come after the note's move to Done/).
            eventually(lambda: any(r["event"] == "executed" for r in silent_rows()), 5)
            # Meanwhile the first send (pending, to the silent one) has not even ended.
            assert len(silent.held) == 1
            rows = silent_rows()
            assert {(r["event"], r["attempts"]) for r in rows} == {
                ("pending", 0),
                ("approved", 0),
                ("executed", 0),
            }, rows
            silent.close()  # the send in flight fails at once: the daemon stops promptly
            assert proc.stop() == 0, proc.log()
    finally:
        silent.close()


# --- 7. hitl-vault notify test ---------------------------------------------------------------


@pytest.mark.process
def test_notify_test_says_delivered_for_every_target(
    vault_path: Path, helper: VaultHelper, receiver: Receiver
) -> None:
    """``notify test`` sends a test message to every target and says "delivered" for each."""
    add_notify(
        vault_path,
        f"""\
        - url: json://127.0.0.1:{receiver.port}/hook
        - url: ntfy://127.0.0.1:{receiver.port}/approvals
        """,
    )
    done = helper.hitl("notify", "test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines() == [
        f"json://127.0.0.1:{receiver.port}/hook: delivered",
        f"ntfy://127.0.0.1:{receiver.port}/approvals: delivered",
    ]
    posts = receiver.wait_for(2)
    assert [p.title for p in posts] == ["hitl-vault: test notification"] * 2
    assert "'My Vault'" in posts[0].message
    assert posts[1].payload["topic"] == "approvals"
    assert outbox(vault_path) == []  # a test message is not a notification to keep


@pytest.mark.process
def test_notify_test_names_the_failing_target_and_keeps_secrets_out(
    vault_path: Path, helper: VaultHelper, receiver: Receiver
) -> None:
    """``notify test`` exits 1 naming each target that failed and why: a receiver that is
    down, or a ${NAME} that is not set (with the file, line and fix), and never prints the
    value of a variable that is set."""
    down = free_port()
    token, password = "tok-S3cretValue-7781", "pw-Sup3rSecret-4412"
    first = add_notify(
        vault_path,
        f"""\
        - url: json://127.0.0.1:{receiver.port}/hook/${{HOOK_TOKEN}}
        - url: json://bot:${{HOOK_PASS}}@127.0.0.1:{down}/hook
        - url: json://127.0.0.1:{receiver.port}/other/${{HITL_TEST_UNSET}}
        """,
    )
    env = {k: v for k, v in os.environ.items() if k != "HITL_TEST_UNSET"}
    env |= {"HOOK_TOKEN": token, "HOOK_PASS": password}
    done = helper.hitl("notify", "test", env=env)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    ok, refused, unset = done.stdout.splitlines()
    assert ok == f"json://127.0.0.1:{receiver.port}/hook/${{HOOK_TOKEN}}: delivered"
    assert refused.startswith(f"json://bot:${{HOOK_PASS}}@127.0.0.1:{down}/hook: NOT delivered: ")
    assert "Connection refused" in refused
    assert unset.startswith(
        f"json://127.0.0.1:{receiver.port}/other/${{HITL_TEST_UNSET}}: NOT delivered: "
        f"{RULES} line {first + 2}: "
    )
    assert "${HITL_TEST_UNSET}, which is not set" in unset
    assert unset.endswith("(set HITL_TEST_UNSET in the daemon's environment)")
    assert token not in output and password not in output
    (post,) = receiver.wait_for(1)
    assert post.path == f"/hook/{token}"  # the value was used, only never shown


@pytest.mark.process
def test_a_daemon_keeps_secrets_out_of_the_journal_and_its_log(
    vault_path: Path, helper: VaultHelper, receiver: Receiver
) -> None:
    """A ${NAME} in a URL is filled only to send: its value is in no journal file and no log
    line, a failed send is kept with a masked error, and one that is not set says the fix."""
    down = free_port()
    token, password = "tok-S3cretValue-9907", "pw-Sup3rSecret-2203"
    first = add_notify(
        vault_path,
        f"""\
        - url: json://bot:${{HOOK_PASS}}@127.0.0.1:{down}/hook/${{HOOK_TOKEN}}
        - url: json://bot:${{HOOK_PASS}}@127.0.0.1:{receiver.port}/hook/${{HOOK_TOKEN}}
        - url: json://127.0.0.1:{receiver.port}/other/${{HITL_TEST_UNSET}}
        """,
    )
    env = {k: v for k, v in os.environ.items() if k != "HITL_TEST_UNSET"}
    env |= {"HOOK_TOKEN": token, "HOOK_PASS": password}
    submit_cli(helper, 1500, "Pay ACME")
    log = run_once(helper, env)
    (post,) = receiver.wait_for(1)
    assert post.path == f"/hook/{token}"
    assert password in base64.b64decode(post.headers["Authorization"][6:]).decode()
    refused, delivered, unset = outbox(vault_path)
    assert refused["target"] == f"json://bot:${{HOOK_PASS}}@127.0.0.1:{down}/hook/${{HOOK_TOKEN}}"
    assert "Connection refused" in refused["last_error"] and refused["sent_at"] is None
    assert delivered["sent_at"] is not None
    assert unset["sent_at"] is None
    assert f"{RULES} line {first + 2}" in unset["last_error"]
    assert "set HITL_TEST_UNSET in the daemon's environment" in unset["last_error"]
    assert "could not tell" in log and "HITL_TEST_UNSET" in log
    stored = b"".join(p.read_bytes() for p in (vault_path / ".hitl").glob("journal.db*"))
    for secret in (token, password):
        assert secret not in log
        assert secret.encode() not in stored
        assert secret not in (vault_path / "Dashboard.md").read_text()


# --- 8. a broken notify entry -----------------------------------------------------------------


@pytest.mark.process
@pytest.mark.parametrize(
    ("entry", "at", "says"),
    [
        ("- url: json://127.0.0.1:9/hook\n  onn: [pending]", 1, 'unknown key "onn"'),
        ("- url: json://127.0.0.1:9/hook\n  on: [pending, aproved]", 1, 'unknown event "aproved"'),
        ("- url: 127.0.0.1:9/hook", 0, "has no scheme://"),
        ("- url: ntfyy://127.0.0.1:9/topic", 0, 'did you mean "ntfy://"?'),
    ],
    ids=["unknown-key", "unknown-event", "no-scheme", "unknown-service"],
)
@pytest.mark.parametrize("command", [("run", "--once"), ("notify", "test")], ids=" ".join)
def test_a_broken_notify_entry_is_one_line_naming_the_file_and_line(
    vault_path: Path, helper: VaultHelper, entry: str, at: int, says: str, command: tuple[str, ...]
) -> None:
    """A mistake in notify: stops the command with one line naming hitl-vault.yaml, the line
    and what is wrong, exit 1, no traceback."""
    line = add_notify(vault_path, entry) + at
    done = helper.hitl(*command)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    (error,) = [x for x in done.stderr.splitlines() if " INFO " not in x]  # run logs INFO too
    assert error.startswith(f"Error: {RULES} line {line}: "), error
    assert says in error


def test_a_broken_edit_under_a_running_daemon_keeps_the_last_good_targets(
    vault_path: Path, clock: Clock, helper: VaultHelper, receiver: Receiver
) -> None:
    """A broken notify: edit under a running daemon is listed under Needs attention and
    notifications keep going to the targets loaded before; a good edit then takes effect."""
    other = Receiver().start()
    try:
        line = add_notify(vault_path, f"- url: json://127.0.0.1:{receiver.port}/hook")
        rules = vault_path / RULES
        with stepped(vault_path, clock) as (vault, daemon):
            quiet = vault.policy.defaults.quiet
            first = vault.submit("payment", {"amount": 1500}, summary="first")
            daemon.run_once(clock.now)
            daemon.notifier.send_due()

            good = rules.read_text()
            moved = good.replace(str(receiver.port), str(other.port))
            rules.write_text(moved.replace("/hook\n", "/hook\n    on: [pending, aproved]\n"))
            daemon.notice(rules)
            daemon.run_once(clock.now)
            daemon.run_once(clock.advance(quiet))  # reloaded once quiet: refused
            attention = helper.attention(daemon, clock)
            assert f"{RULES} line {line + 1}" in attention and "aproved" in attention
            assert any(a.path == RULES for a in vault.engine.journal.attention())

            second = vault.submit("payment", {"amount": 1600}, summary="second")
            daemon.run_once(clock.now)
            daemon.notifier.send_due()
            assert [p.title for p in receiver.got()] == [
                "[high] first — waiting for approval",
                "[high] second — waiting for approval",
            ]
            assert other.got() == []

            rules.write_text(moved)
            daemon.notice(rules)
            daemon.run_once(clock.now)
            daemon.run_once(clock.advance(quiet))  # a good edit is loaded
            assert not any(a.path == RULES for a in vault.engine.journal.attention())
            third = vault.submit("payment", {"amount": 1700}, summary="third")
            daemon.run_once(clock.now)
            daemon.notifier.send_due()
    finally:
        other.stop()
    assert [p.message.split("\n")[0] for p in other.got()] == ["third"]
    assert len(receiver.got()) == 2
    assert {r["request_id"] for r in outbox(vault_path)} == {first.id, second.id, third.id}


# --- 9. reminders ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("where", "before"),
    [("defaults", timedelta(minutes=50)), ("rule", timedelta(minutes=20))],
)
def test_one_reminder_is_sent_remind_before_the_expiry(
    vault_path: Path, clock: Clock, receiver: Receiver, where: str, before: timedelta
) -> None:
    """``remind_before`` (in defaults, or a rule's own, which wins) sends exactly one reminder
    that long before a pending request expires, never earlier, and not again after a restart."""
    edit_rules(vault_path, "\ndefaults:\n", "\ndefaults:\n  remind_before: 50m\n")
    if where == "rule":
        edit_rules(vault_path, "    timeout: 1h\n", "    timeout: 1h\n    remind_before: 20m\n")
    add_notify(
        vault_path,
        f"""\
        - url: json://127.0.0.1:{receiver.port}/hook
          on: [pending, reminder]
        """,
    )
    with stepped(vault_path, clock) as (vault, daemon):
        req = vault.submit("payment", {"amount": 1500}, summary="Pay ACME")
        assert req.expires is not None and req.expires - clock.now == timedelta(hours=1)
        due = req.expires - before
        daemon.run_once(clock.now)
        daemon.notifier.send_due()
        assert len(receiver.got()) == 1
        daemon.run_once(clock.advance(due - clock.now - timedelta(seconds=1)))
        daemon.notifier.send_due()
        assert [p.title for p in receiver.got()] == ["[high] Pay ACME — waiting for approval"]
        assert daemon.notifier.next_wake(clock.now) == due  # what the daemon wakes up for

        daemon.run_once(clock.advance(timedelta(seconds=2)))
        daemon.notifier.send_due()
        for step in (timedelta(seconds=1), timedelta(minutes=1), timedelta(minutes=5)):
            daemon.run_once(clock.advance(step))
            daemon.notifier.send_due()
    with stepped(vault_path, clock) as (vault, daemon):  # a restart, still before expiry
        daemon.run_once(clock.advance(timedelta(minutes=1)))
        daemon.notifier.send_due()
    titles = [p.title for p in receiver.got()]
    assert titles == [
        "[high] Pay ACME — waiting for approval",
        "[high] Pay ACME — still waiting for approval",
    ]
    reminder = receiver.got()[1].message
    assert f"Decide by: {req.expires:%Y-%m-%dT%H:%M}Z" in reminder
    assert f"hitl-vault approve {req.id}" in reminder
    assert [r["event"] for r in outbox(vault_path)] == ["pending", "reminder"]


@pytest.mark.process
@pytest.mark.slow
def test_a_reminder_falls_due_on_time_while_another_request_waits(
    vault_path: Path, helper: VaultHelper, receiver: Receiver
) -> None:
    """A running daemon sends each request's reminder when it falls due, even while an older
    request, already reminded, is still pending."""
    helper.set_quiet(QUIET)
    # Seconds apart, so that a loaded machine cannot swap what the test orders.
    edit_rules(vault_path, "\ndefaults:\n", "\ndefaults:\n  remind_before: 5s\n")
    add_notify(
        vault_path,
        f"""\
        - url: json://127.0.0.1:{receiver.port}/hook
          on: [reminder, timed_out]
        """,
    )
    with DaemonProcess(vault_path) as proc:
        submit_cli(helper, 1500, "older", "--timeout", "10s")  # reminded 5 s on, expires at 10 s
        now = datetime.now(UTC)
        time.sleep(1.05 - now.microsecond / 1e6)  # pacing: expiries are kept to the second
        submit_cli(helper, 1600, "newer", "--timeout", "10s")  # its reminder: 6 s, before 10 s
        receiver.wait_for(4, timeout=40)  # two reminders, two timeouts
        proc.stop()
    titles = [p.title for p in receiver.got()]
    assert titles.index("[high] newer — still waiting for approval") < titles.index(
        "[high] older — timed out, nobody decided"
    ), titles
