"""Several approvers: quorum, stages, self-approval, reasons, escalation, groups.

Real vaults on disk, real SQLite, the real CLI (CliRunner and a subprocess), an in-process
daemon stepped on an injected clock and a real ``hitl-vault run`` process; the pure
counting in :mod:`hitl_vault.policy.quorum` is checked against a reference model with hypothesis.
"""

from __future__ import annotations

import json
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hitl_vault import Request, Status, Vault
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import (
    DecisionRefusedError,
    IllegalTransitionError,
    RulesError,
)
from hitl_vault.model import Kind
from hitl_vault.policy.quorum import Count, Plan, RequireReason, Stage, Vote, add, count, refusal
from hitl_vault.policy.rules import Proposal
from hitl_vault.policy.rulesfile import parse_policy

from .helpers import RECORD, Clock, DaemonProcess, VaultHelper, ended, eventually
from .receivers import Receiver

# payment: 2 of the finance group, never the requester; deploy: lena (lead), then one of
# finance; refund: alice and bob, dave too after 30 minutes; transfer: a rejection says why;
# email: one person of alice/bob decides as before (status: approved, decided_by).
RULES = """\
groups:
  finance: [alice, bob, carol]
defaults:
  decision: ask
  timeout: 24h
  quiet: 200ms
rules:
  - name: two-of-finance
    action: payment
    decision: ask
    approvers: [group:finance]
    quorum: 2
    prevent_self_approval: true
  - name: staged
    action: deploy
    decision: ask
    stages:
      - {name: lead, approvers: [lena], quorum: 1}
      - {name: finance, approvers: [group:finance], quorum: 1}
  - name: escalating
    action: refund
    decision: ask
    approvers: [alice, bob]
    quorum: 2
    escalate_after: 30m
    escalate_to: [dave]
  - name: reasons
    action: transfer
    decision: ask
    approvers: [alice, bob]
    quorum: 2
    require_reason: reject
  - name: single
    action: email
    decision: ask
    approvers: [alice, bob]
actions:
  payment:
    run: [PYTHON, -S, scripts/record.py]
    timeout: 60s
    idempotent: false
"""


def write_vault(path: Path, extra: str = "") -> Path:
    """A vault from the template with :data:`RULES` (and ``extra`` appended) and the
    recording executor (scripts/record.py, logging to scripts/runs.log) for payment."""
    init_vault(path)
    (path / "hitl-vault.yaml").write_text(RULES.replace("PYTHON", sys.executable) + extra)
    (path / "scripts" / "record.py").write_text(RECORD)
    return path


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    return write_vault(tmp_path / "vault")


def invoke(vault: Path, *args: str) -> Result:
    """One command through click's CliRunner, stdout and stderr apart."""
    result = CliRunner().invoke(
        cli, ["--vault", str(vault), *args], prog_name="hitl-vault", catch_exceptions=False
    )
    assert "Traceback" not in result.output + result.stderr
    return result


