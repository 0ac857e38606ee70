"""Notifications: the notify: list, the message, and real deliveries to local receivers."""

from __future__ import annotations

import email
import email.policy
import logging
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from hitl_vault.errors import RulesError
from hitl_vault.model import Request, Risk, Status
from hitl_vault.notify import send as sending
from hitl_vault.notify.config import EVENTS, Event, Target, parse_notify, parse_vault_name
from hitl_vault.notify.message import compose, obsidian_uri
from hitl_vault.notify.send import MESSAGE_LIMIT, Message, send

from .receivers import Receiver, free_port, smtp_server

NOTE = "Pending_Approval/20261122T101500Z-payment-7f3a2c.md"
LINK = "obsidian://open?vault=My%20Vault&file=20261122T101500Z-payment-7f3a2c.md"


def a_request(**changes: Any) -> Request:
    request = Request(
        id="20261122T101500Z-payment-7f3a2c",
        status=Status.PENDING,
        action="payment",
        summary="Pay ACME $1,500",
        risk=Risk.HIGH,
        rule="large-payments",
        requested_by="invoice-bot",
        created=datetime(2026, 11, 22, 10, 15, tzinfo=UTC),
        expires=datetime(2026, 11, 22, 11, 15, 42, tzinfo=UTC),
        params={"amount": 1500, "recipient": "vendor@example.com"},
    )
    return replace(request, **changes)


def notify_node(text: str) -> Any:
    """The node under the top-level ``notify:`` of a rules file, as the daemon composes it."""
    root = yaml.compose(textwrap.dedent(text))
    assert root is not None
    return next(value for key, value in root.value if key.value == "notify")


def parse(text: str) -> tuple[Target, ...]:
    return parse_notify(notify_node(text), "hitl-vault.yaml")


def parse_error(text: str) -> RulesError:
    with pytest.raises(RulesError) as caught:
        parse(text)
    return caught.value


# --- the notify: list ----------------------------------------------------------


def test_targets_are_read_with_their_events_filters_and_lines() -> None:
    """A notify: list becomes targets with their events, filters and line numbers."""
    targets = parse(
        """\
        rules: []
        notify:
          - url: ntfy://ntfy.sh/my-approvals
          - url: json://127.0.0.1:8080/hook
            on: [pending, executed, failed]
            risk: [high, critical]
            rules: large-payments
            actions: [payment, refund]
          - url: mailto://me:${SMTP_PASSWORD}@example.com
            on: all
        """
    )
    assert [t.line for t in targets] == [3, 4, 9]
    assert targets[0].events == {Event.PENDING}
    assert targets[0].risk is targets[0].rules is targets[0].actions is None
    assert targets[1].events == {"pending", "executed", "failed"}
    assert targets[1].risk == frozenset({Risk.HIGH, Risk.CRITICAL})
    assert targets[1].rules == frozenset({"large-payments"})
    assert targets[1].actions == frozenset({"payment", "refund"})
    assert targets[2].events == EVENTS


def test_wants_applies_events_and_every_filter() -> None:
    """A target is told only about the events, risks, rules and actions it asked for."""
    target = Target(
        "json://h/x",
        frozenset({Event.PENDING}),
        risk=frozenset({Risk.HIGH}),
        rules=frozenset({"large-payments"}),
        actions=frozenset({"payment"}),
    )
    request = a_request()
    assert target.wants("pending", request)
    assert not target.wants(Event.EXECUTED, request)
    assert not target.wants("pending", replace(request, risk=Risk.LOW))
    assert not target.wants("pending", replace(request, rule="other"))
    assert not target.wants("pending", replace(request, action="refund"))
    assert Target("json://h/x").wants("pending", replace(request, risk=Risk.LOW))


