"""What the identity review found: ``authenticated:`` kept with the request at submit, a
proof that counts only in an entry the service's user recorded, one name rule for everyone
who asks or decides, and names compared without invisible characters.

Real vaults on disk, real SQLite, the real CLI through CliRunner; no daemon (the engine
applies note edits itself on ``refresh``), so every test here takes milliseconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from hitl_vault import Status, Vault
from hitl_vault.chain import RECORDER_ACTOR, RECORDER_HOST, recorded_by
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault
from hitl_vault.errors import DecisionRefusedError, UnprovenDecisionError, UsageError
from hitl_vault.identity import (
    Person,
    Proof,
    keep_service_uid,
    name_problem,
    proven_by,
    same_name,
)
from hitl_vault.policy.quorum import Plan, Stage, Vote, count, refusal
from hitl_vault.shapes import request_json

from .helpers import set_status
from .test_identity import PROVEN_WAY, RULES

AT = datetime(2026, 1, 1, tzinfo=UTC)
# A quorum anyone may vote in, counting proven approvals only.
TEAM = """\
  - name: team
    action: team
    decision: ask
    quorum: 2
    authenticated: true
"""


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    path = tmp_path / "vault"
    init_vault(path)
    (path / "hitl-vault.yaml").write_text(RULES + TEAM)
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
    keep_service_uid(journal, os.getuid() if uid is None else uid, AT, "owner")


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
    me = recorded_by(os.getuid(), RECORDER_ACTOR)  # root on this host (uid 0)
    assert f"claims a decision by alice via api, but {me} recorded it" in problems[0]
    assert f"the service runs as uid {os.getuid() + 1} on {RECORDER_HOST}" in problems[0]


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


# --- 3. a claimed name cannot look proven ------------------------------------------------------

LOOKS_PROVEN = ["alice via api", "Alice VIA socket", "bob  via   session", "carol via x"]


@pytest.mark.parametrize("name", LOOKS_PROVEN)
def test_a_name_that_reads_like_a_proof_is_refused_by_the_api(vault: Vault, name: str) -> None:
    """Vault.approve/reject(by=), submit(requested_by=) and cancel(by=) refuse it, naming the
    argument; nothing is recorded."""
    rid = vault.submit("email", {"to": "x"}, requested_by="agent").id
    with pytest.raises(UsageError, match=r"^by: .* reads like a proven decision"):
        vault.approve(rid, by=name)
    with pytest.raises(UsageError, match=r"^by: "):
        vault.reject(rid, by=name)
    with pytest.raises(UsageError, match=r"^by: "):
        vault.cancel(rid, by=name)
    with pytest.raises(UsageError, match=r"^requested_by: "):
        vault.submit("email", {"to": "x"}, requested_by=name)
    assert len(vault.get(rid).history) == 1


def test_approve_by_a_name_that_reads_like_a_proof_fails_on_the_command_line(
    vault: Vault,
) -> None:
    """``approve --by "alice via api"`` exits non-zero with the rule and no traceback."""
    rid = vault.submit("email", {"to": "x"}, requested_by="agent").id
    result = CliRunner().invoke(
        cli, ["--vault", str(vault.root), "approve", rid, "--by", "alice via api"],
        prog_name="hitl-vault",
    )  # fmt: skip
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "reads like a proven decision" in result.stderr
    assert vault.get(rid).status is Status.PENDING


def test_a_notes_decided_by_that_reads_like_a_proof_is_not_acted_on(vault: Vault) -> None:
    """``decided_by: alice via api`` in the note: pending, and Needs attention says why."""
    rid = vault.submit("email", {"to": "x"}, requested_by="agent").id
    set_status(note(vault, rid), "approved", decided_by="alice via api")
    assert vault.engine.refresh(rid).status is Status.PENDING
    flagged = [a.message for a in vault.engine.journal.attention()]
    assert any("reads like a proven decision" in m for m in flagged), flagged


def test_a_votes_line_named_like_a_proof_is_not_counted(vault: Vault) -> None:
    """``alice via api: rejected`` under votes: is refused (not a name), and listed."""
    rid = vault.submit("team", {}, requested_by="agent").id
    path = note(vault, rid)
    path.write_text(path.read_text().replace("votes:\n", "votes:\n  alice via api: rejected\n"))
    assert vault.engine.refresh(rid).status is Status.PENDING
    assert vault.get(rid).votes() == []
    assert "alice via api's vote (rejected) not counted" in vault.get(rid).history[-1].details[0]
    flagged = [a.message for a in vault.engine.journal.attention()]
    assert any("reads like a proven decision" in m for m in flagged), flagged


@pytest.mark.parametrize("name", ["alice", "Mary Ann", "josé", "o'brien", "Via", "ci-bot@x.org"])
def test_names_people_have_are_names(name: str) -> None:
    """Spaces, accents, apostrophes and a first word Via are all a name."""
    assert name_problem(name) is None


def test_show_json_says_which_channel_proved_a_decision_and_each_vote(vault: Vault) -> None:
    """``decided_via`` is the proof's channel (null for a claimed name or votes);
    ``votes_via`` gives each vote's (null: claimed)."""
    proven = vault.submit("payment", {"amount": 5}, requested_by="agent").id
    vault.engine.approve(proven, proof=Proof("alice", "api"))
    claimed = vault.submit("email", {"to": "x"}, requested_by="agent").id
    vault.approve(claimed, by="bob")
    team = vault.submit("release", {"v": 1}, requested_by="agent").id
    vault.engine.approve(team, proof=Proof("alice", "socket"))
    vault.approve(team, by="bob")

    def shown(rid: str) -> dict[str, object]:
        out = CliRunner().invoke(cli, ["--vault", str(vault.root), "show", rid, "--json"])
        assert out.exit_code == 0, out.output
        data: dict[str, object] = json.loads(out.stdout)
        return data

    assert shown(proven)["decided_via"] == "api"
    assert shown(claimed)["decided_via"] is None
    voted = shown(team)
    assert voted["decided_via"] is None and voted["decided_by"] == "alice, bob"
    assert voted["votes_via"] == {"alice": "socket", "bob": None}
    assert request_json(vault.get(proven))["decided_via"] == "api"


