"""hitl-vault.yaml: parsing with line-numbered errors, and matching proposals."""

from __future__ import annotations

import os
import textwrap
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from hitl_vault.errors import RulesError
from hitl_vault.model import Risk
from hitl_vault.policy.rules import (
    ActionSpec,
    Decision,
    Defaults,
    Policy,
    Proposal,
    RuleMatch,
    Ruling,
)
from hitl_vault.policy.rulesfile import load_policy, parse_policy

from .helpers import returns_within

# A full rules file: defaults, five rules of every kind of match, one action.
FULL_RULES = """\
defaults:
  decision: ask          # when no rule matches: ask (fail closed)
  timeout: 24h           # how long a request may stay pending
  quiet: 2s              # how long a file must be untouched before the daemon rewrites or moves it

rules:
  - name: small-payments
    action: [payment, transfer, withdrawal]
    params: {amount: "< 500"}
    decision: allow
  - name: large-payments
    action: [payment, transfer, withdrawal]
    params: {amount: ">= 500"}
    decision: ask
    risk: high
    timeout: 1h
  - name: deletions
    action: "re:.*delete.*"
    decision: ask
    risk: critical
  - name: production
    params: {environment: production}
    decision: ask
    risk: high
  - name: no-shell
    action: shell
    decision: block
    risk: critical
    reason: Shell commands are blocked by policy

actions:
  payment:
    run: [python3, scripts/pay.py]   # argv, never a shell string
    timeout: 60s
    idempotent: false
"""


@pytest.fixture
def spec() -> Policy:
    return parse_policy(FULL_RULES)


def parse(text: str) -> Policy:
    return parse_policy(textwrap.dedent(text))


def error(text: str) -> RulesError:
    with pytest.raises(RulesError) as info:
        parse_policy(textwrap.dedent(text))
    return info.value


def load_error(path: Path, where: str | None = None) -> RulesError:
    with pytest.raises(RulesError) as info:
        load_policy(path, where)
    return info.value


def decide(policy: Policy, action: str, functions: Any = (), **params: Any) -> Ruling:
    return policy.evaluate(Proposal(action, params), functions)


def one_rule(condition: str, decision: str = "allow") -> Policy:
    """A policy whose only rule is `x` with params {n: <condition>}."""
    return parse(f"rules:\n  - name: x\n    params: {{n: {condition}}}\n    decision: {decision}\n")


def matched(policy: Policy, action: str = "act", **params: Any) -> list[str]:
    return [m.rule for m in decide(policy, action, **params).matches]


# --- a full rules file ------------------------------------------------------------


def test_spec_example_parses_to_exact_policy(spec: Policy) -> None:
    """A full rules file yields its defaults, five rules at their lines, and one action."""
    assert spec.defaults == Defaults(Decision.ASK, timedelta(hours=24), timedelta(seconds=2))
    assert [(r.name, r.line) for r in spec.rules] == [
        ("small-payments", 7),
        ("large-payments", 11),
        ("deletions", 17),
        ("production", 21),
        ("no-shell", 25),
    ]
    assert dict(spec.actions) == {
        "payment": ActionSpec(
            "payment", ("python3", "scripts/pay.py"), None, timedelta(seconds=60), False
        )
    }
    assert spec.source == "hitl-vault.yaml"
    large = spec.rules[1]
    assert (large.risk, large.timeout, large.editable, large.approvers, large.reason) == (
        Risk.HIGH,
        timedelta(hours=1),
        True,
        None,
        "",
    )


def test_actions_mapping_is_read_only(spec: Policy) -> None:
    """Policy.actions cannot be changed by a caller."""
    with pytest.raises(TypeError):
        spec.actions["other"] = ActionSpec("other", python="m:f")  # type: ignore[index]


def test_action_by_list_matches_each_name(spec: Policy) -> None:
    """An action list matches every name in it and nothing else."""
    for action in ("payment", "transfer", "withdrawal"):
        assert decide(spec, action, amount=100).rule == "small-payments"
    assert decide(spec, "refund", amount=100).rule == "defaults"


