"""Proof across hosts: a proven decision is one a service process of this vault recorded,
on whichever host it runs (the uid ``serve`` keeps for the entry's host), never a process
of another user, nor one on a host where no service runs.

An entry "recorded on another host" is made here by writing an entry on this host and
rewriting its actor and hash as that host's process would have written them (it is the
newest entry, so the chain stays whole and ``verify`` checks it).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from hitl_vault import Status, Vault
from hitl_vault.chain import RECORDER_ACTOR, RECORDER_HOST, entry_hash
from hitl_vault.cli.main import cli
from hitl_vault.daemon.dashboard import render_dashboard
from hitl_vault.identity import SERVICE_UID, Proof, keep_service_uid, service_uid_on

from .test_identity_review import AT, as_service, forged_vote
from .test_identity_review import vault_path as vault_path  # the rules those tests use


@pytest.fixture
def vault(vault_path: Path) -> Iterator[Vault]:
    """The vault; this host's service runs as another user, so nothing this process
    records is the service's own."""
    with Vault(vault_path) as v:
        as_service(v, os.getuid() + 1)
        yield v


def recorded_as(vault: Vault, actor: str | None, uid: int | None = None) -> None:
    """Make the newest entry one that ``actor`` (``host/user``; None: version 1) recorded
    as ``uid`` (this process's unless given), its hash made as that process makes it."""
    uid = os.getuid() if uid is None else uid
    db = sqlite3.connect(vault.root / ".hitl" / "journal.db", isolation_level=None)
    try:
        row = db.execute(
            "SELECT seq, request_id, at, kind, from_status, to_status, by, reason, details, "
            "params_sha, prev_hash FROM entries ORDER BY seq DESC LIMIT 1"
        ).fetchone()
        seq, fields, prev = row[0], row[1:10], row[10]
        db.execute(
            "UPDATE entries SET uid = ?, actor = ?, hash = ? WHERE seq = ?",
            (uid, actor, entry_hash(prev, fields, uid, actor), seq),
        )
    finally:
        db.close()


def journal_problems(vault: Vault) -> list[str]:
    """What ``verify`` says of the chain and of proofs (the notes aside: no daemon runs)."""
    return [p for p in vault.verify() if p.startswith("journal entry") or "claims a" in p]


def test_the_service_user_of_another_host_is_the_service(vault: Vault) -> None:
    """A ``via api`` vote recorded on host B by B's service user counts (B may run it as
    another uid than this host does), and ``verify`` is quiet; recorded here, it does not."""
    keep = vault.engine.journal.set_setting
    keep(service_uid_on("host-b"), str(os.getuid()), AT, "owner")
    rid = vault.submit("deploy", {"v": 1}, requested_by="agent").id
    forged_vote(vault, rid, "alice")
    assert vault.votes(rid).approvals == ((),)  # this host's process: a claimed name
    assert any("claims a decision by alice" in p for p in journal_problems(vault))
    recorded_as(vault, "host-b/hitl")
    assert vault.votes(rid).approvals == (("alice",),)
    assert journal_problems(vault) == []


def test_the_service_uid_on_a_host_where_no_service_runs_proves_nothing(vault: Vault) -> None:
    """The uid the service runs as here, recorded on a host with no service kept, is no
    proof; ``verify`` names the entry and says no service uid is kept on that host."""
    keep_service_uid(vault.engine.journal, os.getuid(), AT, "owner")
    rid = vault.submit("deploy", {"v": 2}, requested_by="agent").id
    forged_vote(vault, rid, "alice")
    recorded_as(vault, "host-c/hitl")
    assert vault.votes(rid).approvals == ((),)
    problems = journal_problems(vault)
    assert len(problems) == 1 and "hitl on host-c (uid" in problems[0], problems
    assert "no service uid is kept on host-c" in problems[0]


def test_an_entry_of_version_1_is_judged_by_the_vault_wide_service_uid(vault: Vault) -> None:
    """An entry written before the actor (no host) counts where its uid is the vault-wide
    ``service_uid``, as before, whatever this host's own says."""
    journal = vault.engine.journal
    rid = vault.submit("deploy", {"v": 3}, requested_by="agent").id
    forged_vote(vault, rid, "alice")
    recorded_as(vault, None, os.getuid() + 7)
    assert vault.votes(rid).approvals == ((),)
    journal.set_setting(SERVICE_UID, str(os.getuid() + 7), AT, "owner")
    assert journal.setting(service_uid_on(RECORDER_HOST)) == str(os.getuid() + 1)
    assert vault.votes(rid).approvals == (("alice",),) and journal_problems(vault) == []
    assert journal.entries(rid)[-1].version == 1
    assert vault.get(rid).status is Status.PENDING


def test_show_names_the_credential_a_decision_came_with(vault: Vault) -> None:
    """A decision the service recorded for a link (or a token, a session) says so: ``show``
    ends ``recorded by user on host (uid N) for link alice``, ``--json`` gives
    ``decided_credential``, and the entry is of chain version 3."""
    as_service(vault)  # this process is the service's, as in ``serve``
    rid = vault.submit("tidy", {"v": 5}, requested_by="agent").id
    vault.engine.approve(rid, proof=Proof("alice", "link", credential="link alice"))
    root = str(vault.root)
    data = json.loads(CliRunner().invoke(cli, ["--vault", root, "show", rid, "--json"]).output)
    assert data["decided_credential"] == "link alice"
    assert vault.engine.journal.entries(rid)[-1].version == 3
    text = CliRunner().invoke(cli, ["--vault", root, "show", rid]).output
    user = RECORDER_ACTOR.partition("/")[2]
    who = f"{user} on {RECORDER_HOST} (uid {os.getuid()}) for link alice"
    assert f"alice (recorded by {who})" in text, text


def test_show_names_the_host_and_the_user_that_recorded_the_decision(vault: Vault) -> None:
    """``show`` and the dashboard say who recorded a decision as ``user on host (uid N)``;
    ``--json`` gives ``decided_actor`` (``host/user``) beside ``decided_uid``."""
    rid = vault.submit("tidy", {"v": 4}, requested_by="agent").id
    vault.approve(rid, by="alice")
    root = str(vault.root)
    shown = CliRunner().invoke(cli, ["--vault", root, "show", rid, "--json"])
    assert shown.exit_code == 0, shown.output
    data = json.loads(shown.output)
    assert (data["decided_actor"], data["decided_uid"]) == (RECORDER_ACTOR, os.getuid())
    text = CliRunner().invoke(cli, ["--vault", root, "show", rid]).output
    user = RECORDER_ACTOR.partition("/")[2]
    who = f"{user} on {RECORDER_HOST} (uid {os.getuid()})"
    assert f"alice (recorded by {who})" in text, text
    dashboard = render_dashboard(vault.engine.journal, vault.engine.now())
    assert f"claimed by alice, recorded by {who}" in dashboard, dashboard
