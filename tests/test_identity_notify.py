"""A person's own channels are told of every decision made in their name: which request,
which decision, through which channel, from where. Real Apprise ``json://`` posts to a
real HTTP receiver on 127.0.0.1, a daemon stepped on a clock, and one real ``run --once``.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import Status, Vault
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.identity import Person, Proof, keep_service_uid

from .helpers import Clock, VaultHelper, eventually
from .receivers import Receiver

RULES = """\
defaults:
  decision: ask
  timeout: 24h
  quiet: 200ms
rules:
  - name: deploy
    action: deploy
    decision: ask
    approvers: [alice, bob, carol]
    quorum: 2
    authenticated: true
  - name: single
    action: email
    decision: ask
    approvers: [alice, bob]
"""


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


@pytest.fixture
def vault_path(tmp_path: Path, receiver: Receiver) -> Path:
    path = tmp_path / "vault"
    init_vault(path)
    shared = f"notify:\n  - url: json://127.0.0.1:{receiver.port}/{tmp_path.name}/shared\n"
    (path / "hitl-vault.yaml").write_text(RULES + shared + "    on: [approved, rejected]\n")
    return path


def url(receiver: Receiver, tmp_path: Path, who: str) -> str:
    return f"json://127.0.0.1:{receiver.port}/{tmp_path.name}/{who}"


def add_people(vault: Vault, receiver: Receiver, tmp_path: Path, clock: Clock) -> None:
    """alice and bob in people, each with a channel of their own; carol with none; this
    process runs as the service's user (as ``serve`` keeps it), so its proofs count."""
    journal = vault.engine.journal
    keep_service_uid(journal, os.getuid(), clock.now, "owner")
    for name in ("alice", "bob"):
        person = Person(name, notify=(url(receiver, tmp_path, name),))
        journal.save_person(person, clock.now, "owner", "person added")
    journal.save_person(Person("carol"), clock.now, "owner", "person added")


def told(receiver: Receiver, tmp_path: Path, who: str, count: int) -> list[str]:
    """The messages of decisions in their name ``who``'s own channel got, once there are
    ``count`` (the channel is also asked to decide what is pending: not these)."""
    where = f"/{tmp_path.name}/{who}"

    def theirs() -> list[str]:
        posts = receiver.got(where)
        return [f"{p.title}\n{p.message}" for p in posts if "in your name" in p.title]

    eventually(lambda: len(theirs()) >= count, 15)
    return theirs()


def test_each_proven_vote_is_told_to_its_person_once_with_channel_and_place(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, receiver: Receiver, tmp_path: Path
) -> None:
    """alice and bob each hear of their own vote (via api, from where); the decision the
    votes made is not told to them twice; the shared target hears the approval as before."""
    add_people(clocked_vault, receiver, tmp_path, clock)
    rid = clocked_vault.submit("deploy", {"v": 1}, requested_by="agent").id
    daemon.run_once(clock.now)  # the notifier's cursor starts here
    clocked_vault.engine.approve(rid, proof=Proof("alice", "api", "10.0.0.5"))
    clocked_vault.engine.approve(rid, proof=Proof("bob", "socket", "uid 1001"))
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    assert daemon.notifier.send_due(clock.now)
    (alice,) = told(receiver, tmp_path, "alice", 1)
    assert alice.startswith("hitl-vault: a vote to approve in your name (alice) — deploy: v=1\n")
    for line in (
        f"Request: {rid}",
        "Decision: approved (vote 1 of 2)",
        "Channel: via api, proven by the service",
        "From: 10.0.0.5",
        "If this was not you, reject the request",
    ):
        assert line in alice
    (bob,) = told(receiver, tmp_path, "bob", 1)
    assert "Decision: approved (vote 2 of 2)" in bob and "From: uid 1001" in bob
    shared = receiver.wait_for(1, f"/{tmp_path.name}/shared")
    assert [p.title for p in shared] == ["[medium] deploy: v=1 — approved by alice, bob"]
    daemon.run_once(clock.advance(timedelta(seconds=5)))
    daemon.notifier.send_due(clock.now)
    assert len(receiver.got(f"/{tmp_path.name}/alice")) == 1