def test_action_by_name(spec: Policy) -> None:
    """A single action name matches that action: shell is blocked with its reason and risk."""
    r = decide(spec, "shell")
    assert (r.decision, r.rule, r.risk, r.reason) == (
        Decision.BLOCK,
        "no-shell",
        Risk.CRITICAL,
        "Shell commands are blocked by policy",
    )
    assert r.explanation == "shell is blocked: Shell commands are blocked by policy."


def test_action_by_regex_is_a_full_match(spec: Policy) -> None:
    """re:.*delete.* matches any action containing delete; re:pay must match the whole name."""
    assert decide(spec, "file-delete").rule == "deletions"
    assert decide(spec, "delete").rule == "deletions"
    assert decide(spec, "deletion").rule == "defaults"
    policy = parse("rules:\n  - {name: p, action: 're:pay', decision: allow}\n")
    assert decide(policy, "pay").decision is Decision.ALLOW
    assert decide(policy, "payment").rule == "defaults"


def test_action_list_may_mix_names_and_patterns() -> None:
    """List items may be names or re: patterns."""
    policy = parse("rules:\n  - {name: p, action: [shell, 're:sh-.*'], decision: block}\n")
    assert [decide(policy, a).rule for a in ("shell", "sh-rm", "bash")] == ["p", "p", "defaults"]


def test_spec_boundary_between_small_and_large_payments(spec: Policy) -> None:
    """499.99 is a small payment, 500 exactly is a large one that asks with a 1h timeout."""
    small = decide(spec, "payment", amount=499.99)
    large = decide(spec, "payment", amount=500)
    assert (small.decision, small.rule, small.timeout) == (Decision.ALLOW, "small-payments", None)
    assert (large.decision, large.rule, large.risk, large.timeout) == (
        Decision.ASK,
        "large-payments",
        Risk.HIGH,
        timedelta(hours=1),
    )
    assert large.explanation == "payment with amount >= 500 needs approval."


# --- params conditions -----------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "below", "at", "above"),
    [
        ('"< 10"', True, False, False),
        ('"<= 10"', True, True, False),
        ('"> 10"', False, False, True),
        ('">= 10"', False, True, True),
        ('"== 10"', False, True, False),
        ('"!= 10"', True, False, True),
    ],
)
def test_comparison_operators_at_the_boundary(
    condition: str, below: bool, at: bool, above: bool
) -> None:
    """Each operator compares numbers correctly at 9, 10 and 11."""
    policy = one_rule(condition)
    got = [bool(matched(policy, n=n)) for n in (9, 10, 11)]
    assert got == [below, at, above]


def test_comparison_reads_numeric_strings_and_floats() -> None:
    """A float compares as a number, a numeric string only in an ask or block rule (an allow
    rule never matches text); '<=10' needs no space."""
    policy = one_rule('"<=10"', "ask")
    assert matched(policy, n="10") == ["x"]
    assert matched(policy, n=" 9.5 ") == ["x"]
    assert matched(policy, n=10.0) == ["x"]
    assert matched(policy, n="10.5") == []
    assert matched(policy, n=10.000001) == []
    assert matched(one_rule('"<=10"'), n="10") == []
    assert matched(one_rule('"<=10"'), n=10.0) == ["x"]


def test_comparison_does_not_hold_for_non_numbers() -> None:
    """Text, bools, lists and null never satisfy a comparison, not even !=."""
    policy = one_rule('"!= 10"')
    for value in ("lots", True, False, [1], None, "", "1,000"):
        assert matched(policy, n=value) == [], value


def test_numeric_string_equals_number_both_ways() -> None:
    """A plain numeric value equals the same number given as a string (in a rule that does
    not allow), and vice versa."""
    assert matched(one_rule("1500", "block"), n="1500") == ["x"]
    assert matched(one_rule("1500"), n="1500") == []
    assert matched(one_rule("1500"), n=1500.0) == ["x"]
    assert matched(one_rule('"1500"'), n=1500) == ["x"]
    assert matched(one_rule("1500"), n=1501) == []
    assert matched(one_rule("1500"), n="1500 dollars") == []


def test_bool_never_equals_a_number() -> None:
    """true does not equal 1 and 1 does not equal true; true equals true."""
    assert matched(one_rule("1"), n=True) == []
    assert matched(one_rule("0"), n=False) == []
    assert matched(one_rule("true"), n=1) == []
    assert matched(one_rule("true"), n=True) == ["x"]
    assert matched(one_rule("false"), n=False) == ["x"]


