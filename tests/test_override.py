"""The human's override and refusals that stay visible: ``cancel`` of an approved request
whose action has not started, ``retry`` of a failed or timed-out one, ``approve``/``reject``
of several ids, ``approve ID -p``, a refused decision kept under Needs attention, and a
Python rule that raises (README: The CLI, Requests statuses and rules, Crashes)."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hitl_vault import IllegalTransitionError, NotRetryableError, Rejected, Request, Status, Vault
from hitl_vault.approval import carrying_out
from hitl_vault.cli.main import cli
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import RulesError
from hitl_vault.policy.rules import Proposal

from .helpers import Clock, VaultHelper, set_status

TEMPLATE_QUIET = timedelta(seconds=2)


def invoke(vault: Path, *args: str) -> Result:
    """One command, as typed; stdout and stderr kept apart."""
    result = CliRunner().invoke(
        cli, ["--vault", str(vault), *args], prog_name="hitl-vault", catch_exceptions=False
    )
    assert "Traceback" not in result.output + result.stderr
    return result


def add_rule(vault_path: Path, rule: str) -> None:
    """Put ``rule`` (YAML flow mapping) first under ``rules:`` in hitl-vault.yaml."""
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(rules.read_text().replace("rules:\n", f"rules:\n  - {rule}\n", 1))


def failed_payment(vault: Vault, amount: int = 1500, **params: object) -> Request:
    """A payment approved, started and failed, as the daemon records one."""
    req = vault.submit("payment", {"amount": amount, **params})
    if req.status is Status.PENDING:
        vault.approve(req.id, by="alice")
    assert vault.engine.start_execution(req.id, by="executor") is not None
    vault.engine.finish_execution(req.id, ok=False, error="bank said no")
    return vault.get(req.id)


# --- cancel ----------------------------------------------------------------------------


def test_an_approved_request_cancelled_before_the_daemon_claims_it_never_runs(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """Approved and queued by the daemon, then cancelled: it never runs and goes to Rejected/."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500})
    vault.approve(req.id, by="alice")  # the daemon hears it and queues the action ...
    daemon.followed.act(clock.now)  # ... on its own thread, at the start of its next step
    assert daemon.actions.waiting
    cancelled = vault.cancel(req.id, by="bob")
    assert cancelled.status is Status.CANCELLED
    assert cancelled.decided_by == "alice"  # the approval's; the history says who withdrew it
    assert cancelled.history[-1].by == "bob"
    daemon.run_once(clock.now)
    daemon.run_once(clock.advance(TEMPLATE_QUIET + timedelta(seconds=1)))
    daemon.actions.wait()
    daemon.run_once(clock.now)
    assert ran == []
    assert helper.shows(req.id, Status.CANCELLED, "Rejected", vault=vault)
    assert "approved → cancelled · by bob" in helper.note(req.id)
    assert helper.attention(daemon, clock).count(req.id) == 0
    assert vault.verify() == []


def test_an_approval_cancelled_while_no_daemon_runs_never_runs_when_one_starts(
    vault_path: Path, helper: VaultHelper, clock: Clock, ran: list[str]
) -> None:
    """approve and cancel from the CLI with no daemon; a daemon started afterwards runs nothing."""
    with Vault(vault_path) as v:
        rid = v.submit("payment", {"amount": 1500}).id
    assert invoke(vault_path, "approve", rid, "--by", "alice").exit_code == 0
    result = invoke(vault_path, "cancel", rid, "--by", "alice")
    assert (result.exit_code, result.stdout) == (0, f"{rid} cancelled\n")
    assert helper.shows(rid, Status.CANCELLED, "Rejected")
    with Vault(vault_path, clock=clock) as vault:

        @vault.action("payment")
        def pay(request: Request) -> str:
            ran.append(request.id)
            return "paid"

        with Daemon(vault.engine, clock=clock) as daemon:
            daemon.run_once(clock.now)
            daemon.actions.wait()
            daemon.run_once(clock.now)
    assert ran == []


