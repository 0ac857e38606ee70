"""People's own channels are asked what that person may decide now (pending, a reminder, an
escalation to them), addressed to them, each with a decision link of their own; shared
targets never get a link. A real daemon stepped on a clock, real Apprise sends to a real
HTTP receiver and a real SMTP server on 127.0.0.1, real signed links."""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import logging
import re
import sqlite3
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hitl_vault import Vault
from hitl_vault.access import links
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.identity import Person
from hitl_vault.notify.people import NO_LINK
from hitl_vault.serve.message_links import decision_links

from .helpers import Clock, eventually
from .receivers import Receiver, smtp_server

PUBLIC = "https://vault.example.com"
RULES = """\
defaults:
  decision: ask
  timeout: 24h
  quiet: 200ms
  remind_before: 1h
rules:
  - name: deploy
    action: deploy
    decision: ask
    approvers: [alice, bob]
    escalate_after: 30m
    escalate_to: [dave]
  - name: wires
    action: wire
    decision: ask
    stages:
      - {name: lead, approvers: [alice], quorum: 1}
      - {name: finance, approvers: [bob], quorum: 1}
  - name: mail
    action: email
    decision: ask
"""
LINK = re.compile(r"https://vault\.example\.com/d/([A-Za-z0-9._-]+)")


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


class Team:
    """A vault on a clock with alice, bob and dave (approvers), carol and a disabled erin,
    each with a json:// channel of their own, and a shared target on the same receiver."""

    def __init__(self, root: Path, receiver: Receiver, clock: Clock) -> None:
        self.receiver, self.clock = receiver, clock
        self.tag = root.parent.name
        init_vault(root)
        shared = f"notify:\n  - url: {self.url('shared')}\n    on: [pending, reminder, escalated]\n"
        (root / "hitl-vault.yaml").write_text(RULES + shared)
        self.vault = Vault(root, clock=clock)
        self.journal = self.vault.engine.journal
        for name in ("alice", "bob", "carol", "dave", "erin"):
            person = Person(name, notify=(self.url(name),), disabled=name == "erin")
            self.journal.save_person(person, clock.now, "owner", "person added")
        self.daemon = self.start()

    def url(self, who: str) -> str:
        return f"json://127.0.0.1:{self.receiver.port}/{self.tag}/{who}"

    def start(self) -> Daemon:
        daemon = Daemon(self.vault.engine, clock=self.clock, links=decision_links(self.journal))
        daemon.run_once(self.clock.now)  # the notifier's cursor starts here
        return daemon

    def step(self, after: timedelta = timedelta(seconds=1)) -> None:
        self.daemon.run_once(self.clock.advance(after))
        self.daemon.notifier.send_due(self.clock.now)

    def got(self, who: str) -> list[str]:
        return [f"{p.title}\n{p.message}" for p in self.receiver.got(f"/{self.tag}/{who}")]

    def told(self, who: str, count: int) -> list[str]:
        eventually(lambda: len(self.got(who)) >= count, 15)
        return self.got(who)

    def close(self) -> None:
        self.daemon.close()
        self.vault.close()


@pytest.fixture
def team(tmp_path: Path, receiver: Receiver, clock: Clock) -> Iterator[Team]:
    t = Team(tmp_path / "vault", receiver, clock)
    t.journal.set_setting("public_url", PUBLIC, clock.now, "owner")
    try:
        yield t
    finally:
        t.close()


def test_who_may_decide_is_asked_by_name_with_a_link_of_their_own(team: Team) -> None:
    """alice and bob (the deploy rule's approvers) are each asked with a link that checks
    out as theirs for this request; carol (no approver) and disabled erin are not; a rule
    with no approvers asks every enabled person; the shared target hears with no link."""
    rid = team.vault.submit("deploy", {"service": "api"}, requested_by="agent").id
    team.vault.submit("email", {"to": "x@example.com"}, requested_by="agent")
    team.step()
    alice = next(m for m in team.told("alice", 2) if "deploy" in m.splitlines()[0])
    assert alice.startswith("You may approve: [medium] deploy: service=api — waiting for")
    assert "alice, you may approve or reject this request in the vault 'vault'." in alice
    assert f"hitl-vault approve {rid} --by alice" in alice
    found = LINK.search(alice)
    assert found is not None and f"Decide here: {found.group()}" in alice
    grant = links.check(team.journal, found.group(1), now=team.clock.now)
    assert (grant.request_id, grant.person) == (rid, "alice")
    bob = next(m for m in team.told("bob", 2) if "deploy" in m.splitlines()[0])
    bob_link = LINK.search(bob)
    assert bob_link is not None and bob_link.group(1) != found.group(1)
    for name in ("carol", "dave"):  # no approver of the deploy; asked for the e-mail
        (message,) = team.told(name, 1)
        assert message.startswith("You may approve: [") and "email: to=x@example.com" in message
        assert f"{name}, you may" in message
    assert team.got("erin") == []
    shared = team.told("shared", 2)
    assert all("/d/" not in m and "You may" not in m and PUBLIC not in m for m in shared)