def test_plain_text_equality_is_exact() -> None:
    """A plain text value equals only the same text (case matters)."""
    policy = one_rule("production")
    assert matched(policy, n="production") == ["x"]
    assert matched(policy, n="Production") == []
    assert matched(policy, n="production ") == []


def test_regex_on_param_is_a_full_match_on_text() -> None:
    """re: full-matches the value as text; bools read as true/false, numbers as digits."""
    policy = one_rule('"re:.*x"')
    assert matched(policy, n="box") == ["x"]
    assert matched(policy, n="boxes") == []
    assert matched(one_rule('"re:true|yes"'), n=True) == ["x"]
    assert matched(one_rule('"re:true|yes"'), n=False) == []
    assert matched(one_rule('"re:4\\\\d"'), n=42) == ["x"]
    assert matched(one_rule('"re:.*"'), n={"a": 1}) == []


def test_list_of_values_means_any_of() -> None:
    """A list matches when any item does, and items may be comparisons or patterns."""
    policy = one_rule("[eu, us]")
    assert [bool(matched(policy, n=v)) for v in ("eu", "us", "asia")] == [True, True, False]
    mixed = one_rule('["< 10", "> 100", "re:big.*"]')
    got = [bool(matched(mixed, n=v)) for v in (5, 200, 50, "bigger", "small")]
    assert got == [True, True, False, True, False]


def test_missing_param_never_matches() -> None:
    """A param the proposal lacks satisfies no condition, not even != or re:.*."""
    assert matched(one_rule('"!= 10"'), other=1) == []
    assert matched(one_rule('"re:.*"'), other=1) == []
    assert matched(one_rule("null"), other=1) == []
    assert matched(one_rule("null"), n=None) == ["x"]


def test_all_params_must_hold() -> None:
    """Every condition under params must hold; the explanation joins them with 'and'."""
    policy = parse(
        """\
        rules:
          - name: eu-big
            params: {region: [eu, us], amount: ">= 500", name: "re:.*x"}
            decision: allow
        """
    )
    assert matched(policy, region="eu", amount=400, name="box") == []
    assert matched(policy, region="eu", amount=600) == []
    r = decide(policy, "deploy", region="eu", amount=600, name="box")
    assert r.explanation == (
        "deploy with region in [eu, us] and amount >= 500 and name matching re:.*x is allowed."
    )


def test_rule_without_action_matches_every_action(spec: Policy) -> None:
    """The production rule has no action, so it applies to any action with that param."""
    for action in ("deploy", "x", "payment"):
        r = decide(spec, action, environment="production")
        assert (r.rule, r.risk, r.decision) == ("production", Risk.HIGH, Decision.ASK)
    assert decide(spec, "deploy", environment="production").explanation == (
        "deploy with environment = production needs approval."
    )


# --- combining matches -------------------------------------------------------------


def test_most_restrictive_decision_wins(spec: Policy) -> None:
    """block beats ask, ask beats allow; rule and reason come from the first winning rule."""
    blocked = decide(spec, "shell", environment="production")
    assert (blocked.decision, blocked.rule) == (Decision.BLOCK, "no-shell")
    assert [m.rule for m in blocked.matches] == ["production", "no-shell"]
    asked = decide(spec, "payment", amount=10, environment="production")
    assert (asked.decision, asked.rule, asked.reason) == (Decision.ASK, "production", "")
    assert [m.decision for m in asked.matches] == [Decision.ALLOW, Decision.ASK]
    order = parse(
        """\
        rules:
          - {name: stop, action: shell, decision: block}
          - {name: check, action: [shell, pay], decision: ask}
          - {name: go, decision: allow}
        """
    )
    assert [(decide(order, a).decision, decide(order, a).rule) for a in ("shell", "pay", "x")] == [
        (Decision.BLOCK, "stop"),
        (Decision.ASK, "check"),
        (Decision.ALLOW, "go"),
    ]
    assert decide(order, "shell", [allow_word]).decision is Decision.BLOCK


