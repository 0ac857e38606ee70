"""``defaults.min_risk`` approves a low-risk ask at once, but never where it matters who
decides; ``rules check`` says both what the rules say and what submit would do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from hitl_vault import Vault
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault
from hitl_vault.model import Status

RULES = """\
defaults:
  decision: ask
  min_risk: high
groups:
  finance: [carol, dave]
rules:
  - {name: plain, action: plain, decision: ask, risk: low}
  - {name: named, action: named, decision: ask, risk: low, approvers: [alice]}
  - {name: two, action: two, decision: ask, risk: low, approvers: [alice, bob], quorum: 2}
  - name: staged
    action: staged
    decision: ask
    risk: low
    stages:
      - {name: lead, approvers: [alice]}
      - {name: money, approvers: [group:finance]}
  - {name: proven, action: proven, decision: ask, risk: low, authenticated: true}
  - {name: nobody-twice, action: self, decision: ask, risk: low, prevent_self_approval: true}
"""


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    path = tmp_path / "vault"
    init_vault(path)
    (path / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    return path


def test_min_risk_approves_only_a_plain_low_risk_ask(vault: Path) -> None:
    """A low ask whose rule names nobody is approved; named approvers, a quorum, stages,
    authenticated:, no self-approval and the fail-closed default all wait for a human."""
    with Vault(vault) as v:
        plain = v.submit("plain", {})
        assert plain.status is Status.APPROVED
        assert plain.reason == "would ask (risk low is below min_risk high)"
        for action in ("named", "two", "staged", "proven", "self", "unknown_action"):
            assert v.submit(action, {}).status is Status.PENDING, action


@pytest.mark.parametrize(
    ("action", "would"),
    [("plain", "allow"), ("named", "ask"), ("two", "ask"), ("unknown_action", "ask")],
)
def test_rules_check_says_what_the_rules_say_and_what_submit_would_do(
    vault: Path, action: str, would: str
) -> None:
    """`decision` stays what the rules say (ask); `would` is what submit does with it."""
    runner = CliRunner()
    text = runner.invoke(cli, ["--vault", str(vault), "rules", "check", action])
    assert text.exit_code == 0, text.output
    lines = text.output.splitlines()
    assert lines[0] == "decision: ask"
    assert lines[1].startswith(f"would:    {would}")
    if would == "allow":
        assert "(would ask (risk low is below min_risk high))" in lines[1]
    shown = runner.invoke(cli, ["--vault", str(vault), "rules", "check", action, "--json"])
    data = json.loads(shown.output)
    assert (data["decision"], data["would"]) == ("ask", would)
    assert bool(data["would_reason"]) is (would == "allow")
    with Vault(vault) as v:
        assert v.list() == []  # a dry run: nothing made


def test_min_risk_never_allows_what_a_confidence_rule_made_a_low_risk_ask(tmp_path: Path) -> None:
    """An agent that asserts a high confidence to match a low-risk ask rule does not get
    min_risk to approve the request: the match only ever makes things stricter."""
    from hitl_vault import Vault
    from hitl_vault.cli.template import init_vault

    init_vault(tmp_path / "v")
    (tmp_path / "v" / "hitl-vault.yaml").write_text(
        "defaults:\n  decision: ask\n  min_risk: medium\nrules:\n"
        '  - name: sure\n    action: wire\n    confidence: "> 0.9"\n'
        "    decision: ask\n    risk: low\n",
        encoding="utf-8",
    )
    with Vault(tmp_path / "v") as vault:
        sure = vault.submit("wire", {"amount": 100000}, confidence=0.95)
        assert sure.status.value == "pending", sure.history