@pytest.mark.parametrize(
    ("text", "line", "problem", "fix"),
    [
        ("notify: ntfy://ntfy.sh/x\n", 1, "notify must be a list", "- url:"),
        ("notify:\n  - url: ntfy://h/t\n    rule: x\n", 3, 'unknown key "rule"', '"rules"'),
        ("notify:\n  - url: ntfy://h/t\n  - on: [pending]\n", 3, "has no url", "add url:"),
        (
            "notify:\n  - url: ntfy://h/t\n    on: [pending, aproved]\n",
            3,
            '"aproved"',
            '"approved"',
        ),
        ("notify:\n  - url: ntfy://h/t\n    on: []\n", 3, "empty list", "write an event"),
        ("notify:\n  - url: ntfy://h/t\n    risk: hihg\n", 3, '"hihg" is not valid', '"high"'),
        ("notify:\n  - url: ntfyy://h/t\n", 2, '"ntfyy://"', 'did you mean "ntfy://"'),
        ("notify:\n  - url: ntfy.sh/topic\n", 2, "has no scheme://", "ntfy://"),
        ("notify:\n  - url: json://h/${bad-name}\n", 2, "not a variable name", "${NAME}"),
        ("notify:\n  - url: json://h/${OPEN\n", 2, 'without its "}"', "ntfy://"),
        ("notify:\n  - url: mailto://\n", 2, "not a URL Apprise can use", "Apprise page"),
        ("notify:\n  - url: [a, b]\n", 2, "must be a single value", "ntfy://"),
        ("notify:\n  - url: json://h/x\n    url: json://h/y\n", 3, "appears twice", "one of"),
    ],
)
def test_every_problem_names_its_line_and_fix(text: str, line: int, problem: str, fix: str) -> None:
    """A mistake in notify: is an error at its line, saying what is wrong and what to write."""
    error = parse_error(text)
    assert (error.where, error.line) == ("hitl-vault.yaml", line)
    assert problem in error.problem
    assert fix in error.fix
    assert str(error).startswith(f"hitl-vault.yaml line {line}: ")


def test_empty_notify_means_no_targets() -> None:
    """``notify:`` with nothing under it tells nobody, rather than failing."""
    assert parse("notify:\n") == ()