def test_highest_risk_wins(spec: Policy) -> None:
    """Of high and critical the ruling takes critical."""
    r = decide(spec, "file-delete", environment="production")
    assert (r.risk, r.rule) == (Risk.CRITICAL, "deletions")


def test_risk_defaults_when_no_matching_rule_states_one(spec: Policy) -> None:
    """A match without risk gives DEFAULT_RISK (medium); a stated low risk is kept."""
    assert decide(spec, "payment", amount=1).risk is Risk.MEDIUM
    policy = parse(
        "rules:\n  - {name: a, decision: allow, risk: low}\n  - {name: b, decision: ask}\n"
    )
    assert decide(policy, "x").risk is Risk.LOW


def test_shortest_timeout_wins() -> None:
    """Of the timeouts stated the shortest applies; None when no matching rule states one."""
    policy = parse(
        """\
        rules:
          - {name: a, decision: ask, timeout: 1h}
          - {name: b, decision: ask, timeout: 15m}
          - {name: c, action: other, decision: ask}
        """
    )
    assert decide(policy, "x").timeout == timedelta(minutes=15)
    assert decide(policy, "other").timeout == timedelta(minutes=15)
    assert decide(parse("rules:\n  - {name: c, decision: ask}\n"), "x").timeout is None


def test_approvers_are_intersected() -> None:
    """Approvers of several matching rules intersect; rules without approvers do not narrow."""
    policy = parse(
        """\
        rules:
          - {name: a, decision: ask, approvers: [alice, bob]}
          - {name: b, decision: ask, approvers: [bob, carol], action: [x, y]}
          - {name: c, decision: ask, action: [x, z]}
          - {name: d, decision: ask, approvers: dave, action: y}
        """
    )
    assert decide(policy, "x").approvers == frozenset({"bob"})
    assert decide(policy, "z").approvers == frozenset({"alice", "bob"})
    assert decide(policy, "y").approvers == frozenset()
    assert decide(parse("rules:\n  - {name: c, decision: ask}\n"), "q").approvers is None


def test_one_editable_false_makes_the_ruling_not_editable() -> None:
    """editable is false when any matching rule says so, true otherwise."""
    policy = parse(
        """\
        rules:
          - {name: a, decision: ask}
          - {name: b, decision: allow, action: fixed, editable: false}
        """
    )
    assert decide(policy, "fixed").editable is False
    assert decide(policy, "other").editable is True
    assert [m.editable for m in decide(policy, "fixed").matches] == [True, False]


def test_default_decision_is_ask(spec: Policy) -> None:
    """With no matching rule the ruling is the defaults: ask, medium risk, no matches."""
    expected = Ruling(Decision.ASK, Risk.MEDIUM, None, "defaults", "", None, True, ())
    assert decide(spec, "unknown-action") == expected
    assert decide(parse_policy(""), "anything") == expected
    assert decide(parse_policy("# only a comment\n"), "anything") == expected
    assert decide(spec, "unknown-action").explanation == ""


def test_defaults_section_can_allow() -> None:
    """A file whose defaults say allow lets unmatched actions through, with its durations."""
    policy = parse("defaults:\n  decision: allow\n  timeout: 90s\n  quiet: 1m\n")
    assert policy.defaults == Defaults(Decision.ALLOW, timedelta(seconds=90), timedelta(minutes=1))
    r = decide(policy, "anything")
    assert (r.decision, r.rule, r.matches) == (Decision.ALLOW, "defaults", ())


def test_empty_sections_are_allowed() -> None:
    """defaults:, rules: and actions: with nothing under them mean the defaults."""
    policy = parse("defaults:\nrules:\nactions:\n")
    assert (policy.defaults, policy.rules, dict(policy.actions)) == (Defaults(), (), {})


def test_reason_comes_from_first_rule_with_the_winning_decision() -> None:
    """The first blocking rule's reason is the ruling's, even when a later one has another."""
    policy = parse(
        """\
        rules:
          - {name: a, decision: ask, reason: asking}
          - {name: b, decision: block, reason: First block.}
          - {name: c, decision: block, reason: second}
        """
    )
    r = decide(policy, "x")
    assert (r.rule, r.reason) == ("b", "First block.")
    assert r.explanation == (
        "x needs approval: asking. x is blocked: First block. x is blocked: second."
    )


# --- callable rules ------------------------------------------------------------------


