"""A person's ntfy channel gets Approve and Reject as one-tap ``http`` POST actions to their
signed link, and Open as a ``view`` action on the decision page; the one-tap buttons are
left out (Open kept) when the params had to be cut, when a reason is needed, or when the
channel has no access token. Real Apprise posts to a real ntfy-like receiver on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import Status, Vault
from hitl_vault.access import links
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.identity import Person
from hitl_vault.notes.render import history_line
from hitl_vault.notify.ntfy import CUT, Buttons, actions, buttons, too_long, with_actions
from hitl_vault.notify.send import Message, send
from hitl_vault.serve.message_links import decision_links
from hitl_vault.store import JournalStore
from hitl_vault.times import utcnow

from .helpers import Clock
from .receivers import Post, Receiver
from .servers import serving

PUBLIC = "https://vault.example.com"
RULES = """\
defaults:
  decision: ask
  timeout: 24h
  quiet: 200ms
rules:
  - name: deploy
    action: deploy
    decision: ask
    approvers: [alice]
  - name: drop
    action: drop
    decision: ask
    approvers: [alice]
    require_reason: always
  - name: refund
    action: refund
    decision: ask
    approvers: [alice]
    require_reason: reject
  - name: rotate
    action: rotate
    decision: ask
    approvers: [alice]
    authenticated: true
"""


@dataclass
class Asked:
    """What alice's ntfy channels got, by (topic, action, " cut" when the params were cut),
    and the store the links were made with."""

    posts: dict[tuple[str, str], Post]
    journal: JournalStore
    clock: Clock


@pytest.fixture(scope="module")
def asked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Asked]:
    """Four requests asked of alice at two ntfy channels (one with an access token, one
    without), one daemon step and one send."""
    clock = Clock()
    root = tmp_path_factory.mktemp("ntfy") / "vault"
    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES)
    with Receiver().start() as receiver, Vault(root, clock=clock) as vault:
        journal = vault.engine.journal
        journal.set_setting("public_url", PUBLIC, clock.now, "owner")
        channels = (
            f"ntfy://tk_alicetoken@127.0.0.1:{receiver.port}/alice-phone",
            f"ntfy://127.0.0.1:{receiver.port}/alice-open",
        )
        journal.save_person(Person("alice", notify=channels), clock.now, "owner", "added")
        with Daemon(vault.engine, clock=clock, links=decision_links(journal)) as daemon:
            daemon.run_once(clock.now)
            many = {f"p{i:03}": "x" * 80 for i in range(80)}  # more than fits in a message
            for action, params in (
                ("deploy", {"service": "api"}),
                ("deploy", many),
                ("drop", {"table": "users"}),
                ("refund", {"amount": 5}),
                ("rotate", {"key": "k1"}),
            ):
                vault.submit(action, params, requested_by="agent")
            daemon.run_once(clock.advance(timedelta(seconds=1)))
            daemon.notifier.send_due(clock.now)
            posts = {}
            for post in receiver.wait_for(10):
                action = post.title.split("] ")[1].split(":")[0]
                cut = " cut" if "…and" in post.message else ""
                posts[(post.payload["topic"], action + cut)] = post
            yield Asked(posts, journal, clock)


def _actions(post: Post) -> list[list[str]]:
    value = post.headers.get("X-Actions", "")
    return [[f.strip() for f in a.split(",")] for a in value.split(";") if a.strip()]


def test_a_channel_with_a_token_gets_approve_reject_and_open(asked: Asked) -> None:
    """Approve and Reject POST to the link's one-tap endpoints and clear the notification;
    Open views the page; the link is alice's, for this request."""
    post = asked.posts[("alice-phone", "deploy")]
    assert post.headers["Authorization"] == "Bearer tk_alicetoken"
    approve, reject, open_ = _actions(post)
    page = open_[2]
    assert open_[:2] == ["view", "Open"] and page.startswith(f"{PUBLIC}/d/")
    assert approve == ["http", "Approve", f"{page}/approve", "method=POST", "clear=true"]
    assert reject == ["http", "Reject", f"{page}/reject", "method=POST", "clear=true"]
    assert f"Decide here: {page}" in post.message
    grant = links.check(asked.journal, page.rsplit("/", 1)[1], now=asked.clock.now)
    assert grant.person == "alice"