def test_a_placeholder_unset_at_parse_time_is_not_a_bad_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ${NAME} missing from the shell that reads the file is not reported as a bad URL."""
    monkeypatch.delenv("BOT_TOKEN", raising=False)
    monkeypatch.delenv("CHAT_ID", raising=False)
    (target,) = parse("notify:\n  - url: tgram://${BOT_TOKEN}/${CHAT_ID}\n")
    assert target.url == "tgram://${BOT_TOKEN}/${CHAT_ID}"


def test_resolved_url_fills_placeholders_and_names_a_missing_one() -> None:
    """${NAME} is filled from the environment; a missing one is an error saying what to set."""
    first, second = parse(
        """\
        notify:
          - url: json://127.0.0.1:8080/hook
          - url: mailto://me:${SMTP_PASSWORD}@example.com?to=${TO}
        """
    )
    env = {"SMTP_PASSWORD": "hunter2", "TO": "ops@example.com"}
    assert first.resolved_url(env) == "json://127.0.0.1:8080/hook"
    assert second.resolved_url(env) == "mailto://me:hunter2@example.com?to=ops@example.com"
    with pytest.raises(RulesError) as caught:
        second.resolved_url({"SMTP_PASSWORD": "", "PATH": "/bin"})
    error = caught.value
    assert (error.where, error.line) == ("hitl-vault.yaml", 3)
    assert "${SMTP_PASSWORD} and ${TO}" in error.problem
    assert error.fix == "set SMTP_PASSWORD and TO in the daemon's environment"
    with pytest.raises(RulesError) as caught:
        second.resolved_url({"SMTP_PASSWORD": "hunter2"})
    assert "needs ${TO}, which is not set" in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_shown_masks_passwords_and_keeps_placeholders() -> None:
    """What logs and the CLI print hides a literal password or ntfy token, keeping ${NAME}."""
    assert Target("mailto://me:hunter2@example.com").shown == "mailto://me:****@example.com"
    assert Target("mailto://me:${PW}@example.com").shown == "mailto://me:${PW}@example.com"
    assert (
        Target("ntfy://h/topic?token=tk_abc&priority=high").shown
        == "ntfy://h/topic?token=****&priority=high"
    )
    assert Target("json://h/x?token=${T}").shown == "json://h/x?token=${T}"
    assert Target("ntfys://tk_abc123@ntfy.example.com/alice").shown == (
        "ntfys://****@ntfy.example.com/alice"
    )
    assert Target("ntfys://${NTFY_TOKEN}@h/t").shown == "ntfys://${NTFY_TOKEN}@h/t"
    assert "hunter2" not in repr(Target("mailto://me:hunter2@example.com"))


def test_a_parse_error_never_prints_a_password_from_the_file() -> None:
    """An error about a URL with a literal password shows the URL with the password masked."""
    error = parse_error("notify:\n  - url: mailtos://me:hunter2@smtp.example.com?mode=bogus\n")
    assert "hunter2" not in str(error)
    assert "mailtos://me:****@smtp.example.com?mode=bogus" in error.problem
    assert "bogus" in error.problem  # Apprise's own reason


@pytest.mark.process
def test_importing_the_module_does_not_load_apprise() -> None:
    """Every CLI command may import notify.message; only sending or checking loads Apprise."""
    code = (
        "import sys, hitl_vault.notify.message, hitl_vault.notify.config;"
        " print('apprise' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_vault_name_is_one_line_of_text() -> None:
    """The vault name for links is read as text, and a blank one is refused at its line."""
    root = yaml.compose("vault_name: My Vault\nother: 1\n")
    blank = yaml.compose('x: 1\nvault_name: "  "\n')
    assert root is not None and blank is not None
    assert parse_vault_name(root.value[0][1]) == "My Vault"
    with pytest.raises(RulesError) as caught:
        parse_vault_name(blank.value[1][1])
    assert caught.value.line == 2


# --- the message -------------------------------------------------------------------


def test_obsidian_uri_percent_encodes_everything() -> None:
    """Obsidian links survive spaces, #, &, / and non-ASCII in the vault name and path."""
    assert obsidian_uri("My Vault", "Pending_Approval/a b#c&d é.md") == (
        "obsidian://open?vault=My%20Vault&file=Pending_Approval%2Fa%20b%23c%26d%20%C3%A9.md"
    )
    assert obsidian_uri("R&D #1", "x.md") == "obsidian://open?vault=R%26D%20%231&file=x.md"
    assert obsidian_uri("Ärger", "Ü.md") == "obsidian://open?vault=%C3%84rger&file=%C3%9C.md"


def test_pending_message_says_what_is_asked_and_how_to_decide() -> None:
    """The pending message holds the ask, params, rule, requester, expiry, context and links."""
    message = compose(
        "pending",
        a_request(),
        note=NOTE,
        vault_name="My Vault",
        why="Matched rule `large-payments`: payment with amount >= 500 needs approval.",
        context="Invoice INV-2024-001 is due Friday.",
    )
    assert message.title == "[high] Pay ACME $1,500 — waiting for approval"
    body = message.body
    for part in (
        "Action: payment",
        "- amount: 1500\n- recipient: vendor@example.com",
        "Rule: large-payments — payment with amount >= 500 needs approval.",
        "Requested by: invoice-bot",
        "Decide by: 2026-11-22T11:15Z",
        "Invoice INV-2024-001 is due Friday.",
        "set status: approved or status: rejected in the note",
        "hitl-vault approve 20261122T101500Z-payment-7f3a2c",
        "hitl-vault reject 20261122T101500Z-payment-7f3a2c",
        f"Note: {NOTE}",
        LINK,
    ):
        assert part in body


