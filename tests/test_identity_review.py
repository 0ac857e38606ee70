"""What the identity review found: ``authenticated:`` kept with the request at submit, a
proof that counts only in an entry the service's user recorded, one name rule for everyone
who asks or decides, and names compared without invisible characters.

Real vaults on disk, real SQLite, the real CLI through CliRunner; no daemon (the engine
applies note edits itself on ``refresh``), so every test here takes milliseconds.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from hitl_vault import Status, Vault
from hitl_vault.cli.main import cli
from hitl_vault.errors import DecisionRefusedError, UnprovenDecisionError
from hitl_vault.identity import SERVICE_UID, Proof, proven_by
from hitl_vault.template import init_vault

from .helpers import set_status
from .test_identity import PROVEN_WAY, RULES

AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    path = tmp_path / "vault"
    init_vault(path)
    (path / "hitl-vault.yaml").write_text(RULES)
    return path


@pytest.fixture
def vault(vault_path: Path) -> Iterator[Vault]:
    """The vault, in a process that runs as the service's user (as ``serve`` keeps it)."""
    with Vault(vault_path) as v:
        as_service(v)
        yield v


def as_service(vault: Vault, uid: int | None = None) -> None:
    """Keep ``uid`` (this process's, unless given) as the service's, as ``serve`` does."""
    journal = vault.engine.journal
    journal.set_setting(SERVICE_UID, str(os.getuid() if uid is None else uid), AT, "owner")


def edit_rules(vault: Vault, old: str, new: str) -> None:
    """Change the synced rules file (as anyone with a synced device could) and reload it."""
    rules = vault.root / "hitl-vault.yaml"
    text = rules.read_text()
    assert old in text
    rules.write_text(text.replace(old, new, 1))
    vault.engine.reload_policy()


def note(vault: Vault, request_id: str) -> Path:
    path = vault.get(request_id).path
    assert path is not None
    return path


# --- 1. authenticated: is kept with the request ---------------------------------------------

PAY_PROVEN = "    approvers: [alice, bob]\n    authenticated: true\n"
PAY_TRUSTING = "    approvers: [alice, bob]\n"


def test_removing_authenticated_from_the_rules_file_does_not_let_a_claimed_name_approve(
    vault: Vault,
) -> None:
    """Submitted under authenticated: true, the key removed: --by and a note edit stay pending."""
    rid = vault.submit("payment", {"amount": 5}, requested_by="agent").id
    edit_rules(vault, PAY_PROVEN, PAY_TRUSTING)
    result = CliRunner().invoke(
        cli, ["--vault", str(vault.root), "approve", rid, "--by", "alice"], prog_name="hitl-vault"
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert PROVEN_WAY in result.stderr
    with pytest.raises(UnprovenDecisionError):
        vault.approve(rid, by="bob")
    set_status(note(vault, rid), "approved", decided_by="alice")
    assert vault.engine.refresh(rid).status is Status.PENDING
    assert vault.engine.approve(rid, proof=Proof("alice", "api")).status is Status.APPROVED


def test_removing_authenticated_does_not_let_claimed_votes_meet_a_quorum(vault: Vault) -> None:
    """The deploy quorum keeps counting proven votes only after its key is removed."""
    rid = vault.submit("deploy", {"v": 1}, requested_by="agent").id
    edit_rules(vault, "    quorum: 2\n    authenticated: true\n", "    quorum: 2\n")
    for name in ("alice", "bob"):
        with pytest.raises(UnprovenDecisionError):
            vault.approve(rid, by=name)
    assert vault.get(rid).status is Status.PENDING and vault.get(rid).votes() == []


def test_the_rules_file_may_narrow_the_pinned_channels_but_never_widen_them(
    vault: Vault,
) -> None:
    """Pinned [api, session, socket], then [socket] in force: an api proof no longer counts;
    then [api, link] in force: only api, the channel both allow, counts (a link does not)."""
    rid = vault.submit("payment", {"amount": 5}, requested_by="agent").id
    edit_rules(vault, PAY_PROVEN, "    approvers: [alice, bob]\n    authenticated: [socket]\n")
    with pytest.raises(UnprovenDecisionError, match="proven through socket"):
        vault.engine.approve(rid, proof=Proof("alice", "api"))
    edit_rules(vault, "authenticated: [socket]", "authenticated: [api, link]")
    with pytest.raises(UnprovenDecisionError, match=r"proven through api \("):
        vault.engine.approve(rid, proof=Proof("alice", "link"))
    assert vault.engine.approve(rid, proof=Proof("alice", "api")).status is Status.APPROVED


# --- 2. a proof counts only when the service's user recorded it -------------------------------


def forged_vote(vault: Vault, request_id: str, name: str) -> None:
    """What any process that can write the journal can do: a vote whose details say api."""
    journal = vault.engine.journal
    journal.record_vote(
        request_id, at=vault.engine.now(), by=name, approve=True, reason="",
        count="1 of 2", details=("via api",),
    )  # fmt: skip


def test_a_via_api_written_by_another_user_does_not_count_and_verify_names_it(
    vault: Vault,
) -> None:
    """The service runs as another uid: this process's ``via api`` vote is no proof."""
    as_service(vault, os.getuid() + 1)
    rid = vault.submit("deploy", {"v": 2}, requested_by="agent").id
    forged_vote(vault, rid, "alice")
    assert vault.votes(rid).approvals == ((),)
    problems = [p for p in vault.verify() if "claims a decision" in p]
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"request {rid}: journal entry ")
    assert f"claims a decision by alice via api, but uid {os.getuid()} recorded it" in problems[0]
    assert f"the service runs as uid {os.getuid() + 1}" in problems[0]