# --- 4. invisible characters ------------------------------------------------------------------

INVISIBLE = ["alice\u200b", "al\xadice", "alice\u2060", "\ufeffalice", "ali\u200dce"]


@pytest.mark.parametrize("name", INVISIBLE)
def test_invisible_characters_are_not_part_of_a_name_compared(name: str) -> None:
    """same_name drops format characters; the name rule refuses them outright."""
    assert same_name(name) == "alice"
    assert name_problem(name) is not None and "not printable" in str(name_problem(name))


@pytest.mark.parametrize("name", INVISIBLE)
def test_invisible_characters_get_past_neither_self_approval_nor_the_person_lookup(
    vault: Vault, name: str
) -> None:
    """A requester alice with a zero-width character is alice; so is the person looked up."""
    plan = Plan(stages=(Stage(quorum=1),), prevent_self_approval=True)
    state = count(plan, (), requester=name)
    assert "may not approve it" in str(refusal(state, Vote("alice", True), requester=name))
    journal = vault.engine.journal
    journal.save_person(Person("alice"), AT, "owner", "person added")
    found = journal.person(name)
    assert found is not None and found.name == "alice"
    with pytest.raises(UsageError, match="not printable"):
        vault.submit("email", {"to": "x"}, requested_by=name)
    rid = vault.submit("email", {"to": "x"}, requested_by="agent").id
    with pytest.raises(UsageError, match="not printable"):
        vault.approve(rid, by=name)


# --- 5. one name rule: a proven rejection by Mary Ann rejects ----------------------------------


def test_a_proven_rejection_by_mary_ann_rejects_a_quorum_request(vault: Vault) -> None:
    """People may be named Mary Ann; her proven "no" ends a request decided by votes."""
    rid = vault.submit("team", {}, requested_by="agent").id
    done = vault.engine.reject(rid, reason="not now", proof=Proof("Mary Ann", "api"))
    assert done.status is Status.REJECTED and done.decided_by == "Mary Ann"
    (vote,) = vault.get(rid).votes()
    assert (vote.by, proven_by(vote)) == ("Mary Ann", "api")


def test_votes_lines_take_the_names_people_have(vault: Vault) -> None:
    """``Mary Ann: rejected`` and ``o'brien: rejected`` under votes: each reject."""
    for name in ("Mary Ann", "o'brien"):
        rid = vault.submit("team", {}, requested_by="agent").id
        path = note(vault, rid)
        path.write_text(path.read_text().replace("votes:\n", f"votes:\n  {name}: rejected\n"))
        assert vault.engine.refresh(rid).status is Status.REJECTED
        assert vault.get(rid).decided_by == name


@pytest.mark.parametrize("name", ["Mary Ann", "o'brien", "a: b", "x #y", "x approved y", "b → x"])
def test_a_vote_by_any_name_a_person_may_have_shows_once_and_verifies(
    vault: Vault, name: str
) -> None:
    """Its votes: line and its history line are written once, however often the note is
    brought up to date, and verify finds the note as the journal has it."""
    rid = vault.submit("team", {}, requested_by="agent").id
    vault.engine.approve(rid, proof=Proof(name, "api"))
    assert vault.engine.approve(rid, proof=Proof("bob", "api")).status is Status.APPROVED
    for _ in range(3):
        vault.engine.notes.sync_now(rid, vault.engine.now())
    text = note(vault, rid).read_text()
    assert text.count(f" · {name} approved (1 of 2) via api") == 1, text
    assert vault.verify() == []


def test_a_params_edit_under_a_name_that_reads_like_a_proof_is_recorded_as_unknown(
    vault: Vault,
) -> None:
    """``decided_by: alice via api`` beside an edit of the params: the edit is by unknown."""
    rid = vault.submit("email", {"to": "x"}, requested_by="agent").id
    path = note(vault, rid)
    text = path.read_text().replace("decided_by:\n", "decided_by: alice via api\n", 1)
    path.write_text(text.replace("  to: x\n", "  to: y\n", 1))
    vault.engine.refresh(rid)
    edit = vault.get(rid).history[-1]
    assert (edit.move, edit.by) == ("params edited", "unknown")
