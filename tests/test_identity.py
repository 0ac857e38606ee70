"""Identity in the rules: ``authenticated:``, proofs through the engine, names compared as
people mean them, and approvals with no name.

Real vaults on disk, real SQLite, the real CLI through CliRunner; no daemon (the engine
applies note edits itself on ``refresh``), so every test here takes milliseconds.
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from hitl_vault import Status, Vault
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import DecisionRefusedError, NotAnApproverError, RulesError
from hitl_vault.identity import PROVEN, Proof, keep_service_uid, proof_in, proven_by
from hitl_vault.model import Kind, Transition
from hitl_vault.notes.render import history_line
from hitl_vault.policy.proven import unauthenticated
from hitl_vault.policy.quorum import Part, combine
from hitl_vault.policy.rules import Proposal
from hitl_vault.policy.rulesfile import parse_policy

from .helpers import Clock, set_status

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
  - name: trusting
    action: release
    decision: ask
    approvers: [alice, bob, carol]
    quorum: 2
    prevent_self_approval: true
  - name: pay
    action: payment
    decision: ask
    approvers: [alice, bob]
    authenticated: true
  - name: self
    action: email
    decision: ask
    prevent_self_approval: true
  - name: links
    action: rotate
    decision: ask
    authenticated: [api, link]
"""

PROVEN_WAY = "needs an approval proven through api, session or socket"


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    path = tmp_path / "vault"
    init_vault(path)
    (path / "hitl-vault.yaml").write_text(RULES)
    return path


@pytest.fixture
def vault(vault_path: Path) -> Iterator[Vault]:
    """The vault, in a process that runs as the service's user (as ``serve`` keeps it in
    the store), so the proofs it hands the engine count."""
    with Vault(vault_path) as v:
        as_service(v)
        yield v


def as_service(vault: Vault, uid: int | None = None) -> None:
    """Keep ``uid`` (this process's, unless given) as the service's, as ``serve`` does."""
    journal = vault.engine.journal
    keep_service_uid(journal, os.getuid() if uid is None else uid, AT, "owner")


def flagged(vault: Vault) -> str:
    """What the journal lists under Needs attention now, one message a line."""
    return "\n".join(a.message for a in vault.engine.journal.attention())


def note(vault: Vault, request_id: str) -> Path:
    path = vault.get(request_id).path
    assert path is not None
    return path


# --- authenticated: in the rules file ------------------------------------------------------


def test_authenticated_true_means_api_session_or_socket_and_a_list_names_channels() -> None:
    """``authenticated: true`` is PROVEN; a list names channels; defaults take it too."""
    policy = parse_policy(RULES)
    rules = {r.name: r for r in policy.rules}
    assert rules["deploy"].authenticated == PROVEN == frozenset({"api", "session", "socket"})
    assert rules["links"].authenticated == frozenset({"api", "link"})
    assert rules["trusting"].authenticated is None
    defaults = parse_policy("defaults:\n  decision: ask\n  authenticated: [socket]\n")
    assert defaults.defaults.authenticated == frozenset({"socket"})


@pytest.mark.parametrize(
    ("value", "problem", "fix"),
    [
        ("false", "is false", "write authenticated: true"),
        ("[]", "is an empty list", "a list of channels from api, session, socket, link"),
        ("[api, phone]", '"phone" is not valid', "use one of: api, session, socket, link"),
        ("yes please", "must be true or a list of channels", "write authenticated: true"),
        ("{api: 1}", "must be a single value", "write authenticated: true"),
    ],
)
def test_a_bad_authenticated_names_the_file_the_line_and_the_fix(
    value: str, problem: str, fix: str
) -> None:
    """Anything but true or a list of known channels is a RulesError at its line."""
    text = f"rules:\n  - name: r\n    decision: ask\n    authenticated: {value}\n"
    with pytest.raises(RulesError) as e:
        parse_policy(text, "hitl-vault.yaml")
    message = str(e.value)
    assert message.startswith("hitl-vault.yaml line 4: rule r authenticated"), message
    assert problem in message and fix in message


