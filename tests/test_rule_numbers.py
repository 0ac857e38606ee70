"""Numbers in rules: what a number condition (``"< 500"``, a plain ``1500``) does with a
real number, a negative one, and text that reads as a number, for allow rules and for the
stricter ask and block rules."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hitl_vault import Vault
from hitl_vault.policy.rules import Decision, Policy, Proposal
from hitl_vault.policy.rulesfile import parse_policy

OPERATORS = ["<", "<=", ">", ">=", "==", "!="]
REAL = {
    "<": float.__lt__,
    "<=": float.__le__,
    ">": float.__gt__,
    ">=": float.__ge__,
    "==": float.__eq__,
    "!=": float.__ne__,
}

# Text a person or a program might read as a number.
NUMERIC_TEXT = st.one_of(
    st.integers(-(10**6), 10**6).map(str),
    st.floats(-1e6, 1e6, allow_nan=False).map(repr),
    st.floats(-1e6, 1e6, allow_nan=False).map(lambda f: f" {f:.3e} "),
)
NUMBERS = st.one_of(st.integers(-(10**9), 10**9), st.floats(-1e9, 1e9, allow_nan=False))


def policy(condition: str, decision: str) -> Policy:
    return parse_policy(
        textwrap.dedent(
            f"""\
            rules:
              - name: x
                params: {{amount: {condition}}}
                decision: {decision}
            """
        )
    )


def matches(p: Policy, amount: Any) -> bool:
    return [m.rule for m in p.evaluate(Proposal("payment", {"amount": amount})).matches] == ["x"]


def test_text_that_reads_as_a_number_never_lets_an_allow_rule_match() -> None:
    """`amount: " 4.99e2 "` (text) does not pass `< 500 → allow`; the default (ask) applies."""
    p = policy('"< 500"', "allow")
    for text in (" 4.99e2 ", "499", "4.99e2", "-1", "0"):
        assert not matches(p, text), text
        assert p.evaluate(Proposal("payment", {"amount": text})).decision is Decision.ASK
    assert matches(p, 499) and matches(p, 4.99e2)
    assert not matches(policy("0", "allow"), "0")  # a plain number equals numbers only, too


def test_text_that_reads_as_a_number_still_makes_ask_and_block_rules_match() -> None:
    """Text never escapes a stricter rule: `"5000"` is held by `>= 500 → block` and `→ ask`."""
    for decision in ("ask", "block"):
        p = policy('">= 500"', decision)
        assert matches(p, "5000") and matches(p, " 5e3 ") and matches(p, 5000)
        assert not matches(p, "499")
        assert matches(policy("1500", decision), "1500")
    both = parse_policy(
        "rules:\n"
        "  - {name: big, action: payment, params: {amount: '>= 500'}, decision: block}\n"
        "  - {name: pay, action: payment, decision: allow}\n"
    )
    assert both.evaluate(Proposal("payment", {"amount": "5000"})).decision is Decision.BLOCK


@given(op=st.sampled_from(OPERATORS), bound=st.integers(-1000, 1000), value=NUMBERS)
def test_real_numbers_compare_as_numbers_in_every_rule(op: str, bound: int, value: float) -> None:
    """An int or a float, negative ones too, matches exactly when the comparison holds."""
    expected = REAL[op](float(value), float(bound))
    for decision in ("allow", "ask", "block"):
        assert matches(policy(f'"{op} {bound}"', decision), value) is expected


@given(op=st.sampled_from(OPERATORS), bound=st.integers(-1000, 1000), text=NUMERIC_TEXT)
def test_numeric_text_only_ever_makes_the_decision_stricter(op: str, bound: int, text: str) -> None:
    """Text never matches an allow rule's number; an ask or block rule compares the number
    it reads as."""
    assert not matches(policy(f'"{op} {bound}"', "allow"), text)
    expected = REAL[op](float(text), float(bound))
    assert matches(policy(f'"{op} {bound}"', "block"), text) is expected


WORDS = st.text(st.characters(exclude_categories=["Nd"]), max_size=5)  # no digit: no number


@given(value=st.one_of(st.booleans(), st.none(), WORDS, st.lists(st.integers())))
def test_bools_lists_null_and_plain_text_match_no_number_condition(value: Any) -> None:
    """A bool is no number, nor is null, a list or text without a digit."""
    for decision in ("allow", "block"):
        for op in OPERATORS:
            assert not matches(policy(f'"{op} 1"', decision), value)


def test_negative_amounts_are_numbers_and_the_template_asks_for_them(vault_path: Path) -> None:
    """-100 is below 500 for `< 500`; the template's negative-amounts rule makes it ask."""
    assert matches(policy('"< 500"', "allow"), -100)
    with Vault(vault_path) as vault:
        for amount in (-100, -0.01, -(10**9)):
            ruling = vault.evaluate("payment", {"amount": amount})
            assert ruling.decision is Decision.ASK, amount
            assert ruling.rule == "negative-amounts"
        assert vault.evaluate("payment", {"amount": 0}).decision is Decision.ALLOW
        assert vault.evaluate("payment", {"amount": "12"}).rule == "defaults"
        assert vault.evaluate("payment", {"amount": "1200"}).rule == "large-payments"


