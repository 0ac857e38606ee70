"""The one pure answer to "may this decision stand?" (policy.verdict): no vault, no disk."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from hitl_vault.model import Request, Risk, Status
from hitl_vault.policy.rules import Decision, Proposal, RuleMatch
from hitl_vault.policy.rulesfile import parse_policy
from hitl_vault.policy.verdict import Refusal, judge, judge_edit, judge_run

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
RULES = """\
rules:
  - name: big-payments
    action: payment
    params: {amount: ">= 1000"}
    decision: ask
    approvers: [alice, bob]
  - name: fixed-wires
    action: wire
    decision: ask
    editable: false
  - name: no-evil
    action: [payment, wire]
    params: {to: "re:.*@evil\\\\.example"}
    decision: block
    reason: known fraud address
"""
POLICY = parse_policy(RULES, "hitl-vault.yaml")


def request(action: str = "payment", **params: Any) -> Request:
    return Request(
        id="20261130T120000Z-payment-abcdef",
        status=Status.PENDING,
        action=action,
        summary="",
        risk=Risk.MEDIUM,
        rule="big-payments",
        requested_by="agent",
        created=NOW - timedelta(minutes=5),
        expires=NOW + timedelta(hours=1),
        params=params or {"amount": 1500, "to": "v@ok.example"},
    )


def decide(req: Request, to: Status, by: str = "alice", **kw: Any) -> Any:
    kw.setdefault("params", None)
    kw.setdefault("created", dict(req.params))
    kw.setdefault("pinned", {})
    return judge(POLICY, req, to, by=by, reason=kw.pop("reason", ""), now=NOW, **kw)


def test_an_approval_by_an_approver_stands_and_runs_the_params_asked_for() -> None:
    """The ordinary case: the approval is recorded as is, with the params it will run."""
    req = request()
    v = decide(req, Status.APPROVED)
    assert (v.to, v.refused, v.reason, v.details) == (Status.APPROVED, None, "", ())
    assert v.params == req.params and v.fields["params"] == req.params
    assert v.fields["decided_by"] == "alice" and v.fields["decided_at"] == NOW


def test_a_decision_at_or_after_expiry_times_the_request_out() -> None:
    """A yes that arrives too late never runs anything: the request times out instead."""
    req = request()
    late = judge(
        POLICY, req, Status.APPROVED, by="alice", reason="", params=None,
        now=req.expires or NOW, created=dict(req.params), pinned={},
    )  # fmt: skip
    assert late.to is Status.TIMED_OUT and late.params is None
    assert late.details == ("approved seen after it expired at 2026-11-30T13:00:00Z",)


@pytest.mark.parametrize("to", [Status.APPROVED, Status.REJECTED])
def test_someone_not_among_the_approvers_is_refused_either_way(to: Status) -> None:
    """Only the rule's approvers decide; anyone else's decision does not count at all."""
    v = decide(request(), to, by="mallory")
    assert v.refused == Refusal("mallory", frozenset({"alice", "bob"}), "big-payments")


def test_approvers_a_python_rule_pinned_at_submit_still_hold() -> None:
    """The daemon never runs the submitter's code, yet enforces the approvers it named."""
    small = request(amount=10, to="v@ok.example")  # no rule of the file names approvers
    pinned = {"approvers": ["carol"], "rules": ["my_rule"]}
    assert decide(small, Status.APPROVED, by="alice", pinned=pinned).refused == Refusal(
        "alice", frozenset({"carol"}), "my_rule"
    )
    assert decide(small, Status.APPROVED, by="carol", pinned=pinned).to is Status.APPROVED


def test_edited_params_are_judged_by_every_version_so_an_edit_cannot_shed_a_rule() -> None:
    """Lowering the amount below the approvers' threshold does not let anyone approve it."""
    req = request()
    v = decide(req, Status.APPROVED, by="mallory", params={"amount": 5, "to": "v@ok.example"})
    assert v.refused is not None and v.refused.rule == "big-payments"


def test_an_edit_that_a_block_rule_covers_turns_the_approval_into_a_rejection() -> None:
    """The kill switch: the approved params would pay a blocked address, so nothing runs."""
    req = request()
    v = decide(req, Status.APPROVED, params={"amount": 1500, "to": "x@evil.example"})
    assert v.to is Status.REJECTED and v.params is None and "params" not in v.fields
    assert v.reason == "the edited params are blocked by rule no-evil: known fraud address"
    assert v.details == ("to v@ok.example → x@evil.example",)


def test_a_rejection_stands_whatever_the_rules_now_say() -> None:
    """Saying no is always allowed: a block rule or an edit never changes a rejection."""
    req = request(amount=1500, to="x@evil.example")
    v = decide(req, Status.REJECTED, reason="no thanks")
    assert (v.to, v.reason, v.params) == (Status.REJECTED, "no thanks", None)


def test_editable_false_refuses_an_approval_of_edited_params() -> None:
    """A rule that fixes the params rejects an approval of anything else, saying why."""
    req = request("wire", amount=100, to="v@ok.example")
    v = decide(req, Status.APPROVED, params={"amount": 900, "to": "v@ok.example"})
    assert v.to is Status.REJECTED
    assert v.reason == (
        "params were edited (amount 100 → 900) but rule fixed-wires does not allow edits "
        "(editable: false)"
    )


def test_an_edit_is_measured_against_the_params_as_asked_for() -> None:
    """Putting edited params back as they were asked for is no edit: nothing refuses it."""
    asked = {"amount": 100, "to": "v@ok.example"}
    recorded = request("wire", amount=900, to="v@ok.example")  # an edit recorded earlier
    assert judge_edit(POLICY, recorded, asked, created=asked, pinned={}) is None
    assert (
        judge_edit(POLICY, recorded, {"amount": 5, "to": "v@ok.example"}, created=asked, pinned={})
        == "fixed-wires"
    )
    fixed_by_code = {"fixed": ["my_rule"], "rules": ["my_rule"]}
    edited = {"amount": 7, "to": "v@ok.example"}
    assert judge_edit(POLICY, request(), edited, created={}, pinned=fixed_by_code) == "my_rule"


def test_a_block_rule_in_force_when_it_is_about_to_run_stops_an_approved_request() -> None:
    """Rules changed after the approval still stop a run they now block, with the reason."""
    req = request(amount=50, to="x@evil.example")
    assert judge_run(POLICY, req, req.params) == (
        "blocked by rule no-evil before it ran: known fraud address"
    )
    assert judge_run(POLICY, req, {"amount": 50, "to": "v@ok.example"}) is None


def test_python_rules_take_part_in_every_judgement() -> None:
    """A rule registered in Python counts like one of the file, e.g. as a kill switch."""

    def deny_all(p: Proposal) -> RuleMatch:
        return RuleMatch(Decision.BLOCK, rule="freeze", reason="payments frozen")

    req = request(amount=5, to="v@ok.example")
    v = judge(
        POLICY, req, Status.APPROVED, by="bob", reason="", params=None, now=NOW,
        created=dict(req.params), pinned={}, functions=[deny_all],
    )  # fmt: skip
    assert (v.to, v.reason) == (
        Status.REJECTED,
        "it is now blocked by rule freeze: payments frozen",
    )
    assert judge_run(POLICY, req, req.params, [deny_all]) == (
        "blocked by rule freeze before it ran: payments frozen"
    )