def test_escalation_and_the_next_stage_ask_the_people_they_make_deciders(team: Team) -> None:
    """An escalation asks dave (alice is not asked again); a stage met asks its next
    approvers, once."""
    team.vault.submit("deploy", {"service": "db"}, requested_by="agent")
    wire = team.vault.submit("wire", {"amount": 5}, requested_by="agent").id
    team.step()
    assert len(team.told("alice", 2)) == 2  # the deploy, and the wire's first stage
    assert team.got("dave") == [] and len(team.told("bob", 1)) == 1  # bob: the deploy only
    team.vault.approve(wire, by="alice")
    team.step(timedelta(minutes=31))  # the deploy escalates
    (dave,) = team.told("dave", 1)
    assert dave.startswith("Escalated to you: [medium] deploy: service=db")
    bob = team.told("bob", 2)
    assert bob[1].startswith("You may approve: [medium] wire: amount=5")
    team.step()
    asked = [m for m in team.got("alice") if "in your name" not in m.splitlines()[0]]
    assert len(asked) == 2 and len(team.got("bob")) == 2  # alice's vote was told to her


def test_nothing_is_asked_twice_after_a_restart_and_a_reminder_comes_once(
    team: Team, clock: Clock
) -> None:
    """A new daemon on the same store asks nobody again; the reminder before expiry is asked
    of those who may still decide, once, across a restart too."""
    team.vault.submit("email", {"to": "y@example.com"}, requested_by="agent")
    team.step()
    team.told("carol", 1)
    team.daemon.close()
    team.daemon = team.start()
    team.step(timedelta(hours=22, minutes=59))
    assert len(team.got("carol")) == 1
    team.step(timedelta(minutes=2))  # within remind_before of expiry
    reminded = team.told("carol", 2)[1]
    assert reminded.startswith("Reminder, you may approve: ") and LINK.search(reminded)
    team.daemon.close()
    team.daemon = team.start()
    team.step()
    assert len(team.got("carol")) == 2


def test_without_a_public_url_the_message_has_no_link_and_says_how_to_get_one(
    tmp_path: Path, receiver: Receiver, clock: Clock
) -> None:
    """No ``serve --public-url`` recorded: the person is still asked, with no link, told
    how links come, and how to decide without one."""
    t = Team(tmp_path / "vault", receiver, clock)
    try:
        rid = t.vault.submit("deploy", {"service": "web"}, requested_by="agent").id
        t.step()
        (alice,) = t.told("alice", 1)
    finally:
        t.close()
    assert NO_LINK in alice and "/d/" not in alice
    assert f"hitl-vault approve {rid} --by alice" in alice


def test_email_carries_an_approve_and_a_reject_link(team: Team) -> None:
    """A person's mailto:// channel gets two links, each opening the page with that choice
    selected, and is told that the page still needs a press."""
    with smtp_server() as (port, received):
        url = f"mailto://127.0.0.1:{port}?from=hitl@example.com&to=alice@example.com"
        team.journal.save_person(Person("alice", notify=(url,)), team.clock.now, "o", "changed")
        rid = team.vault.submit("deploy", {"service": "mail"}, requested_by="agent").id
        team.step()
        mail = email.message_from_bytes(received.get(timeout=10), policy=email.policy.default)
    part: Any = mail.get_body(preferencelist=("plain",))
    text = part.get_content()
    approve = re.search(r"Approve: (\S+)", text)
    reject = re.search(r"Reject: (\S+)", text)
    assert approve is not None and reject is not None
    assert approve.group(1).endswith("?choice=approve") and reject.group(1).endswith(
        "?choice=reject"
    )
    secret = LINK.search(approve.group(1))
    assert secret is not None and secret.group(1) in reject.group(1)
    assert links.check(team.journal, secret.group(1), now=team.clock.now).request_id == rid
    assert "nothing is decided until you press the button there" in text


class _Refusing(http.server.BaseHTTPRequestHandler):
    """An ntfy server that refuses every post, quoting its X-Actions header in the error."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        answer = json.dumps({"code": 40001, "error": f"bad {self.headers.get('X-Actions')}"})
        self.send_response(400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_a_link_secret_reaches_no_log_error_or_journal(
    team: Team, caplog: pytest.LogCaptureFixture
) -> None:
    """A receiver that refuses the message and quotes its buttons back: the error kept in
    the outbox and the log lines show no link secret."""
    caplog.set_level(logging.DEBUG)
    server = http.server.HTTPServer(("127.0.0.1", 0), _Refusing)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        url = f"ntfy://tk_secrettoken@127.0.0.1:{server.server_address[1]}/alice"
        team.journal.save_person(Person("alice", notify=(url,)), team.clock.now, "o", "changed")
        rid = team.vault.submit("deploy", {"service": "x"}, requested_by="agent").id
        team.step()
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
    request = team.journal.get(rid)
    assert request is not None
    secret = links.mint(team.journal, request, "alice", now=team.clock.now)
    (error,) = [o.last_error for o in team.journal.outgoing() if o.event == "pending for alice"]
    assert error is not None and "bad" in error and "***" in error
    assert secret not in error and secret not in caplog.text
    db = sqlite3.connect(team.vault.root / ".hitl" / "journal.db")
    with db:
        dumped = "\n".join(db.iterdump())
    db.close()
    assert secret not in dumped