@pytest.mark.parametrize(
    ("event", "changes", "title_end", "says"),
    [
        (
            "approved",
            {"status": Status.APPROVED, "decided_by": "alice"},
            "approved by alice",
            "Decided: approved by alice",
        ),
        (
            "rejected",
            {"status": Status.REJECTED, "decided_by": "bob", "reason": "wrong vendor"},
            "rejected by bob",
            "Reason: wrong vendor",
        ),
        ("timed_out", {"status": Status.TIMED_OUT}, "timed out, nobody decided", "nobody decided"),
        (
            "executed",
            {"status": Status.EXECUTED, "decided_by": "alice", "result": "paid, entry 2"},
            "executed",
            "Result: paid, entry 2",
        ),
        ("failed", {"status": Status.FAILED, "error": "bank said 503"}, "failed", "Error: bank"),
    ],
)
def test_outcome_messages_say_the_outcome(
    event: str, changes: dict[str, Any], title_end: str, says: str
) -> None:
    """After a decision or a run, the message says who decided, why, and what came of it."""
    message = compose(event, a_request(**changes), note=NOTE, vault_name="My Vault")
    assert message.title.endswith(f" — {title_end}")
    assert says in message.body
    assert "hitl-vault approve" not in message.body  # nothing left to decide
    assert LINK in message.body


def test_long_params_are_cut_first_with_a_count_of_the_rest() -> None:
    """Many params still give a message under the limit, saying how many were left out."""
    params = {f"item{i:03}": "x" * 150 for i in range(200)}
    message = compose(
        "pending",
        a_request(params=params),
        note=NOTE,
        vault_name="My Vault",
        context="Short context stays whole.",
    )
    assert len(message.title) + len(message.body) <= MESSAGE_LIMIT
    shown = message.body.count("\n- item")
    assert 0 < shown < 200
    assert f"…and {200 - shown} more" in message.body
    assert "Short context stays whole." in message.body
    assert LINK in message.body


def test_a_huge_context_is_cut_after_the_params() -> None:
    """When the agent's context alone is too long, params go first, then the context is cut."""
    message = compose(
        "pending",
        a_request(params={"a": 1, "b": "two"}),
        note=NOTE,
        vault_name="My Vault",
        context="word " * 2000,
    )
    assert len(message.title) + len(message.body) <= MESSAGE_LIMIT
    assert "…and 2 more" in message.body
    assert "Context:\nword word" in message.body
    assert "…\n" in message.body
    assert message.body.endswith(LINK)


def test_values_from_outside_cannot_hide_or_break_lines() -> None:
    """Invisible characters and line breaks in the summary and params are removed."""
    request = a_request(summary="Pay\u202e 0051$ \nnow", params={"to\nx": "a\u200bb"})
    message = compose("pending", request, note=NOTE, vault_name="V")
    assert message.title == "[high] Pay 0051$ now — waiting for approval"
    assert "- to x: ab" in message.body


# --- real deliveries -----------------------------------------------------------------


@pytest.fixture
def http_receiver() -> Iterator[Receiver]:
    """A real HTTP server on 127.0.0.1 that records each POST."""
    receiver = Receiver().start()
    try:
        yield receiver
    finally:
        receiver.stop()


def pending_message() -> Message:
    return compose("pending", a_request(), note=NOTE, vault_name="My Vault", why="big.")


def test_json_post_arrives_with_title_body_and_link(http_receiver: Receiver) -> None:
    """A json:// target receives one POST with the title, the body and the Obsidian link."""
    message = pending_message()
    assert send(f"json://127.0.0.1:{http_receiver.port}/hitl/hook", message) is None
    [post] = http_receiver.wait_for(1)
    assert post.path == "/hitl/hook"
    payload = post.payload
    assert payload["title"] == message.title
    assert payload["message"] == message.body
    assert LINK in payload["message"]


def test_ntfy_post_arrives_with_topic_title_and_link(http_receiver: Receiver) -> None:
    """An ntfy:// target on a self-hosted server receives the topic, the title and the link."""
    message = pending_message()
    assert send(f"ntfy://127.0.0.1:{http_receiver.port}/approvals", message) is None
    [post] = http_receiver.wait_for(1)
    payload = post.payload
    assert payload["topic"] == "approvals"
    assert payload["title"] == message.title
    assert LINK in payload["message"]
    assert "hitl-vault approve 20261122T101500Z-payment-7f3a2c" in payload["message"]