def test_no_one_tap_buttons_without_a_token_or_when_the_params_were_cut(asked: Asked) -> None:
    """A topic with no access token (anyone who guesses it would see the buttons), and a
    message that could not show every param, get Open alone, and say why."""
    for key, why in (
        (("alice-open", "deploy"), "this ntfy channel has no access token"),
        (("alice-phone", "deploy cut"), CUT),
    ):
        post = asked.posts[key]
        assert [a[:2] for a in _actions(post)] == [["view", "Open"]], key
        assert why in post.message


def test_a_reason_the_rules_require_leaves_out_the_button_that_needs_it(asked: Asked) -> None:
    """``require_reason: always``: Open alone; ``require_reason: reject``: one-tap Approve
    and Open, no one-tap Reject (the page asks for the reason)."""
    drop = asked.posts[("alice-phone", "drop")]
    assert [a[:2] for a in _actions(drop)] == [["view", "Open"]]
    assert "this request needs a reason" in drop.message
    refund = [a[:2] for a in _actions(asked.posts[("alice-phone", "refund")])]
    assert refund == [["http", "Approve"], ["view", "Open"]]


def test_where_a_link_cannot_approve_only_reject_is_one_tap(asked: Asked) -> None:
    """``authenticated: true`` (a link proves no one): no one-tap Approve, and the message
    says an approval through the link does not count; Reject (always safe) stays."""
    rotate = asked.posts[("alice-phone", "rotate")]
    assert [a[:2] for a in _actions(rotate)] == [["http", "Reject"], ["view", "Open"]]
    assert "An approval through this link does not count here: it needs" in rotate.message


def test_the_buttons_rule_in_one_place() -> None:
    """The choice, alone: a cut message or no token drops both one-tap buttons whatever
    the reasons; at most three actions, Open last; a message ntfy would not show as text
    (over 4,096 bytes, though under 4,000 characters) counts as cut."""
    assert buttons(cut=True, token=True, approve_reason=False, reject_reason=False) == Buttons(
        False, False, CUT
    )
    shown = buttons(cut=False, token=True, approve_reason=False, reject_reason=False)
    value = actions("https://h/d/s", "https://h/d/s/approve", "https://h/d/s/reject", shown)
    assert value.count(";") == 2 and value.endswith("view, Open, https://h/d/s")
    assert too_long(Message("t", "é" * 2100)) and not too_long(Message("t", "e" * 4000))


def test_the_actions_reach_ntfy_exactly_as_made() -> None:
    """A public URL with a ``%``, a comma and a semicolon in its path: Apprise hands the
    actions to ntfy unchanged, and no field ends early."""
    page = "https://h.example/a%41,b;c/d/s"
    shown = Buttons(True, True)
    value = actions(page, f"{page}/approve", f"{page}/reject", shown)
    with Receiver().start() as receiver:
        url = with_actions(f"ntfy://tk_x@127.0.0.1:{receiver.port}/t", value)
        assert send(url, Message("t", "b")) is None
        (post,) = receiver.wait_for(1)
    assert post.headers["X-Actions"] == value
    assert _actions(post)[2] == ["view", "Open", "https://h.example/a%41%2Cb%3Bc/d/s"]


@pytest.mark.process
def test_the_approve_button_of_a_real_service_approves_as_the_person_via_link(
    tmp_path: Path,
) -> None:
    """``serve``'s own daemon sends alice the buttons at the public URL it recorded; the
    Approve button's POST, as ntfy makes it, approves the request as alice via link."""
    root = tmp_path / "vault"
    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES)
    with Receiver().start() as receiver, serving(root) as server:
        journal = server.vault.engine.journal
        journal.set_setting("public_url", server.url, utcnow(), "owner")
        phone = f"ntfy://tk_alicetoken@127.0.0.1:{receiver.port}/alice-phone"
        journal.save_person(Person("alice", notify=(phone,)), utcnow(), "owner", "added")
        rid = server.vault.submit("deploy", {"service": "api"}, requested_by="agent").id
        (post,) = receiver.wait_for(1)
        approve = _actions(post)[0]
        assert approve[:2] == ["http", "Approve"] and approve[2].startswith(f"{server.url}/d/")
        answer = server.call("POST", approve[2].removeprefix(server.url))
        assert answer.status == 200, answer.body
        request = server.vault.get(rid)
    assert request.status in (Status.APPROVED, Status.EXECUTING, Status.EXECUTED, Status.FAILED)
    assert request.decided_by == "alice"
    lines = [history_line(t) for t in request.history]
    assert any("by alice via link" in line for line in lines), lines