def test_combining_rules_keeps_only_the_channels_every_rule_allows() -> None:
    """The strictest plan: the channels all ``authenticated:`` lists share; none says none."""
    assert combine([Part(), Part()]).authenticated is None
    both = combine([Part(authenticated=PROVEN), Part(authenticated=frozenset({"api", "link"}))])
    assert both.authenticated == frozenset({"api"})
    link = frozenset({"link"})
    assert combine([Part(), Part(authenticated=link)]).authenticated == link


def test_serve_is_told_which_rules_trust_names() -> None:
    """One sentence per rule with a quorum or stages and no ``authenticated:``."""
    found = unauthenticated(parse_policy(RULES, "hitl-vault.yaml"))
    assert len(found) == 1
    assert found[0].startswith("hitl-vault.yaml line 12: rule trusting asks for 2 approvals")
    assert "add authenticated: true" in found[0]
    staged = parse_policy(
        "defaults: {decision: ask, quorum: 2}\nrules:\n  - name: s\n    decision: ask\n"
        "    stages:\n      - {approvers: [a]}\n      - {approvers: [b]}\n"
    )
    assert [s.split(":")[1] for s in unauthenticated(staged)] == [
        " defaults ask for 2 approvals (quorum) without authenticated",
        " rule s asks for 2 stages of approvals without authenticated",
    ]
    covered = parse_policy("defaults: {decision: ask, quorum: 2, authenticated: true}\n")
    assert unauthenticated(covered) == []


# --- one process, several names ----------------------------------------------------------------


def test_one_process_cannot_meet_a_quorum_as_alice_then_bob_under_authenticated(
    vault: Vault,
) -> None:
    """Vault.approve as alice, then as bob: both refused, pending, and the owner is told."""
    rid = vault.submit("deploy", {"v": 2}, requested_by="agent").id
    for name in ("alice", "bob"):
        with pytest.raises(DecisionRefusedError, match=PROVEN_WAY):
            vault.approve(rid, by=name)
    request = vault.get(rid)
    assert request.status is Status.PENDING and request.votes() == []
    assert [t.kind for t in request.history[1:]] == [Kind.IGNORED, Kind.IGNORED]
    assert f"request {rid}: bob's approval not counted: {PROVEN_WAY}" in flagged(vault)
    how = (
        "`hitl-vault --server URL approve`, the service's web inbox or the CLI through the "
        "service's socket"
    )
    assert how in flagged(vault)
    text = note(vault, rid).read_text()
    assert "status: pending" in text
    assert f"· kept pending · alice's approval not counted: {PROVEN_WAY}" in text


def test_without_authenticated_a_rule_trusts_the_names_it_is_given(vault: Vault) -> None:
    """A rule with no ``authenticated:`` counts claimed names: one process meets the quorum."""
    rid = vault.submit("release", {"v": 2}, requested_by="agent").id
    assert vault.approve(rid, by="alice").status is Status.PENDING
    assert vault.approve(rid, by="bob").status is Status.APPROVED


def test_proven_votes_meet_the_quorum_and_the_history_says_via_which_channel(
    vault: Vault,
) -> None:
    """engine.approve with a Proof counts, and each vote's history line says ``via``."""
    rid = vault.submit("deploy", {"v": 2}, requested_by="agent").id
    first = vault.engine.approve(rid, by="mallory", proof=Proof("alice", "api", "10.0.0.5"))
    assert first.status is Status.PENDING
    done = vault.engine.approve(rid, proof=Proof("bob", "socket", "uid 1001"))
    assert done.status is Status.APPROVED and done.decided_by == "alice, bob"
    votes = vault.get(rid).votes()
    assert [(t.by, t.details, proven_by(t)) for t in votes] == [
        ("alice", ("1 of 2", "from 10.0.0.5", "via api"), "api"),
        ("bob", ("2 of 2", "from uid 1001", "via socket"), "socket"),
    ]
    assert [proof_in(t) for t in votes] == [
        Proof("alice", "api", "10.0.0.5"),
        Proof("bob", "socket", "uid 1001"),
    ]
    text = note(vault, rid).read_text()
    assert "· alice approved (1 of 2) via api from 10\\.0.0.5\n" in text  # escaped Markdown
    assert "· bob approved (2 of 2) via socket from uid 1001\n" in text
    assert "· pending → approved · by alice, bob\n" in text  # the votes said who, not a channel