def test_cancel_of_an_action_that_started_or_ended_exits_1_saying_why(
    vault_path: Path, vault: Vault
) -> None:
    """Executing or executed: cancel exits 1, says the action has started, and changes nothing."""
    executing = vault.submit("payment", {"amount": 1500})
    vault.approve(executing.id, by="alice")
    vault.engine.start_execution(executing.id, by="executor")
    executed = vault.submit("payment", {"amount": 20})  # allowed by the rules
    vault.engine.start_execution(executed.id, by="executor")
    vault.engine.finish_execution(executed.id, ok=True, result="paid")
    for rid, status in ((executing.id, "executing"), (executed.id, "executed")):
        result = invoke(vault_path, "cancel", rid)
        assert result.exit_code == 1
        assert f"is {status}, so it cannot become cancelled" in result.stderr
        assert "its action has started already" in result.stderr
        assert vault.get(rid).status is Status(status)
    with pytest.raises(IllegalTransitionError, match="has started already"):
        vault.cancel(executing.id)


def test_a_requester_about_to_carry_out_a_cancelled_approval_is_told_it_was_cancelled(
    vault: Vault,
) -> None:
    """approval(): seen approved, cancelled before it started: Rejected names who withdrew it."""
    req = vault.submit("payment", {"amount": 1500})
    seen = vault.approve(req.id, by="alice")
    vault.cancel(req.id, by="bob")
    with (
        pytest.raises(Rejected, match="cancelled by bob before it started"),
        carrying_out(vault.engine, seen),
    ):
        pytest.fail("a cancelled approval must not be carried out")
    assert vault.get(req.id).status is Status.CANCELLED


# --- retry -----------------------------------------------------------------------------


def test_retry_of_a_failed_request_runs_the_params_that_ran_and_links_both_notes(
    vault_path: Path, vault: Vault, helper: VaultHelper
) -> None:
    """retry: same action, params that ran, summary, context and requester; linked both ways."""
    req = vault.submit(
        "payment", {"amount": 1500}, summary="Pay rent", requested_by="bot", context="Due today"
    )
    vault.approve(req.id, by="alice", params={"amount": 1400})  # edited as it was approved
    vault.engine.start_execution(req.id, by="executor")
    vault.engine.finish_execution(req.id, ok=False, error="bank said no")
    result = invoke(vault_path, "retry", req.id, "--by", "carol", "--json")
    assert result.exit_code == 0, result.stderr
    new = json.loads(result.stdout)
    assert new["status"] == "pending"  # 1400 still asks, by the rules as they are now
    assert (new["action"], new["summary"]) == ("payment", "Pay rent")
    assert new["params"] == {"amount": 1400}
    assert (new["requested_by"], new["context"], new["retry_of"]) == ("bot", "Due today", req.id)
    old = json.loads(invoke(vault_path, "show", req.id, "--json").stdout)
    assert (old["retried_as"], old["retry_of"]) == (new["id"], None)
    assert f"retried as [[{new['id']}]] · by carol" in helper.note(req.id)
    assert f"retry of [[{req.id}]] · by carol" in helper.note(new["id"])
    assert f"retry of [[{req.id}]] · by carol" in "\n".join(new["history"])
    assert vault.verify() == []
    again = invoke(vault_path, "retry", req.id)
    assert again.exit_code == 1 and f"retried already as {new['id']}" in again.stderr