def block_shell(proposal: Proposal) -> Decision | None:
    return Decision.BLOCK if proposal.action == "shell" else None


def allow_word(proposal: Proposal) -> str:
    return "allow"


def detailed(proposal: Proposal) -> RuleMatch:
    return RuleMatch(Decision.ASK, risk=Risk.LOW, approvers=frozenset({"alice"}), reason="why")


def test_callable_returning_decision() -> None:
    """A function returning a Decision takes part like a rule named after the function."""
    r = decide(parse_policy(""), "shell", [block_shell])
    assert (r.decision, r.rule, r.risk) == (Decision.BLOCK, "block_shell", Risk.MEDIUM)
    assert r.matches == (RuleMatch(Decision.BLOCK, "block_shell", explanation="shell is blocked."),)


def test_callable_returning_none_has_no_opinion(spec: Policy) -> None:
    """None from a function changes nothing: the defaults still apply."""
    assert decide(spec, "deploy", [block_shell]).rule == "defaults"


def test_callable_returning_plain_string() -> None:
    """'allow' as a plain string is understood as Decision.ALLOW."""
    r = decide(parse_policy(""), "x", [allow_word])
    assert (r.decision, r.rule, r.explanation) == (Decision.ALLOW, "allow_word", "x is allowed.")
    assert r.decision is Decision.ALLOW


def test_callable_returning_rulematch_gets_its_name(spec: Policy) -> None:
    """A RuleMatch without a rule name gets the function's name; its fields are combined."""
    r = decide(spec, "payment", [detailed], amount=1000)
    assert (r.rule, r.risk, r.approvers, r.reason) == (
        "large-payments",
        Risk.HIGH,
        frozenset({"alice"}),
        "",
    )
    last = r.matches[-1]
    assert (last.rule, last.risk, last.explanation) == (
        "detailed",
        Risk.LOW,
        "payment needs approval: why.",
    )


def test_file_rules_come_before_callables() -> None:
    """When a file rule and a function agree on the winning decision the file rule names it."""
    policy = parse("rules:\n  - {name: file-block, action: shell, decision: block}\n")
    assert decide(policy, "shell", [block_shell]).rule == "file-block"
    assert [m.rule for m in decide(policy, "shell", [block_shell]).matches] == [
        "file-block",
        "block_shell",
    ]