def test_a_proven_approval_counts_and_reads_by_alice_via_api(vault: Vault) -> None:
    """One person's proven approval: ``pending → approved · by alice via api``, show too."""
    rid = vault.submit("payment", {"amount": 5}, requested_by="agent").id
    done = vault.engine.approve(rid, proof=Proof("alice", "api"))
    assert done.status is Status.APPROVED and done.decided_by == "alice"
    assert "· pending → approved · by alice via api\n" in note(vault, rid).read_text()
    shown = CliRunner().invoke(cli, ["--vault", str(vault.root), "show", rid, "--json"])
    history = json.loads(shown.stdout)["history"]
    assert history[-1].endswith("· pending → approved · by alice via api")


def test_a_proof_counts_only_through_a_channel_the_rule_allows(vault: Vault) -> None:
    """``[api, link]`` refuses a session; ``true`` refuses a link; each allowed one counts."""
    rotate = vault.submit("rotate", {}, requested_by="agent").id
    with pytest.raises(DecisionRefusedError, match="proven through api or link"):
        vault.engine.approve(rotate, proof=Proof("alice", "session"))
    assert vault.engine.approve(rotate, proof=Proof("alice", "link")).status is Status.APPROVED
    pay = vault.submit("payment", {"amount": 5}, requested_by="agent").id
    with pytest.raises(DecisionRefusedError, match=PROVEN_WAY):
        vault.engine.approve(pay, proof=Proof("alice", "link"))
    assert vault.get(pay).status is Status.PENDING


def test_a_proof_does_not_make_someone_an_approver(vault: Vault) -> None:
    """A proven mallory is still not among pay's approvers."""
    rid = vault.submit("payment", {"amount": 5}, requested_by="agent").id
    with pytest.raises(NotAnApproverError):
        vault.engine.approve(rid, proof=Proof("mallory", "api"))


# --- stopping is always safe ---------------------------------------------------------------------


def test_a_rejection_by_anyone_allowed_still_rejects_under_authenticated(
    vault: Vault,
) -> None:
    """Unproven rejections stand (a vote, --by, a note edit); a stranger's is still refused."""
    voted = vault.submit("deploy", {"v": 1}, requested_by="agent").id
    assert vault.reject(voted, by="carol", reason="not today").status is Status.REJECTED
    one = vault.submit("payment", {"amount": 5}, requested_by="agent").id
    with pytest.raises(NotAnApproverError):
        vault.reject(one, by="mallory")
    set_status(note(vault, one), "rejected", decided_by="bob")
    assert vault.engine.refresh(one).status is Status.REJECTED
    assert vault.get(one).decided_by == "bob"


# --- claims in notes and on the command line ---------------------------------------------------


def saved(vault: Vault, daemon: Daemon, clock: Clock, path: Path) -> None:
    """The daemon sees the save, then the note rests past its quiet period."""
    daemon.notice(path)
    daemon.run_once(clock.advance(timedelta(milliseconds=50)))
    daemon.run_once(clock.advance(timedelta(seconds=1)))