def test_the_daemon_hears_a_retry_as_news_of_both_requests(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """A retry made anywhere reaches the daemon's feed as entries of both requests (the new
    one's creation, the old one's ``retried as``): both notes are to show the journal, the
    old one with its link to the new."""
    old = failed_payment(clocked_vault)
    daemon.run_once(clock.now)
    daemon.run_once(clock.advance(TEMPLATE_QUIET + timedelta(seconds=1)))
    daemon.actions.wait()
    daemon.run_once(clock.now)
    assert not daemon.quiet.waiting
    new = clocked_vault.retry(old.id, by="carol")
    daemon.followed.act(clock.now)
    assert {old.id, new.id} <= daemon.quiet.waiting


def test_retry_of_a_timed_out_request_is_judged_by_the_rules_now(
    vault_path: Path, clock: Clock
) -> None:
    """A timed-out request retried: pending again; a block rule added since rejects it at once."""
    with Vault(vault_path, clock=clock) as vault:
        slow = vault.submit("payment", {"amount": 1500}, timeout="1h")
        blocked = vault.submit("payment", {"amount": 900_000}, timeout="1h")
        clock.advance(timedelta(hours=2))
        for rid in (slow.id, blocked.id):
            assert vault.engine.refresh(rid).status is Status.TIMED_OUT
    add_rule(vault_path, '{name: huge, action: payment, params: {amount: "> 100000"}, '
             "decision: block, reason: Too large}")  # fmt: skip
    with Vault(vault_path, clock=clock) as vault:
        again = vault.retry(slow.id, by="carol")
        assert again.status is Status.PENDING and again.retry_of == slow.id
        refused = vault.retry(blocked.id)
        assert refused.status is Status.REJECTED and refused.reason == "Too large"
        assert vault.get(blocked.id).retried_as == refused.id


def test_retry_of_anything_but_failed_or_timed_out_exits_1_saying_why(
    vault_path: Path, vault: Vault
) -> None:
    """Pending, approved, executed, rejected or cancelled: retry exits 1 and names the rule."""
    pending = vault.submit("payment", {"amount": 1500})
    result = invoke(vault_path, "retry", pending.id)
    assert result.exit_code == 1
    assert "is pending; only a failed or timed-out request can be retried" in result.stderr
    with pytest.raises(NotRetryableError, match="only a failed or timed-out"):
        vault.retry(vault.submit("payment", {"amount": 20}).id)  # approved by the rules
    assert len(vault.list()) == 2  # nothing was made


def test_a_retry_allowed_by_the_rules_is_approved_at_once(vault: Vault) -> None:
    """A small payment that failed, retried through the API, is approved by the rules again."""
    old = failed_payment(vault, amount=20)
    new = vault.retry(old.id)
    assert new.status is Status.APPROVED and new.params == {"amount": 20}


# --- several ids, and params edited as you approve ----------------------------------------


def test_approve_and_reject_decide_several_ids_each_on_its_own(
    vault_path: Path, vault: Vault
) -> None:
    """One line per id; an id that fails does not stop the others, and the exit code is 1."""
    a, b, c = (vault.submit("payment", {"amount": 1500}).id for _ in range(3))
    result = invoke(vault_path, "approve", a, "nope", b, "--by", "alice")
    assert result.exit_code == 1
    assert result.stdout == f"{a} approved\n{b} approved\n"
    assert "request nope: not found" in result.stderr
    result = invoke(vault_path, "reject", c, a, "--by", "bob", "--reason", "no")
    assert result.exit_code == 1 and result.stdout == f"{c} rejected\n"
    assert f"request {a}: is approved, so it cannot become rejected" in result.stderr
    d, e = (vault.submit("payment", {"amount": 1500}).id for _ in range(2))
    both = invoke(vault_path, "reject", d, e)
    assert (both.exit_code, both.stdout) == (0, f"{d} rejected\n{e} rejected\n")
    one = invoke(vault_path, "approve", "nope")  # one id: as before
    assert one.exit_code == 1 and one.stderr.startswith("Error: request nope: not found")
    edits = invoke(vault_path, "approve", a, b, "-p", "amount=1")
    assert edits.exit_code == 2 and "with one ID only" in edits.stderr


def test_approve_with_p_runs_the_edited_params_and_the_note_shows_them(
    vault_path: Path, vault: Vault, helper: VaultHelper
) -> None:
    """approve ID -p: approved with the edit, recorded like a note edit, written into the note."""
    rid = vault.submit("payment", {"amount": 1500, "recipient": "v@x.y"}).id
    result = invoke(vault_path, "approve", rid, "-p", "amount=1000", "--by", "alice")
    assert (result.exit_code, result.stdout) == (0, f"{rid} approved\n")
    done = vault.get(rid)
    assert done.params == {"amount": 1000, "recipient": "v@x.y"}
    assert "pending → approved · by alice · amount 1500 → 1000" in helper.note(rid)
    assert "  amount: 1000\n" in helper.note(rid)
    assert vault.verify() == []
    whole = vault.submit("payment", {"amount": 1500, "recipient": "v@x.y"}).id
    result = invoke(vault_path, "approve", whole, "--params-json", '{"amount": 700}')
    assert result.exit_code == 0 and vault.get(whole).params == {"amount": 700}


def test_approve_with_p_is_judged_like_an_edit_in_the_note(vault_path: Path, vault: Vault) -> None:
    """editable: false or a block rule on the edited params turn the approval into a rejection."""
    refund = vault.submit("refund", {"amount": 50}).id
    result = invoke(vault_path, "approve", refund, "-p", "amount=500", "--by", "alice")
    assert result.exit_code == 1 and result.stdout == f"{refund} rejected\n"
    assert "rule refunds does not allow edits (editable: false)" in result.stderr
    add_rule(vault_path, '{name: huge, action: payment, params: {amount: "> 100000"}, '
             "decision: block, reason: Too large}")  # fmt: skip
    vault.engine.reload_policy()
    big = vault.submit("payment", {"amount": 1500}).id
    result = invoke(vault_path, "approve", big, "-p", "amount=900000", "--by", "alice")
    assert result.exit_code == 1 and result.stdout == f"{big} rejected\n"
    assert "the edited params are blocked by rule huge: Too large" in result.stderr
    bad = invoke(vault_path, "approve", big, "-p", "amount")
    assert bad.exit_code == 2 and "-p: 'amount' is not key=value" in bad.stderr
    not_by_them = vault.submit("refund", {"amount": 50}).id
    result = invoke(vault_path, "approve", not_by_them, "-p", "amount=50", "--by", "mallory")
    assert result.exit_code == 1 and "mallory may not decide it" in result.stderr
    assert vault.get(not_by_them).status is Status.PENDING


# --- refusals stay visible ---------------------------------------------------------------


def _human_saves(daemon: Daemon, clock: Clock, path: Path, word: str, **extra: str) -> None:
    set_status(path, word, **extra)
    daemon.notice(path)
    daemon.run_once(clock.now)


def test_a_refused_decision_stays_under_needs_attention_until_the_note_is_changed(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, helper: VaultHelper
) -> None:
    """mallory's approval is set back, and stays listed with its reason until a human edits."""
    vault = clocked_vault
    req = vault.submit("refund", {"amount": 50})
    assert req.path is not None
    daemon.run_once(clock.now)
    _human_saves(daemon, clock, req.path, "approved", decided_by="mallory")
    assert "mallory may not decide it" in helper.attention(daemon, clock)
    daemon.run_once(clock.advance(TEMPLATE_QUIET + timedelta(seconds=1)))  # set back, quiet
    assert "status: pending" in req.path.read_text()
    for _ in range(3):  # later steps, and a rescan that reads every note again
        daemon.overflow()
        shown = helper.attention(daemon, clock)
        assert req.path.name in shown and "mallory may not decide it" in shown
        assert "set back to pending" in shown
    listed = [a for a in vault.engine.journal.attention() if a.request_id == req.id]
    assert len(listed) == 1 and "mallory" in listed[0].message
    text = req.path.read_text().replace("reason:", "reason: asked alice", 1)
    req.path.write_text(text)  # a human changes the note again: the flag goes
    daemon.notice(req.path)
    daemon.run_once(clock.now)
    assert req.path.name not in helper.attention(daemon, clock)


def test_an_illegal_status_stays_listed_until_the_request_moves_on(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, helper: VaultHelper
) -> None:
    """`status: executed` typed into a pending note stays listed; an approval clears it."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    daemon.run_once(clock.now)
    _human_saves(daemon, clock, req.path, "executed")
    daemon.run_once(clock.advance(TEMPLATE_QUIET + timedelta(seconds=1)))
    daemon.overflow()
    assert 'ignored status "executed"' in helper.attention(daemon, clock)
    vault.approve(req.id, by="alice")
    helper.settled(daemon, clock, req.id)
    assert req.id not in helper.attention(daemon, clock)


# --- a Python rule that raises -------------------------------------------------------------


def _friday_bug(proposal: Proposal) -> None:
    if proposal.params.get("weekday") == "friday":
        raise ValueError("calendar unavailable")


def test_a_raising_rule_at_submit_creates_nothing(vault: Vault) -> None:
    """submit fails with the rule's error, and no request or note is made."""
    vault.rule(_friday_bug)
    with pytest.raises(RulesError, match="_friday_bug: raised ValueError: calendar unavailable"):
        vault.submit("payment", {"amount": 20, "weekday": "friday"})
    assert vault.list() == []
    assert not list((vault.root / "Pending_Approval").glob("2*.md"))


def test_a_raising_rule_leaves_a_note_decision_pending_with_the_error_in_its_history(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """An approval a raising rule cannot judge: pending, listed, and in the note's history."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500, "weekday": "monday"})
    assert req.path is not None
    vault.rule(_friday_bug)
    daemon.run_once(clock.now)
    text = req.path.read_text().replace("weekday: monday", "weekday: friday")
    req.path.write_text(text.replace("status: pending", "status: approved"))
    daemon.notice(req.path)
    daemon.run_once(clock.now)
    assert vault.engine.journal.status_of(req.id) is Status.PENDING
    assert "calendar unavailable" in helper.attention(daemon, clock)
    daemon.run_once(clock.advance(TEMPLATE_QUIET + timedelta(seconds=1)))
    note = req.path.read_text()
    assert "status: pending" in note
    assert "approved not recorded, the request stays pending" in note  # its history line
    assert "calendar unavailable" in helper.attention(daemon, clock)
    assert ran == []


def test_a_raising_rule_refuses_an_api_decision_and_an_edit_and_says_so(
    vault_path: Path, vault: Vault, helper: VaultHelper
) -> None:
    """Through the API: the error is raised, the request stays pending, history and list say it."""
    req = vault.submit("payment", {"amount": 1500, "weekday": "friday"})
    vault.rule(_friday_bug)
    with pytest.raises(RulesError, match="calendar unavailable"):
        vault.approve(req.id, by="alice")
    after = vault.get(req.id)
    assert after.status is Status.PENDING
    assert "approval not recorded" in after.history[-1].details[0]
    assert "approval not recorded" in helper.note(req.id)
    flagged = [a for a in vault.engine.journal.attention() if a.request_id == req.id]
    assert len(flagged) == 1 and "calendar unavailable" in flagged[0].message
    vault.engine.functions.clear()  # the rule fixed: the approval stands, the flag goes
    assert vault.approve(req.id, by="alice").status is Status.APPROVED
    assert [a for a in vault.engine.journal.attention() if a.request_id == req.id] == []


def test_a_raising_rule_before_running_keeps_it_approved_and_says_so_once(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """judge_run raising: not run, listed, one history line however often it is tried again."""
    vault = clocked_vault
    req = vault.submit("payment", {"amount": 1500, "weekday": "friday"})
    vault.approve(req.id, by="alice")
    vault.rule(_friday_bug)
    daemon.run_once(clock.now)
    daemon.run_once(clock.advance(timedelta(seconds=31)))  # tried again: still raising
    daemon.run_once(clock.advance(TEMPLATE_QUIET + timedelta(seconds=1)))
    assert ran == [] and vault.engine.journal.status_of(req.id) is Status.APPROVED
    assert "calendar unavailable" in helper.attention(daemon, clock)
    lines = [line for line in helper.note(req.id).splitlines() if "not run yet" in line]
    assert len(lines) == 1 and "kept approved" in lines[0]