def test_with_no_service_uid_kept_nothing_is_proven(vault_path: Path) -> None:
    """No ``serve`` ever ran: a ``via api`` vote and a Proof handed to the engine prove nobody."""
    with Vault(vault_path) as vault:
        rid = vault.submit("deploy", {"v": 3}, requested_by="agent").id
        forged_vote(vault, rid, "alice")
        with pytest.raises(UnprovenDecisionError):
            vault.engine.approve(rid, proof=Proof("bob", "api"))
        assert vault.votes(rid).approvals == ((),)
        assert vault.get(rid).status is Status.PENDING
        assert any("no service uid is kept" in p for p in vault.verify())


def test_a_proof_handed_to_the_engine_by_another_user_is_a_claimed_name(
    vault: Vault,
) -> None:
    """Not the service's process: the Proof is refused, and no ``via`` is journaled."""
    as_service(vault, os.getuid() + 1)
    rid = vault.submit("payment", {"amount": 5}, requested_by="agent").id
    with pytest.raises(UnprovenDecisionError):
        vault.engine.approve(rid, proof=Proof("alice", "api"))
    assert all(proven_by(t) is None for t in vault.get(rid).history)
    assert not [p for p in vault.verify() if "claims a decision" in p]


def test_the_services_own_proof_counts(vault: Vault) -> None:
    """service_uid is this process's: a Proof counts, a vote it recorded counts, verify is quiet."""
    rid = vault.submit("deploy", {"v": 4}, requested_by="agent").id
    forged_vote(vault, rid, "alice")  # recorded by the service's own user: its proof stands
    done = vault.engine.approve(rid, proof=Proof("bob", "api"))
    assert done.status is Status.APPROVED and done.decided_by == "alice, bob"
    assert vault.verify() == []


def test_a_rejection_without_a_proof_still_rejects(vault: Vault) -> None:
    """Another user's forged proof is only a name, and a claimed name may still stop it."""
    as_service(vault, os.getuid() + 1)
    rid = vault.submit("deploy", {"v": 5}, requested_by="agent").id
    with pytest.raises(DecisionRefusedError):
        vault.approve(rid, by="alice")
    assert vault.reject(rid, by="carol").status is Status.REJECTED