def test_a_note_edit_under_authenticated_stays_pending_and_says_what_is_missing(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """``status: approved`` with ``decided_by: alice``: set back, flagged, never approved."""
    vault = clocked_vault
    rid = vault.submit("payment", {"amount": 5}, requested_by="agent").id
    daemon.run_once(clock.now)
    set_status(note(vault, rid), "approved", decided_by="alice")
    saved(vault, daemon, clock, note(vault, rid))
    assert vault.get(rid).status is Status.PENDING
    assert PROVEN_WAY in flagged(vault)
    text = note(vault, rid).read_text()
    assert "status: pending" in text
    assert f'· kept pending · ignored status "approved": {PROVEN_WAY}' in text


def test_a_votes_line_under_authenticated_is_not_counted(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """alice's approving line is marked not counted and listed; bob's rejecting one stands."""
    vault = clocked_vault
    rid = vault.submit("deploy", {"v": 3}, requested_by="agent").id
    daemon.run_once(clock.now)
    path = note(vault, rid)
    path.write_text(path.read_text().replace("\n  alice:\n", "\n  alice: approved\n", 1))
    saved(vault, daemon, clock, path)
    assert vault.get(rid).status is Status.PENDING
    assert vault.get(rid).votes() == []
    assert PROVEN_WAY in flagged(vault)
    assert "alice: approved  # not counted: needs an approval proven" in path.read_text()
    path.write_text(path.read_text().replace("\n  bob:\n", "\n  bob: rejected, too risky\n", 1))
    saved(vault, daemon, clock, path)
    assert vault.get(rid).status is Status.REJECTED  # stopping needs no proof
    assert vault.get(rid).decided_by == "bob"


def test_approve_by_on_the_command_line_is_refused_under_authenticated(
    vault_path: Path, vault: Vault
) -> None:
    """``hitl-vault approve --by alice`` exits non-zero with what is missing; pending."""
    rid = vault.submit("payment", {"amount": 5}, requested_by="agent").id
    result = CliRunner().invoke(
        cli, ["--vault", str(vault_path), "approve", rid, "--by", "alice"], prog_name="hitl-vault"
    )
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert PROVEN_WAY in result.stderr
    assert vault.get(rid).status is Status.PENDING


def test_votes_recorded_before_authenticated_was_added_no_longer_count(
    vault_path: Path, vault: Vault
) -> None:
    """alice's claimed vote stops counting once the rule asks for proof: bob's alone is 1 of 2."""
    rid = vault.submit("release", {"v": 4}, requested_by="agent").id
    vault.approve(rid, by="alice")
    rules = vault_path / "hitl-vault.yaml"
    trusting = "    prevent_self_approval: true\n  - name: pay"
    rules.write_text(rules.read_text().replace(trusting, trusting.replace(
        "  - name: pay", "    authenticated: true\n  - name: pay")))  # fmt: skip
    vault.engine.reload_policy()
    after = vault.engine.approve(rid, proof=Proof("bob", "api"))
    assert after.status is Status.PENDING
    assert vault.votes(rid).progress().startswith("1 of 2 approvals, each proven")


# --- names as people mean them -------------------------------------------------------------------


@pytest.mark.parametrize("requester", ["Alice", "alice ", "ＡＬＩＣＥ", " ALICE\t"])
def test_a_requester_named_alice_in_any_form_cannot_approve_as_alice(
    vault: Vault, requester: str
) -> None:
    """prevent_self_approval compares names after NFKC, casefold and strip."""
    one = vault.submit("email", {"to": "x"}, requested_by=requester).id
    with pytest.raises(DecisionRefusedError, match="may not approve it"):
        vault.approve(one, by="alice")
    voted = vault.submit("release", {"v": 5}, requested_by=requester).id
    with pytest.raises(DecisionRefusedError, match="may not approve it"):
        vault.approve(voted, by="alice")
    assert vault.approve(one, by="bob").status is Status.APPROVED


def test_one_person_in_two_spellings_counts_once_and_is_an_approver_either_way(
    vault: Vault,
) -> None:
    """``Alice`` is among ``[alice, …]``; alice then ALICE is one vote, not two."""
    rid = vault.submit("release", {"v": 6}, requested_by="agent").id
    assert vault.approve(rid, by="Alice").status is Status.PENDING
    with pytest.raises(DecisionRefusedError, match="has voted on it already"):
        vault.approve(rid, by="ALICE")
    assert vault.votes(rid).waiting_for() == ["bob", "carol"]
    assert vault.approve(rid, by="bob").status is Status.APPROVED


def test_an_approval_with_no_name_never_satisfies_a_rule_that_cares_who(
    vault: Vault,
) -> None:
    """ "unknown" (what a decision gets with no name) approves nothing that names people."""
    email = vault.submit("email", {"to": "x"}, requested_by="agent").id
    with pytest.raises(DecisionRefusedError, match="counts for nobody here"):
        vault.approve(email, by="unknown")
    release = vault.submit("release", {"v": 7}, requested_by="agent").id
    with pytest.raises(DecisionRefusedError):
        vault.approve(release, by="Unknown")
    assert vault.get(release).votes() == []


def test_a_note_approved_with_no_name_under_prevent_self_approval_stays_pending(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """``status: approved`` and no ``decided_by`` was "approved by unknown"; now refused."""
    rid = clocked_vault.submit("email", {"to": "x"}, requested_by="agent").id
    daemon.run_once(clock.now)
    set_status(note(clocked_vault, rid), "approved")
    saved(clocked_vault, daemon, clock, note(clocked_vault, rid))
    assert clocked_vault.get(rid).status is Status.PENDING
    assert "say who you are" in flagged(clocked_vault)


def test_an_approval_with_no_name_still_counts_where_the_rules_name_nobody(
    vault_path: Path,
) -> None:
    """A rule with no approvers, quorum or self-approval check is decided as before."""
    (vault_path / "hitl-vault.yaml").write_text("defaults:\n  decision: ask\n")
    with Vault(vault_path) as vault:
        rid = vault.submit("anything", {}, requested_by="agent").id
        assert vault.approve(rid, by="unknown").status is Status.APPROVED


# --- only the proof path writes "via" ------------------------------------------------------------

AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("kind", "details"),
    [
        (Kind.IGNORED, ("via api",)),
        (Kind.EDITED, ("via api",)),
        (Kind.ESCALATED, ("via api",)),
        (Kind.TRANSITION, ("via api", "result: x")),  # not the last detail
        (Kind.TRANSITION, ("via phone",)),
        (Kind.TRANSITION, ("via api from 10.0.0.1",)),
    ],
)
def test_no_entry_but_a_decision_or_vote_carrying_the_engines_detail_reads_as_proven(
    kind: Kind, details: tuple[str, ...]
) -> None:
    """An ignored note edit, a params edit or a stray detail is never a proof."""
    t = Transition(AT, Status.PENDING, Status.PENDING, "alice", "", details, kind)
    assert proven_by(t) is None
    assert "by alice via" not in history_line(t)


def test_what_a_note_can_write_never_becomes_a_via_detail(vault: Vault) -> None:
    """A params key ``via`` edited in the note, and a typed ``status: via api``, prove nothing."""
    rid = vault.submit("payment", {"via": "api"}, requested_by="agent").id
    path = note(vault, rid)
    path.write_text(path.read_text().replace("via: api", "via: ap", 1))
    vault.engine.refresh(rid)
    set_status(path, "via api", decided_by="alice")
    vault.engine.refresh(rid)
    request = vault.get(rid)
    assert request.status is Status.PENDING
    assert [proven_by(t) for t in request.history] == [None] * len(request.history)
    assert any(t.kind is Kind.EDITED for t in request.history)


def test_a_rule_cannot_widen_what_the_defaults_allow() -> None:
    """The shape the docs show: defaults trust nobody's word, one rule allows a link too."""
    text = textwrap.dedent("""\
        defaults:
          decision: ask
          authenticated: true
        rules:
          - name: rotate-keys
            action: rotate
            decision: ask
            authenticated: [api, link]
    """)
    policy = parse_policy(text)
    plan = policy.evaluate(Proposal("rotate", {})).plan
    assert plan.authenticated == frozenset(
        {"api"}
    )  # the strictest: link is not in the defaults' set