def submit_cli(vault: Path, action: str, *params: str, by: str = "bot") -> str:
    args = [a for p in params for a in ("-p", p)]
    result = invoke(vault, "submit", action, *args, "--by", by, "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["status"] == "pending"
    return str(data["id"])


def show_json(vault: Path, request_id: str) -> dict[str, Any]:
    """``show ID --json``, parsed."""
    result = invoke(vault, "show", request_id, "--json")
    assert result.exit_code == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def history(vault: Vault, request_id: str) -> list[str]:
    """The journal's history of the request, as its moves (``alice approved``, ...)."""
    return [t.move for t in vault.get(request_id).history]


def vote_line(note: Path, name: str, value: str) -> None:
    """``name`` saves their own line under votes: (and nothing else), in place."""
    text = note.read_text(encoding="utf-8")
    key = name if f"\n  {name}:\n" in text else f'"{name}"'  # quoted where YAML needs it
    assert f"\n  {key}:\n" in text, f"no empty line for {name} in:\n{text}"
    with open(note, "w", encoding="utf-8", newline="") as f:
        f.write(text.replace(f"\n  {key}:\n", f"\n  {key}: {value}\n", 1))


# --- 1. quorum through the CLI --------------------------------------------------------------


@pytest.mark.process
def test_cli_quorum_prints_progress_and_runs_once_only_after_the_second_vote(
    vault_path: Path,
    clocked_vault: Vault,
    daemon: Daemon,
    clock: Clock,
    ran: list[str],
    helper: VaultHelper,
) -> None:
    """approve --by is one vote (exit 0, progress); the second completes it; it runs once, then."""
    rid = submit_cli(vault_path, "payment", "amount=900", by="carol")
    daemon.run_once(clock.now)
    first = invoke(vault_path, "approve", rid, "--by", "alice")
    assert first.exit_code == 0, first.stderr
    assert first.stdout == f"{rid} pending: 1 of 2 approvals; waiting for bob\n"
    shown = show_json(vault_path, rid)
    assert shown["status"] == "pending"
    assert shown["votes"] == {"alice": "approved", "bob": None}
    assert shown["approvers"] == ["bob"]
    assert shown["stage"] is None
    for _ in range(3):
        daemon.run_once(clock.advance(timedelta(seconds=1)))
    assert ran == [], "one vote of two must not run anything"

    again = invoke(vault_path, "approve", rid, "--by", "alice")
    assert again.exit_code == 1
    assert "alice has voted on it already" in again.stderr
    assert history(clocked_vault, rid).count("alice approved") == 1

    second = helper.hitl("approve", rid, "--by", "bob")
    assert (second.returncode, second.stdout) == (0, f"{rid} approved\n"), second.stderr
    ended(daemon, clock, rid, Status.EXECUTED)
    daemon.run_once(clock.advance(timedelta(seconds=5)))
    assert ran == [rid]
    assert history(clocked_vault, rid) == [
        "created → pending",
        "alice approved",
        "bob approved",
        "pending → approved",
        "approved → executing",
        "executing → executed",
    ]
    assert clocked_vault.get(rid).decided_by == "alice, bob"
    done = show_json(vault_path, rid)
    assert done["votes"] == {"alice": "approved", "bob": "approved"}
    assert done["approvers"] == [] and done["stage"] is None
    text = helper.note(rid)
    assert "alice approved (1 of 2)" in text and "bob approved (2 of 2)" in text
    assert "pending → approved · by alice, bob" in text
    listed = json.loads(invoke(vault_path, "list", "--json").stdout)
    assert [r["votes"] for r in listed if r["id"] == rid] == [done["votes"]]


def test_a_vote_that_does_not_count_exits_1_and_changes_nothing(
    vault_path: Path, vault: Vault
) -> None:
    """Not an approver, or the requester itself: exit 1, the reason on stderr, no history."""
    rid = submit_cli(vault_path, "payment", "amount=900", by="carol")
    before = history(vault, rid)
    outsider = invoke(vault_path, "approve", rid, "--by", "mallory")
    assert outsider.exit_code == 1 and outsider.stdout == ""
    assert "mallory is not among its approvers (alice, bob, carol)" in outsider.stderr
    self_ = invoke(vault_path, "approve", rid, "--by", "carol")
    assert self_.exit_code == 1
    assert "carol asked for it and may not approve it (prevent_self_approval)" in self_.stderr
    assert history(vault, rid) == before
    assert vault.votes(rid).progress() == "0 of 2 approvals; waiting for alice or bob"


def test_single_approver_rules_keep_status_and_decided_by(vault_path: Path, vault: Vault) -> None:
    """A rule with approvers but no quorum is decided by one person, as before: no votes."""
    rid = submit_cli(vault_path, "email", "to=a@b.c")
    assert "votes:" not in vault.get(rid).path.read_text()  # type: ignore[union-attr]
    assert invoke(vault_path, "approve", rid, "--by", "mallory").exit_code == 1
    done = invoke(vault_path, "approve", rid, "--by", "bob")
    assert (done.exit_code, done.stdout) == (0, f"{rid} approved\n")
    request = vault.get(rid)
    assert (request.status, request.decided_by) == (Status.APPROVED, "bob")
    assert not request.votes()
    assert show_json(vault_path, rid)["votes"] == {}


# --- 2. quorum through note edits, a real daemon ----------------------------------------------


@pytest.mark.process
def test_two_people_saving_their_own_lines_at_once_both_count_and_it_runs_once(
    vault_path: Path, helper: VaultHelper, daemon_process: DaemonProcess
) -> None:
    """alice's and bob's lines saved in quick succession: both votes count, it runs once."""
    rid = submit_cli(vault_path, "payment", "amount=900", by="carol")
    note = vault_path / "Pending_Approval" / f"{rid}.md"
    helper.settle()
    vote_line(note, "alice", "approved")
    vote_line(note, "bob", "yes")  # no wait: the daemon may see one save or both
    eventually(lambda: helper.runs() == [rid])
    eventually(lambda: helper.shows(rid, Status.EXECUTED, "Done"))
    with Vault(vault_path) as vault:
        request = vault.get(rid)
        assert request.decided_by in ("alice, bob", "bob, alice")
        assert sorted(t.by for t in request.votes()) == ["alice", "bob"]
    text = helper.note(rid)
    assert "  alice: approved\n" in text and "  bob: " in text
    assert helper.runs() == [rid]
    assert daemon_process.stop() == 0


def test_status_approved_typed_in_a_voted_note_is_refused(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """``status: approved`` in a note decided by votes is flagged and set back; nothing runs."""
    req = clocked_vault.submit("payment", {"amount": 900}, requested_by="carol")
    assert req.path is not None
    daemon.run_once(clock.now)
    text = req.path.read_text().replace("status: pending", "status: approved", 1)
    req.path.write_text(text.replace("decided_by:\n", "decided_by: alice\n", 1))
    daemon.notice(req.path)
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    assert clocked_vault.engine.journal.status_of(req.id) is Status.PENDING
    daemon.run_once(clock.advance(timedelta(seconds=3)))
    text = req.path.read_text()
    assert "status: pending" in text
    assert '· kept pending · ignored status "approved": this request is decided by votes' in text
    assert [t.move for t in clocked_vault.get(req.id).history] == [
        "created → pending", "kept pending",
    ]  # fmt: skip
    assert ran == []


def flagged(vault: Vault) -> str:
    """What the journal holds under Needs attention now, one message a line."""
    return "\n".join(a.message for a in vault.engine.journal.attention())


def edit_params_after_alices_vote(vault: Vault, daemon: Daemon, clock: Clock) -> Request:
    """carol asks to pay 900; alice approves; then someone edits the note to 9000."""
    req = vault.submit("payment", {"amount": 900}, requested_by="carol")
    assert req.path is not None
    vault.approve(req.id, by="alice")
    daemon.run_once(clock.advance(timedelta(seconds=3)))
    req.path.write_text(req.path.read_text().replace("amount: 900", "amount: 9000", 1))
    daemon.notice(req.path)
    daemon.run_once(clock.advance(timedelta(milliseconds=50)))
    return req


def test_params_edited_after_a_vote_are_refused(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """A params edit after alice's vote is flagged; her vote stands; bob's vote is not taken."""
    req = edit_params_after_alices_vote(clocked_vault, daemon, clock)
    assert "params edited (amount 900 → 9000) after alice voted" in flagged(clocked_vault)
    request = clocked_vault.get(req.id)
    assert [t.by for t in request.votes()] == ["alice"]
    assert request.params == {"amount": 900}
    assert req.path is not None
    vote_line(req.path, "bob", "approved")
    daemon.notice(req.path)
    daemon.run_once(clock.advance(timedelta(milliseconds=50)))
    assert clocked_vault.engine.journal.status_of(req.id) is Status.PENDING
    assert ran == []


def test_a_vote_through_the_api_never_runs_params_edited_after_earlier_votes(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """alice approved 900; bob's approve --expect for the note's 9000 must not run 9000."""
    req = edit_params_after_alices_vote(clocked_vault, daemon, clock)
    sha = clocked_vault.params_to_run(req.id)[1]
    with pytest.raises(DecisionRefusedError, match="a vote is for the params as recorded"):
        clocked_vault.approve(req.id, by="bob", expect=sha)
    assert clocked_vault.get(req.id).status is Status.PENDING
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    assert ran == []


def test_a_refused_params_edit_stays_visible_until_it_is_put_back(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """Once quiet, a refused params edit is put back in the note or still flagged."""
    req = edit_params_after_alices_vote(clocked_vault, daemon, clock)
    for _ in range(3):
        daemon.run_once(clock.advance(timedelta(seconds=1)))
    assert req.path is not None
    still_edited = "amount: 9000" in req.path.read_text()
    assert not still_edited or "after alice voted" in flagged(clocked_vault)


# --- 3. stages in order ---------------------------------------------------------------------


def test_stages_run_in_order(vault_path: Path, vault: Vault) -> None:
    """finance before the lead is refused with the reason; lead then finance approves."""
    rid = submit_cli(vault_path, "deploy", "env=prod")
    shown = show_json(vault_path, rid)
    assert shown["stage"] == "lead"
    assert (shown["approvers"], shown["votes"]) == (["lena"], {"lena": None})
    early = invoke(vault_path, "approve", rid, "--by", "alice")
    assert early.exit_code == 1
    assert (
        "alice approves in stage finance, which comes after stage lead; "
        "wait until stage lead is met" in early.stderr
    )
    assert history(vault, rid) == ["created → pending"]
    lead = invoke(vault_path, "approve", rid, "--by", "lena")
    assert lead.exit_code == 0
    assert lead.stdout == (
        f"{rid} pending: 0 of 1 approvals in stage finance (stage 2 of 2); "
        "waiting for alice or bob or carol\n"
    )
    shown = show_json(vault_path, rid)
    assert shown["stage"] == "finance" and shown["approvers"] == ["alice", "bob", "carol"]
    again = invoke(vault_path, "approve", rid, "--by", "lena")
    assert again.exit_code == 1 and "lena" in again.stderr
    final = invoke(vault_path, "approve", rid, "--by", "bob")
    assert (final.exit_code, final.stdout) == (0, f"{rid} approved\n")
    request = vault.get(rid)
    assert (request.status, request.decided_by) == (Status.APPROVED, "lena, bob")
    assert history(vault, rid) == [
        "created → pending", "lena approved", "bob approved", "pending → approved",
    ]  # fmt: skip


def test_a_person_counts_once_across_stages(tmp_path: Path) -> None:
    """Someone in two stages approves in the first only; the second needs someone else."""
    root = write_vault(tmp_path / "v")
    rules = root / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text().replace("{name: lead, approvers: [lena]", "{name: lead, approvers: [bob]")
    )
    with Vault(root) as vault:
        rid = vault.submit("deploy", {"env": "prod"}).id
        vault.approve(rid, by="bob")
        with pytest.raises(DecisionRefusedError, match="bob has voted on it already"):
            vault.approve(rid, by="bob")
        assert vault.votes(rid).waiting_for() == ["alice", "carol"]
        assert vault.approve(rid, by="carol").status is Status.APPROVED


# --- 4. escalation on an injected clock -------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


def test_escalation_lets_dave_decide_after_30_minutes_and_notifies(
    tmp_path: Path, clock: Clock, receiver: Receiver
) -> None:
    """dave is refused before escalate_after; after it he counts and escalated is notified."""
    root = write_vault(
        tmp_path / "v",
        f"notify:\n  - url: json://127.0.0.1:{receiver.port}/esc\n    on: [escalated]\n",
    )
    with Vault(root, clock=clock) as vault, Daemon(vault.engine, clock=clock) as daemon:
        rid = vault.submit("refund", {"amount": 70}).id
        daemon.run_once(clock.now)
        with pytest.raises(DecisionRefusedError, match="dave is not among its approvers"):
            vault.approve(rid, by="dave")
        vault.approve(rid, by="alice")
        daemon.run_once(clock.advance(timedelta(minutes=29)))
        assert not vault.get(rid).escalated
        with pytest.raises(DecisionRefusedError):
            vault.approve(rid, by="dave")
        daemon.run_once(clock.advance(timedelta(minutes=1, seconds=1)))
        request = vault.get(rid)
        assert request.escalated
        assert "escalated to dave" in [f"{t.move} {t.details[0]}" for t in request.history]
        assert vault.votes(rid).waiting_for() == ["bob", "dave"]
        assert daemon.notifier.send_due()
        (post,) = receiver.wait_for(1, "/esc")
        assert "escalated" in (post.title + post.message).lower()
        daemon.run_once(clock.advance(timedelta(seconds=5)))  # the note shows it, once quiet
        assert "· escalated to dave" in (root / "Pending_Approval" / f"{rid}.md").read_text()
        assert vault.approve(rid, by="dave").status is Status.APPROVED
        assert vault.get(rid).decided_by == "alice, dave"
        daemon.run_once(clock.advance(timedelta(hours=1)))
        kinds = [t.kind for t in vault.get(rid).history]
        assert kinds.count(Kind.ESCALATED) == 1, "escalated once only"


def test_escalation_is_caught_up_by_a_decision_without_a_daemon(
    vault_path: Path, clock: Clock
) -> None:
    """No daemon: past escalate_after, Vault.approve by dave counts (catch-up by the API)."""
    with Vault(vault_path, clock=clock) as vault:
        rid = vault.submit("refund", {"amount": 70}).id
        vault.approve(rid, by="alice")
        clock.advance(timedelta(minutes=31))
        assert vault.approve(rid, by="dave").status is Status.APPROVED


def test_escalation_by_refresh_without_a_daemon(vault_path: Path, clock: Clock) -> None:
    """engine.refresh (what wait uses) journals a due escalation without any daemon."""
    with Vault(vault_path, clock=clock) as vault:
        rid = vault.submit("refund", {"amount": 70}).id
        clock.advance(timedelta(minutes=31))
        assert vault.engine.refresh(rid).escalated
        vault.approve(rid, by="dave")
        assert vault.approve(rid, by="bob").status is Status.APPROVED


# --- 5. self-approval and reasons --------------------------------------------------------------


def test_require_reason_reject_refuses_a_bare_rejection_and_counts_one_with_a_reason(
    vault_path: Path, vault: Vault
) -> None:
    """require_reason: reject: a bare rejection is refused; one with a reason rejects."""
    rid = submit_cli(vault_path, "transfer", "amount=5")
    assert invoke(vault_path, "approve", rid, "--by", "alice").exit_code == 0
    bare = invoke(vault_path, "reject", rid, "--by", "bob")
    assert bare.exit_code == 1
    assert "a rejection needs a reason here (require_reason: reject)" in bare.stderr
    assert history(vault, rid) == ["created → pending", "alice approved"]
    why = invoke(vault_path, "reject", rid, "--by", "bob", "--reason", "budget frozen")
    assert (why.exit_code, why.stdout) == (0, f"{rid} rejected\n")
    request = vault.get(rid)
    assert (request.status, request.decided_by, request.reason) == (
        Status.REJECTED, "bob", "budget frozen",
    )  # fmt: skip
    assert show_json(vault_path, rid)["votes"] == {"alice": "approved", "bob": "rejected"}
    late = invoke(vault_path, "approve", rid, "--by", "bob")
    assert late.exit_code == 1


def test_a_rejection_with_a_reason_in_the_note_counts(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, helper: VaultHelper
) -> None:
    """``bob: rejected, budget frozen`` in a note rejects; a bare ``bob: no`` is refused."""
    first = clocked_vault.submit("transfer", {"amount": 5})
    second = clocked_vault.submit("transfer", {"amount": 6})
    assert first.path and second.path
    daemon.run_once(clock.now)
    vote_line(first.path, "bob", "no")
    vote_line(second.path, "bob", "rejected, budget frozen")
    daemon.notice(first.path)
    daemon.notice(second.path)
    daemon.run_once(clock.advance(timedelta(milliseconds=50)))
    assert clocked_vault.engine.journal.status_of(first.id) is Status.PENDING
    assert not clocked_vault.get(first.id).votes()
    assert "a rejection needs a reason here" in flagged(clocked_vault)
    rejected = clocked_vault.get(second.id)
    assert (rejected.status, rejected.reason) == (Status.REJECTED, "budget frozen")


def test_the_requester_may_reject_but_never_approve(vault_path: Path, vault: Vault) -> None:
    """prevent_self_approval bars the requester's approval, not their rejection."""
    rid = vault.submit("payment", {"amount": 900}, requested_by="alice").id
    with pytest.raises(DecisionRefusedError, match="prevent_self_approval"):
        vault.approve(rid, by="alice")
    assert vault.votes(rid).waiting_for() == ["bob", "carol"]
    assert vault.reject(rid, by="alice").status is Status.REJECTED


# --- 6. a crash between two votes ---------------------------------------------------------------


@pytest.mark.process
def test_a_vote_survives_a_daemon_killed_with_sigkill(
    vault_path: Path, helper: VaultHelper, daemon_process: DaemonProcess
) -> None:
    """alice's vote survives a kill -9 of the daemon; bob's completes it and it runs once."""
    rid = submit_cli(vault_path, "payment", "amount=900", by="carol")
    assert invoke(vault_path, "approve", rid, "--by", "alice").exit_code == 0
    daemon_process.kill()
    with Vault(vault_path) as vault:  # reopened after the crash
        assert vault.get(rid).status is Status.PENDING
        assert [t.by for t in vault.get(rid).votes()] == ["alice"]
        assert vault.votes(rid).progress() == "1 of 2 approvals; waiting for bob"
    assert helper.runs() == []
    daemon_process.start()
    vote_line(helper.note_path(rid), "bob", "approved")
    eventually(lambda: helper.runs() == [rid])
    eventually(lambda: helper.shows(rid, Status.EXECUTED, "Done"))
    assert helper.runs() == [rid]
    assert daemon_process.stop() == 0


@pytest.mark.process
def test_a_vote_by_the_cli_shows_in_the_note_a_running_daemon_keeps(
    vault_path: Path, helper: VaultHelper, daemon_process: DaemonProcess
) -> None:
    """A vote recorded by the CLI while the daemon runs is written into the note by it."""
    rid = submit_cli(vault_path, "payment", "amount=900", by="carol")
    time.sleep(1.0)  # pacing, not an assertion: the daemon is done with the new note
    assert invoke(vault_path, "approve", rid, "--by", "alice").exit_code == 0
    eventually(lambda: "  alice: approved\n" in helper.note(rid), timeout=2)


# --- 7. properties of counting ------------------------------------------------------------------

NAMES = ["alice", "bob", "carol", "dave", "erin"]
PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def plans(draw: st.DrawFn) -> Plan:
    stages = []
    for i in range(draw(st.integers(1, 3))):
        anyone = draw(st.booleans()) if i == 0 else False
        names = None if anyone else frozenset(draw(st.sets(st.sampled_from(NAMES), min_size=1)))
        quorum = draw(st.integers(1, 3 if names is None else len(names)))
        stages.append(Stage(f"s{i}", names, quorum))
    return Plan(
        stages=tuple(stages),
        prevent_self_approval=draw(st.booleans()),
        require_reason=draw(st.sampled_from(list(RequireReason))),
        escalate_to=frozenset(draw(st.sets(st.sampled_from(NAMES), max_size=1))),
    )


votes_st = st.lists(
    st.builds(
        Vote,
        name=st.sampled_from([*NAMES, ""]),
        approve=st.booleans(),
        reason=st.sampled_from(["", "ok"]),
    ),
    max_size=10,
)


def model(
    plan: Plan, votes: list[Vote], requester: str, escalated: bool
) -> tuple[list[list[str]], str | None]:
    """The rules as the README states them, written out plainly: (approvals per stage,
    who rejected)."""
    n = len(plan.stages)
    approvals: list[list[str]] = [[] for _ in range(n)]
    stage, rejected, voted = 0, None, set()

    def eligible(i: int, name: str) -> bool:
        names = plan.stages[i].approvers
        return names is None or name in names or (escalated and name in plan.escalate_to)

    for v in votes:
        if rejected is not None or stage == n:
            break  # decided: nothing more counts
        if (plan.by_votes and not v.name) or v.name in voted:
            continue
        if not v.reason and (
            plan.require_reason is RequireReason.ALWAYS
            or (plan.require_reason is RequireReason.REJECT and not v.approve)
        ):
            continue
        if v.approve:
            named = plan.prevent_self_approval or any(s.approvers for s in plan.stages)
            if not v.name and (plan.by_votes or named):
                continue  # an approval with no name never satisfies such a rule
            if plan.prevent_self_approval and v.name == requester:
                continue
            if not eligible(stage, v.name):
                continue
            approvals[stage].append(v.name)
            voted.add(v.name)
            while stage < n and len(approvals[stage]) >= plan.stages[stage].quorum:
                stage += 1
        elif any(eligible(i, v.name) for i in range(stage, n)):
            rejected = v.name
    return approvals, rejected


@pytest.mark.slow  # a long search: seconds of CPU
@PROPS
@given(plans(), votes_st, st.sampled_from(NAMES), st.booleans())
def test_counting_matches_the_rules(
    plan: Plan, votes: list[Vote], requester: str, escalated: bool
) -> None:
    """count agrees with a plain model of the rules; once decided, nothing more counts."""
    result = count(plan, votes, requester=requester, escalated=escalated)
    approvals, rejected = model(plan, votes, requester, escalated)
    assert [list(a) for a in result.approvals] == approvals
    assert result.rejected_by == rejected
    met = all(len(a) >= s.quorum for a, s in zip(approvals, plan.stages, strict=True))
    assert result.approved == (met and rejected is None)
    every = [name for a in result.approvals for name in a]
    assert len(every) == len(set(every)), "a person counts once"
    for stage, names in zip(plan.stages, result.approvals, strict=True):
        assert len(names) <= stage.quorum, "never more approvals than a stage needs"
    if result.approved:
        assert len(every) == sum(s.quorum for s in plan.stages)
        if plan.prevent_self_approval:
            assert requester not in every
    # step by step, refusal/add say the same as count
    state = count(plan, (), requester=requester, escalated=escalated)
    for v in votes:
        if refusal(state, v, requester=requester) is None:
            assert not state.decided
            state = add(state, v)
    assert state == result
    if result.decided:
        for v in (Vote(n, a, reason="ok") for n in NAMES for a in (True, False)):
            assert refusal(result, v, requester=requester) is not None
        assert count(plan, [*votes, *votes], requester=requester, escalated=escalated) == result


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.tuples(st.sampled_from(["alice", "bob", "carol", "dave"]), st.booleans()), max_size=5
    )
)
def test_votes_through_a_real_vault_run_once_exactly_at_quorum(
    votes: list[tuple[str, bool]],
) -> None:
    """Votes through Vault.approve/reject follow count; the executor runs once iff approved."""
    with tempfile.TemporaryDirectory() as tmp:
        root = write_vault(Path(tmp) / "v")
        clock = Clock()
        ran: list[str] = []
        with Vault(root, clock=clock) as vault:

            @vault.action("payment")
            def pay(request: Request) -> str:
                ran.append(request.id)
                return "paid"

            with Daemon(vault.engine, clock=clock) as daemon:
                rid = vault.submit("payment", {"amount": 900}, requested_by="carol").id
                plan = vault.votes(rid).plan
                assert plan.by_votes and plan.prevent_self_approval
                counted: list[Vote] = []
                for name, approve in votes:
                    before = vault.get(rid)
                    expected = count(plan, [*counted, Vote(name, approve)], requester="carol")
                    try:
                        (vault.approve if approve else vault.reject)(rid, by=name)
                    except (DecisionRefusedError, IllegalTransitionError):
                        after = vault.get(rid)
                        assert len(after.history) == len(before.history), "refused: no change"
                        assert after.status is before.status
                    else:
                        counted.append(Vote(name, approve))
                    state: Count = vault.votes(rid)
                    assert state.approvals == expected.approvals
                    assert state.rejected_by == expected.rejected_by
                    status = vault.engine.journal.status_of(rid)
                    if not expected.decided:
                        assert status is Status.PENDING
                    daemon.run_once(clock.advance(timedelta(seconds=1)))
                    if not expected.approved:
                        assert ran == []
                final = count(plan, counted, requester="carol")
                if final.approved:
                    ended(daemon, clock, rid, Status.EXECUTED)
                for _ in range(3):
                    daemon.run_once(clock.advance(timedelta(seconds=1)))
                assert ran == ([rid] if final.approved else [])
                if final.rejected_by:
                    assert vault.engine.journal.status_of(rid) is Status.REJECTED


# --- 8. the rules file ----------------------------------------------------------------------------


def rules_error(text: str) -> RulesError:
    with pytest.raises(RulesError) as info:
        parse_policy(textwrap.dedent(text))
    return info.value


@pytest.mark.parametrize(
    ("text", "line", "problem", "fix"),
    [
        (
            """\
            rules:
              - name: r
                decision: ask
                approvers: [alice]
                quorum: 2
            """,
            2, "rule r needs 2 approvals but names only 1 approvers", "lower quorum",
        ),
        (
            """\
            groups:
              finance: [alice]
            rules:
              - name: r
                decision: ask
                approvers: [group:finanse]
            """,
            6, 'no group named "finanse"', "finance",
        ),
        (
            """\
            rules:
              - name: r
                decision: ask
                escalate_after: 30m
            """,
            2, "rule r has escalate_after but no escalate_to", "escalate_to: [name]",
        ),
        (
            """\
            defaults:
              escalate_to: [dave]
            """,
            2, "defaults has escalate_to but no escalate_after", "escalate_after: 30m",
        ),
        (
            """\
            rules:
              - name: r
                decision: ask
                quorum: 0
            """,
            4, "must be a whole number from 1 to 100", "quorum: 2",
        ),
        (
            """\
            rules:
              - name: r
                decision: ask
                require_reason: sometimes
            """,
            4, "sometimes", "always",
        ),
        (
            """\
            rules:
              - name: r
                decision: ask
                stages:
                  - {name: lead, approvers: [lena]}
                  - {name: lead, approvers: [bob]}
            """,
            6, 'two stages are named "lead"', "rename one",
        ),
        (
            """\
            rules:
              - name: r
                decision: ask
                stages:
                  - {name: lead, quorum: 1}
            """,
            5, "has no approvers", "add approvers",
        ),
        (
            """\
            rules:
              - name: r
                decision: ask
                approvers: ["bob via api"]
            """,
            4, "reads like a proven decision", "Mary Ann",
        ),
    ],
)  # fmt: skip
def test_rules_errors_name_the_line_and_the_fix(
    text: str, line: int, problem: str, fix: str
) -> None:
    """Each mistake in the new keys is a RulesError with its line, the problem and a fix."""
    err = rules_error(text)
    assert err.line == line, str(err)
    assert problem in err.problem, str(err)
    assert fix in err.fix, str(err)
    assert str(err).startswith(f"hitl-vault.yaml line {line}: "), str(err)


def test_groups_expand_and_two_matching_rules_combine_to_the_strictest() -> None:
    """Groups expand; two matching rules combine to the strictest plan."""
    policy = parse_policy(
        textwrap.dedent(
            """\
            groups:
              finance: [alice, bob, carol]
              ops: [bob, carol, dave]
            rules:
              - name: a
                action: payment
                decision: ask
                approvers: [group:finance, erin]
                quorum: 1
                escalate_after: 2h
                escalate_to: [zoe]
                stages:
                  - {name: legal, approvers: [lara]}
              - name: b
                action: payment
                decision: ask
                approvers: [group:ops]
                quorum: 2
                prevent_self_approval: true
                require_reason: always
                escalate_after: 30m
                escalate_to: [yan]
                stages:
                  - {name: cfo, approvers: [cy]}
            """
        )
    )
    plan = policy.evaluate(Proposal("payment", {"amount": 1})).plan
    assert plan.stages == (
        Stage("", frozenset({"bob", "carol"}), 2),
        Stage("legal", frozenset({"lara"}), 1),
        Stage("cfo", frozenset({"cy"}), 1),
    )
    assert plan.prevent_self_approval and plan.require_reason is RequireReason.ALWAYS
    assert plan.escalate_after == timedelta(minutes=30)
    assert "yan" in plan.escalate_to
    alone = policy.evaluate(Proposal("other", {})).plan
    assert not alone.by_votes and alone.stages[0].approvers is None


def test_approvers_take_every_name_people_add_takes_compared_as_people_are(
    tmp_path: Path,
) -> None:
    """``approvers:`` take any name ``people add`` takes (spaces, accents, an apostrophe),
    compared after NFKC and casefolding: a vote in another case or in full-width counts,
    and two rules naming one person differently still share her."""
    init_vault(tmp_path)
    (tmp_path / "hitl-vault.yaml").write_text(
        textwrap.dedent(
            """\
            groups:
              legal: ["Zoë O'Brien", Mary Ann]
            rules:
              - name: a
                action: payment
                decision: ask
                approvers: [Mary Ann, "Zoë O'Brien", bob@example.com]
              - name: b
                action: payment
                decision: ask
                approvers: [mary ann, group:legal]
              - name: c
                action: deploy
                decision: ask
                approvers: [Mary Ann, MARY ANN, ｍａｒｙ ａｎｎ]
            """
        )
    )
    people = CliRunner().invoke(cli, ["--vault", str(tmp_path), "people", "add", "Zoë O'Brien"])
    assert people.exit_code == 0, people.output
    with Vault(tmp_path) as v:
        plan = v.engine.policy.evaluate(Proposal("payment", {})).plan
        assert plan.stages[0].approvers == frozenset({"Mary Ann", "Zoë O'Brien"})
        # One person written three ways is one approver, kept as first written.
        deploy = v.engine.policy.evaluate(Proposal("deploy", {})).plan
        assert deploy.stages[0].approvers == frozenset({"Mary Ann"})
        r = v.submit("payment", {"amount": 1})
        with pytest.raises(DecisionRefusedError, match="bob may not decide it"):
            v.approve(r.id, by="bob")
        assert v.approve(r.id, by="ＭＡＲＹ ＡＮＮ").status is Status.APPROVED
        r2 = v.submit("payment", {"amount": 2})
        assert v.approve(r2.id, by="zoë o'brien").status is Status.APPROVED
    refused = rules_error(
        """\
        rules:
          - name: r
            decision: ask
            approvers: ["Mary\\tAnn"]
        """
    )
    assert refused.line == 4 and "not printable" in refused.problem, str(refused)
    quorum = rules_error(
        """\
        rules:
          - name: r
            decision: ask
            approvers: [Alice, alice]
            quorum: 2
        """
    )
    assert "names only 1 approvers" in quorum.problem, str(quorum)


def test_a_voted_note_under_authenticated_says_how_to_vote_so_that_it_counts() -> None:
    """A note decided by votes under authenticated: names the channels and how to use them,
    and never tells a person to write approved under votes: (which counts for nothing)."""
    from hitl_vault.notes.callout import callout

    lines = callout(
        Status.PENDING, None, "r", None, None, "0 of 2 approvals", frozenset({"socket", "link"})
    )
    assert not any("Write `approved`" in line for line in lines)
    assert lines[1:3] == [
        "> Its rules count only approvals proven through socket or link: approve with the CLI "
        "through the service's socket or the decision link sent to you.",
        "> `approved` under `votes:` here approves nothing; `rejected` still rejects.",
    ]
    assert lines[3] == "> Still needed: 0 of 2 approvals"