BAD_RETURNS: list[Any] = [
    True,
    "yes",
    "ALLOW",
    42,
    RuleMatch("maybe"),  # type: ignore[arg-type]
    RuleMatch(Decision.ASK, approvers=["alice"]),  # type: ignore[arg-type]
    RuleMatch(Decision.ASK, timeout="1h"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize("bad", BAD_RETURNS)
def test_callable_returning_something_else_fails_closed(bad: Any) -> None:
    """Any other return value raises RulesError naming the function and what it must return."""

    def sloppy(proposal: Proposal) -> Any:
        return bad

    with pytest.raises(RulesError) as info:
        decide(parse_policy(""), "x", [sloppy])
    assert info.value.where == "rule function sloppy"
    assert 'must return None (no opinion), a Decision, "allow", "ask" or "block"' in str(info.value)


def test_callable_that_raises_fails_closed() -> None:
    """An exception inside a rule function becomes a RulesError with the original as cause."""

    def broken(proposal: Proposal) -> Decision:
        raise KeyError("amount")

    with pytest.raises(RulesError) as info:
        decide(parse_policy(""), "x", [broken])
    assert str(info.value).startswith("rule function broken: raised KeyError: 'amount' (")
    assert isinstance(info.value.__cause__, KeyError)


# --- actions ---------------------------------------------------------------------------


def test_actions_python_and_options() -> None:
    """An action may name a python function instead, with its own timeout and idempotence."""
    policy = parse(
        """\
        actions:
          refund:
            python: payments.executor:refund
            timeout: 5m
            idempotent: true
        """
    )
    assert dict(policy.actions) == {
        "refund": ActionSpec(
            "refund",
            python="payments.executor:refund",
            timeout=timedelta(minutes=5),
            idempotent=True,
        )
    }


# --- validation: every problem has its line and fix ----------------------------------------


def test_yaml_syntax_error_has_line() -> None:
    """An unquoted >= value is a YAML error reported at its line, with a hint to quote it."""
    err = error(
        """\
        rules:
          - name: big
            params:
              amount: >= 500
            decision: ask
        """
    )
    assert err.line == 4
    assert err.where == "hitl-vault.yaml"
    assert "YAML error" in err.problem
    assert 'quote values that start with a symbol, e.g. amount: ">= 500"' in str(err)


def test_multiple_documents_are_refused() -> None:
    """A second YAML document is an error, not silently ignored."""
    assert error("rules:\n---\nrules:\n").line == 2


def test_anchors_and_aliases_are_refused() -> None:
    """Anchors and aliases are refused at the anchor's line."""
    err = error(
        """\
        rules:
          - name: a
            action: &names [x, y]
            decision: ask
          - name: b
            action: *names
            decision: block
        """
    )
    assert err.line == 3
    assert err.problem == "anchors and aliases are not allowed in hitl-vault.yaml"
    assert "write each value out in full" in str(err)


def test_duplicate_keys_are_refused() -> None:
    """A key written twice in one mapping is an error at the second one (PyYAML keeps the last)."""
    err = error("rules:\n  - name: a\n    decision: block\n    decision: allow\n")
    assert err.line == 4
    assert 'the key "decision" appears twice (first at line 3)' in str(err)
    assert error("rules:\ndefaults:\nrules:\n").line == 3
    assert error("rules:\n  - {name: a, params: {n: 1, n: 2}, decision: ask}\n").line == 2


def test_top_level_must_be_a_mapping() -> None:
    """A list or a plain word at the top level is an error at line 1."""
    for text in ("- name: a\n", "just words\n"):
        err = error(text)
        assert err.line == 1
        assert "the top level must be" in err.problem
        assert "defaults:, rules: and actions:" in err.fix


def test_unknown_top_level_key_suggests_the_close_one() -> None:
    """A misspelt top-level key names the likely intended key; a far one lists them all."""
    err = error("defaults:\n  decision: ask\nrule:\n  - name: a\n")
    assert (err.line, err.problem) == (3, 'unknown key "rule" in the top level')
    assert 'did you mean "rules"?' in err.fix
    assert error("zzz: 1\n").fix == (
        "use one of: defaults, rules, actions, groups, notify, notify_vault, mode, gate"
    )


def test_defaults_validation() -> None:
    """Bad defaults: a misspelt decision, a bad duration, an unknown key; each at its line."""
    err = error("defaults:\n  timeout: 1h\n  decision: alow\n")
    assert (err.line, err.problem) == (3, 'defaults decision "alow" is not valid')
    assert 'did you mean "allow"?' in err.fix
    err = error("defaults:\n  quiet: soon\n")
    assert (err.line, err.problem) == (2, 'defaults quiet "soon" is not a positive duration')
    assert err.fix == "write a duration like 90s, 15m, 1h or 2d"
    assert error("defaults:\n  timeout: 0s\n").line == 2
    err = error("defaults:\n\n  timout: 1h\n")
    assert err.line == 3
    assert 'did you mean "timeout"?' in err.fix
    assert error("defaults: [ask]\n").line == 1


def test_rules_must_be_a_list_of_mappings() -> None:
    """rules: as a mapping, or a rule that is a bare word, is an error at its line."""
    err = error("rules:\n  name: a\n")
    assert (err.line, err.problem) == (2, "rules must be a list")
    err = error("rules:\n  - name: a\n    decision: ask\n  - just-a-name\n")
    assert err.line == 4
    assert "a rule must be a mapping" in err.problem


def test_rule_needs_name_and_decision() -> None:
    """A rule without a name or without a decision is reported at the rule's first line."""
    err = error("rules:\n  - name: a\n    decision: ask\n  - action: x\n    decision: ask\n")
    assert (err.line, err.problem, err.fix) == (
        4,
        "a rule has no name",
        "add name: some-name to it",
    )
    err = error("rules:\n  - name: a\n    action: x\n")
    assert (err.line, err.problem) == (2, "rule a has no decision")
    assert "decision: allow, ask or block" in err.fix
    assert error("rules:\n  - {name: '', decision: ask}\n").line == 2
    assert error("rules:\n  - {name: defaults, decision: ask}\n").line == 2


def test_rule_names_are_unique() -> None:
    """Two rules with one name are an error at the second, naming both lines."""
    err = error("rules:\n  - name: a\n    decision: ask\n  - name: a\n    decision: allow\n")
    assert err.line == 4
    assert err.problem == 'two rules are named "a" (lines 2 and 4)'


def test_unknown_rule_key_suggests_the_close_one() -> None:
    """desicion is reported at its line with did you mean decision."""
    err = error("rules:\n  - name: a\n    desicion: ask\n")
    assert (err.line, err.problem) == (3, 'unknown key "desicion" in a rule')
    assert err.fix.startswith('did you mean "decision"?')


def test_bad_rule_values() -> None:
    """Bad decision, risk, timeout, editable, reason and action names point at their lines."""
    cases = {
        "decision: maybe": ("rule a decision", "use one of: allow, ask, block"),
        "risk: hgih": ("rule a risk", 'did you mean "high"?'),
        "timeout: later": ("rule a timeout", "write a duration like 90s, 15m, 1h or 2d"),
        "editable: 'false'": ("rule a editable", "write true or false, without quotes"),
        "reason: 42": ("rule a reason", "write it as text"),
        "action: 'pay ment'": ('rule a action "pay ment" is not a valid action name', "re:<regex>"),
        "action: []": ("rule a action is an empty list", "a list of names"),
        "action: 7": ("rule a action must be non-empty text", "a list of names"),
    }
    for line, (problem, fix) in cases.items():
        text = f"rules:\n  - name: a\n    decision: ask\n    {line}\n"
        if line.startswith("decision"):
            text = f"rules:\n  - name: a\n    {line}\n    risk: low\n"
        err = error(text)
        assert err.line == (3 if line.startswith("decision") else 4), line
        assert problem in err.problem, (line, err.problem)
        assert fix in err.fix, (line, err.fix)


def test_invalid_regexes_are_named() -> None:
    """An invalid re: pattern in an action or a param is reported with the pattern itself."""
    err = error("rules:\n  - name: a\n    action: 're:('\n    decision: ask\n")
    assert err.line == 3
    assert 'the regex "(" is invalid' in err.problem
    err = error("rules:\n  - name: a\n    decision: ask\n    params:\n      n: ['x', 're:[a-']\n")
    assert err.line == 5
    assert 'rule a params n: the regex "[a-" is invalid' in err.problem


def test_comparison_with_text_is_refused() -> None:
    """A comparison like "< abc" is an error saying a number must follow the operator."""
    err = error("rules:\n  - name: a\n    decision: ask\n    params: {n: '< abc'}\n")
    assert err.line == 4
    assert err.problem == 'rule a params n: "< abc" compares with "abc", which is not a number'
    assert err.fix.startswith('write a number after <, e.g. "< 500"')
    assert error("rules:\n  - name: a\n    decision: ask\n    params: {n: '>='}\n").line == 4


def test_bad_conditions_are_refused() -> None:
    """A mapping, a nested list or an empty list is not a condition."""
    base = "rules:\n  - name: a\n    decision: ask\n    params:\n"
    err = error(base + "      n:\n        gt: 5\n")
    assert (err.line, err.problem) == (6, "rule a params n is a mapping, which is not a condition")
    assert '"< 500"' in err.fix
    nested = error(base + "      n: [1, [2, 3]]\n")
    assert (nested.line, nested.problem) == (5, "rule a params n has a list inside a list")
    assert error(base + "      n: []\n").problem == "rule a params n is an empty list"
    not_mapping = error(base + "      - n\n")
    assert not_mapping.problem == "rule a params must be a mapping of key: value lines"


def test_approvers_validation() -> None:
    """approvers take a name or a list; a comma-separated string or an empty list is refused."""
    assert parse("rules:\n  - {name: a, decision: ask, approvers: alice}\n").rules[
        0
    ].approvers == frozenset({"alice"})
    err = error("rules:\n  - name: a\n    decision: ask\n    approvers: alice, bob\n")
    assert err.line == 4
    assert (
        err.fix == "write a name, or a list of names or groups: approvers: [alice, group:finance]"
    )
    assert error("rules:\n  - name: a\n    decision: ask\n    approvers: []\n").line == 4


def test_unsafe_yaml_tags_are_refused() -> None:
    """A python tag is refused at its line and never constructed."""
    err = error("rules:\n  - name: a\n    decision: !!python/name:os.system ask\n")
    assert err.line == 3
    assert "rule a decision" in err.problem


def test_action_run_as_string_is_refused_with_the_list_form() -> None:
    """run: given as one string is refused; the fix shows it written as an argv list."""
    err = error("actions:\n  payment:\n    run: python3 scripts/pay.py\n")
    assert err.line == 3
    assert str(err) == (
        "hitl-vault.yaml line 3: action payment run is a single string, not a list "
        "(write it as a list: run: [python3, scripts/pay.py] (a shell is never used))"
    )


def test_action_validation() -> None:
    """Actions need exactly one of run and python, valid names, text argv, known keys."""
    err = error("actions:\n  pay:\n    run: [a]\n    python: m:f\n")
    assert (err.line, err.problem) == (2, "action pay has both run and python")
    err = error("actions:\n  pay:\n    timeout: 5m\n")
    assert (err.line, err.problem) == (2, "action pay has neither run nor python")
    err = error("actions:\n  pay ment:\n    run: [a]\n")
    assert (err.line, err.problem) == (2, '"pay ment" is not a valid action name')
    err = error("actions:\n  pay:\n    python: not a target\n")
    assert err.line == 3
    assert "package.module:function" in err.problem
    err = error("actions:\n  pay:\n    run:\n      - sleep\n      - 5\n")
    assert (err.line, err.problem, err.fix) == (5, "action pay run: 5 is not text", 'quote it: "5"')
    err = error("actions:\n  pay:\n    run: []\n")
    assert (err.line, err.problem) == (3, "action pay run must be a non-empty list")
    err = error("actions:\n  pay:\n    run: [a]\n    idempotant: true\n")
    assert err.line == 4
    assert 'did you mean "idempotent"?' in err.fix
    assert error("actions:\n  pay: python3 pay.py\n").line == 2


# --- load_policy -------------------------------------------------------------------------------


def test_load_missing_file_means_defaults(tmp_path: Path) -> None:
    """No rules file: defaults only, so every action asks (fail closed)."""
    policy = load_policy(tmp_path / "hitl-vault.yaml", "hitl-vault.yaml")
    assert policy == Policy(Defaults(), (), {}, "hitl-vault.yaml")
    assert decide(policy, "payment", amount=1).decision is Decision.ASK


def test_load_reads_the_file_and_names_it(tmp_path: Path) -> None:
    """A file with a BOM and CRLF line endings loads; errors name the path when no name is given."""
    path = tmp_path / "hitl-vault.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + FULL_RULES.replace("\n", "\r\n").encode())
    assert [r.line for r in load_policy(path).rules] == [7, 11, 17, 21, 25]
    path.write_text("rules:\n  - name: a\n")
    err = load_error(path)
    assert (err.where, err.line) == (str(path), 2)


def test_load_non_utf8_file(tmp_path: Path) -> None:
    """Non-UTF-8 bytes are a RulesError at the line holding them."""
    path = tmp_path / "hitl-vault.yaml"
    path.write_bytes(b"rules:\n  - name: a\n    reason: caf\xe9\n    decision: ask\n")
    err = load_error(path, "hitl-vault.yaml")
    assert (err.line, err.fix) == (3, "save it as UTF-8")
    assert str(err).startswith("hitl-vault.yaml line 3: is not UTF-8")


@pytest.mark.parametrize(("make", "problem"), [("folder", "is a folder"), ("pipe", "is a pipe")])
def test_load_unreadable_path(tmp_path: Path, make: str, problem: str) -> None:
    """A folder or a named pipe where the file should be is a RulesError, at once.

    Opening a pipe for reading waits for a writer: it must not be opened that way.
    """
    path = tmp_path / "hitl-vault.yaml"
    if make == "folder":
        path.mkdir()
    else:
        os.mkfifo(path)
    err = returns_within(lambda: load_error(path, "x.yaml"), "reading the rules file")
    assert err.line is None
    assert str(err).startswith(f"x.yaml: {problem}")