@pytest.mark.parametrize("text", [" 4.99e2 ", "499", "-5"])
def test_the_cli_asks_for_a_text_amount_that_a_rule_would_have_allowed(
    vault_path: Path, text: str
) -> None:
    """`submit payment --params-json '{"amount": " 4.99e2 "}'` stays pending."""
    from click.testing import CliRunner

    from hitl_vault.cli.main import cli

    params = json.dumps({"amount": text})
    result = CliRunner().invoke(
        cli, ["--vault", str(vault_path), "submit", "payment", "--params-json", params, "--json"]
    )
    assert result.exit_code == 0, result.output
    assert '"status": "pending"' in result.stdout


MIN_RISK_RULES = """\
defaults: {min_risk: medium}
rules:
  - name: small-payments
    action: payment
    params: {amount: "< 500"}
    decision: ask
    risk: low
  - name: large-payments
    action: payment
    params: {amount: ">= 500"}
    decision: ask
    risk: high
"""


def test_min_risk_never_allows_an_ask_that_matched_only_through_numeric_text() -> None:
    """Text held by a low-risk ask rule stays an ask under min_risk; a real number is allowed."""
    p = parse_policy(MIN_RISK_RULES)
    for text in (" 4.99e2 ", "499", "-5"):
        ruling = p.evaluate(Proposal("payment", {"amount": text}))
        assert ruling.rule == "small-payments" and ruling.decision is Decision.ASK
        assert p.applied(ruling) == (Decision.ASK, ""), text
    ruling = p.evaluate(Proposal("payment", {"amount": 499}))
    assert p.applied(ruling)[0] is Decision.ALLOW
    unmatched = p.evaluate(Proposal("payment", {"amount": "no number"}))
    assert unmatched.rule == "defaults" and p.applied(unmatched)[0] is Decision.ASK


def test_a_regex_matches_numeric_text_as_text_in_every_rule() -> None:
    """A `re:` condition matches text as text: an allow rule's too, and min_risk allows a
    low ask it made."""
    p = parse_policy(
        "defaults: {min_risk: medium}\n"
        "rules:\n"
        "  - {name: ref, action: payment, params: {ref: 're:[0-9]+'}, decision: ask, risk: low}\n"
    )
    ruling = p.evaluate(Proposal("payment", {"ref": "499"}))
    assert ruling.rule == "ref" and p.applied(ruling)[0] is Decision.ALLOW
    allow = parse_policy("rules:\n  - {name: x, params: {amount: 're:[0-9]+'}, decision: allow}\n")
    assert matches(allow, "499")  # an allow rule's re: condition matches text as text


@pytest.mark.parametrize("text", [" 4.99e2 ", "499"])
def test_the_cli_keeps_a_text_amount_pending_under_min_risk(tmp_path: Path, text: str) -> None:
    """`submit payment --params-json '{"amount": " 4.99e2 "}'` is not approved by min_risk."""
    from click.testing import CliRunner

    from hitl_vault.cli.main import cli

    root = tmp_path / "vault"
    runner = CliRunner()
    assert runner.invoke(cli, ["init", str(root)]).exit_code == 0
    (root / "hitl-vault.yaml").write_text(MIN_RISK_RULES)
    submit = ["--vault", str(root), "submit", "payment", "--json", "--params-json"]
    result = runner.invoke(cli, [*submit, json.dumps({"amount": text})])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["status"] == "pending"
    result = runner.invoke(cli, [*submit, json.dumps({"amount": 499})])
    assert json.loads(result.stdout)["status"] == "approved", result.output