def test_a_claimed_decision_is_told_as_not_proven(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, receiver: Receiver, tmp_path: Path
) -> None:
    """``--by bob`` (a name anyone can give) tells bob it was not proven; alice hears nothing."""
    add_people(clocked_vault, receiver, tmp_path, clock)
    rid = clocked_vault.submit("email", {"to": "x"}, requested_by="agent").id
    daemon.run_once(clock.now)
    assert clocked_vault.approve(rid, by="Bob").status is Status.APPROVED
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    daemon.notifier.send_due(clock.now)
    (bob,) = told(receiver, tmp_path, "bob", 1)
    assert "an approval in your name (Bob)" in bob
    assert "Channel: not proven: a note edit, --by NAME or a script gave your name" in bob
    assert "From:" not in bob
    receiver.wait_for(1, f"/{tmp_path.name}/shared")
    assert receiver.got(f"/{tmp_path.name}/alice") == []


def test_a_rejection_by_a_vote_is_told_once(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, receiver: Receiver, tmp_path: Path
) -> None:
    """bob's vote that rejects it and the rejection it makes are one message to bob."""
    add_people(clocked_vault, receiver, tmp_path, clock)
    rid = clocked_vault.submit("deploy", {"v": 2}, requested_by="agent").id
    daemon.run_once(clock.now)
    assert clocked_vault.reject(rid, by="bob", reason="not now").status is Status.REJECTED
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    daemon.notifier.send_due(clock.now)
    receiver.wait_for(1, f"/{tmp_path.name}/shared")
    (bob,) = told(receiver, tmp_path, "bob", 1)
    assert "a vote to reject in your name (bob)" in bob and "Reason: not now" in bob


def test_a_via_api_another_user_wrote_is_told_as_not_proven(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, receiver: Receiver, tmp_path: Path
) -> None:
    """A vote whose details say ``via api``, written by a process that is not the service's
    user, is told to alice as not proven (a name someone gave), never "proven by the service"."""
    add_people(clocked_vault, receiver, tmp_path, clock)
    journal = clocked_vault.engine.journal
    keep_service_uid(journal, os.getuid() + 1, clock.now, "owner")
    rid = clocked_vault.submit("deploy", {"v": 9}, requested_by="agent").id
    daemon.run_once(clock.now)
    journal.record_vote(
        rid, at=clock.now, by="alice", approve=True, reason="", count="1 of 2",
        details=("from 10.0.0.5", "via api"),
    )  # fmt: skip
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    daemon.notifier.send_due(clock.now)
    (alice,) = told(receiver, tmp_path, "alice", 1)
    assert "Channel: not proven: a note edit, --by NAME or a script gave your name" in alice
    assert "proven by the service" not in alice


def test_a_channel_taken_out_of_people_before_the_send_is_not_told(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, receiver: Receiver, tmp_path: Path
) -> None:
    """The channel the person has when it is sent counts: a removed one hears nothing."""
    add_people(clocked_vault, receiver, tmp_path, clock)
    rid = clocked_vault.submit("email", {"to": "y"}, requested_by="agent").id
    daemon.run_once(clock.now)
    clocked_vault.engine.approve(rid, proof=Proof("alice", "api"))
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    journal = clocked_vault.engine.journal
    journal.save_person(Person("alice"), clock.now, "owner", "person changed")
    daemon.notifier.send_due(clock.now)
    receiver.wait_for(1, f"/{tmp_path.name}/shared")
    assert receiver.got(f"/{tmp_path.name}/alice") == []


@pytest.mark.process
@pytest.mark.slow
def test_a_real_run_once_tells_the_person_of_an_approval_made_in_their_name(
    tmp_path: Path, vault_path: Path, receiver: Receiver
) -> None:
    """``approve --by alice`` in one process, ``run --once`` in another: alice's channel hears."""
    helper = VaultHelper(vault_path)
    with Vault(vault_path) as vault:
        person = Person("alice", notify=(url(receiver, tmp_path, "alice"),))
        vault.engine.journal.save_person(person, vault.engine.now(), "owner", "person added")
        rid = vault.submit("email", {"to": "z"}, requested_by="agent").id
    assert helper.hitl("run", "--once").returncode == 0  # the notifier's cursor starts here
    assert helper.hitl("approve", rid, "--by", "alice").returncode == 0
    done = helper.hitl("run", "--once")
    assert done.returncode == 0, done.stderr
    (alice,) = told(receiver, tmp_path, "alice", 1)
    assert f"Request: {rid}" in alice and "Channel: not proven" in alice
    with sqlite3.connect(vault_path / ".hitl" / "journal.db") as db:
        rows = db.execute("SELECT event, target, sent_at FROM outbox ORDER BY id").fetchall()
    assert sorted((e, t) for e, t, sent in rows if sent) == [
        ("approved", url(receiver, tmp_path, "shared")),
        ("in your name #1", url(receiver, tmp_path, "alice")),
        ("pending for alice", url(receiver, tmp_path, "alice")),  # asked first, by the first run
    ]