def test_mailto_delivers_a_real_email_to_a_local_smtp_server() -> None:
    """A mailto:// target sends a plain-text e-mail through a plain, no-auth SMTP server."""
    with smtp_server() as (port, received):
        message = pending_message()
        url = f"mailto://127.0.0.1:{port}?from=hitl@example.com&to=alice@example.com"
        assert send(url, message) is None
        mail = email.message_from_bytes(received.get(timeout=10), policy=email.policy.default)
    assert mail["Subject"] == message.title
    assert mail["To"] == "alice@example.com"
    text: Any = mail.get_body(preferencelist=("plain",))
    assert LINK in text.get_content()


def test_a_receiver_that_is_down_gives_an_error_text_at_once() -> None:
    """Sending to a port nobody listens on returns why, quickly, and raises nothing."""
    port = free_port()
    started = time.monotonic()
    error = send(f"json://127.0.0.1:{port}/hook", pending_message())
    assert time.monotonic() - started < 8
    assert error is not None
    assert "Connection refused" in error
    assert "\n" not in error


def test_a_receiver_that_never_answers_costs_a_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A receiver that accepts but never answers makes the send give up after READ_TIMEOUT."""
    monkeypatch.setattr(sending, "READ_TIMEOUT", 0.5)
    with socket.create_server(("127.0.0.1", 0), backlog=5) as silent:
        port = silent.getsockname()[1]
        started = time.monotonic()
        error = send(f"json://127.0.0.1:{port}/hook", pending_message())
        elapsed = time.monotonic() - started
    assert error is not None
    assert "timed out" in error.lower()
    assert elapsed < 5


def test_a_timeout_written_in_the_url_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    """A URL's own rto= is kept: the user's bound applies, not hitl-vault's."""
    monkeypatch.setattr(sending, "READ_TIMEOUT", 60.0)
    with socket.create_server(("127.0.0.1", 0), backlog=5) as silent:
        port = silent.getsockname()[1]
        started = time.monotonic()
        error = send(f"ntfy://127.0.0.1:{port}/topic?rto=0.5", pending_message())
        elapsed = time.monotonic() - started
    assert error is not None
    assert "timed out" in error.lower()
    assert elapsed < 5


def test_an_smtp_server_that_never_greets_costs_a_bounded_time(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An SMTP server that accepts but never says hello makes the send give up, with why."""
    monkeypatch.setattr(sending, "CONNECT_TIMEOUT", 0.5)
    with socket.create_server(("127.0.0.1", 0), backlog=5) as silent:
        port = silent.getsockname()[1]
        started = time.monotonic()
        url = f"mailto://127.0.0.1:{port}?from=hitl@example.com&to=alice@example.com"
        error = send(url, pending_message())
        elapsed = time.monotonic() - started
    assert error is not None
    assert "127.0.0.1" in error
    assert elapsed < 5


def test_a_failed_send_shows_and_logs_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    """The error text and the log never hold the resolved URL's password or token."""
    port = free_port()
    caplog.set_level(logging.DEBUG)
    url = f"json://bob:s3cretpass@127.0.0.1:{port}/t0kenvalue?key=k3yvalue"
    error = send(url, pending_message())
    assert error is not None
    for secret in ("s3cretpass", "t0kenvalue", "k3yvalue"):
        assert secret not in error
        assert secret not in caplog.text
    assert logging.getLogger("apprise").level == logging.NOTSET  # put back as it was


def test_a_url_apprise_cannot_read_is_an_error_text() -> None:
    """A resolved URL Apprise cannot use (say a bad value in a variable) is reported, not raised."""
    error = send("mailto://", pending_message())
    assert error is not None
    assert error.startswith("Apprise cannot use this URL")
