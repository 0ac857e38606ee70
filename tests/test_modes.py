"""``mode: monitor`` and ``defaults.min_risk``: what would need a human is allowed and on
record as such, for every way in (README "Requests, statuses and rules")."""

from __future__ import annotations

from pathlib import Path

import pytest

from hitl_vault import Request, RulesError, Status, Vault
from hitl_vault.model import Risk
from hitl_vault.policy.rules import GateRecord, Mode
from hitl_vault.policy.rulesfile import parse_policy

RULES = """\
defaults:
  decision: ask
  quiet: 200ms
rules:
  - name: no-shell
    action: shell
    decision: block
    risk: critical
    reason: Shell commands are blocked by policy
  - name: emails
    action: send_email
    decision: ask
    risk: medium
  - name: deploys
    action: deploy
    decision: ask
    risk: high
"""


def _vault(path: Path, head: str = "", defaults: str = "") -> Vault:
    text = head + RULES.replace("  quiet: 200ms\n", f"  quiet: 200ms\n{defaults}")
    (path / "hitl-vault.yaml").write_text(text, encoding="utf-8")
    return Vault(path)


def test_monitor_mode_approves_what_would_be_blocked_or_asked_and_says_so(
    vault_path: Path,
) -> None:
    """Nothing waits in monitor mode: each request is approved with a "would ..." reason."""
    with _vault(vault_path, "mode: monitor\n") as vault:
        blocked = vault.submit("shell", {"command": "ls"})
        asked = vault.submit("send_email", {"to": "a@example.com"})
        allowed = vault.submit("payment", {"amount": 1})  # no rule: the default, ask
        assert vault.list(status=Status.PENDING) == []
        assert blocked.status is Status.APPROVED and blocked.rule == "no-shell"
        assert blocked.reason == "would block (monitor mode): Shell commands are blocked by policy"
        assert asked.status is Status.APPROVED and asked.reason == "would ask (monitor mode)"
        assert allowed.reason == "would ask (monitor mode)"
        note = blocked.path.read_text(encoding="utf-8") if blocked.path else ""
        assert "would block (monitor mode)" in note  # the history line says so
        history = vault.get(blocked.id).history
        assert history[0].reason.startswith("would block (monitor mode)")
        assert vault.verify() == []  # the journal's replay and the notes agree


def test_monitor_mode_lets_the_daemon_run_what_a_block_rule_covers(vault_path: Path) -> None:
    """A "would block" approval is run, not rejected right before it runs."""
    ran: list[str] = []
    with _vault(vault_path, "mode: monitor\n") as vault:

        @vault.action("shell")
        def shell(request: Request) -> str:
            ran.append(request.id)
            return "ran"

        request = vault.submit("shell", {"command": "ls"})
        vault.run(once=True)
        assert ran == [request.id]
        assert vault.get(request.id).status is Status.EXECUTED


def test_enforce_mode_still_blocks_and_asks(vault_path: Path) -> None:
    """mode: enforce is the default behaviour: a block rejects, an ask waits."""
    with _vault(vault_path, "mode: enforce\n") as vault:
        assert vault.submit("shell", {"command": "ls"}).status is Status.REJECTED
        assert vault.submit("send_email", {}).status is Status.PENDING


def test_asks_below_min_risk_are_allowed_and_on_record(vault_path: Path) -> None:
    """min_risk: high lets a medium-risk ask through, recorded; high still asks; block blocks."""
    with _vault(vault_path, defaults="  min_risk: high\n") as vault:
        email = vault.submit("send_email", {"to": "a@example.com"})
        assert email.status is Status.APPROVED
        assert email.reason == "would ask (risk medium is below min_risk high)"
        assert vault.submit("deploy", {}).status is Status.PENDING
        assert vault.submit("shell", {}).status is Status.REJECTED
        assert vault.evaluate("send_email").decision == "ask"  # what the rules say stays


def test_the_rules_file_reads_mode_min_risk_and_gate_record() -> None:
    """The new keys parse to what they say; their defaults are enforce, none and blocks."""
    policy = parse_policy("mode: monitor\ndefaults: {min_risk: high}\ngate: {record: all}\n")
    assert policy.mode is Mode.MONITOR
    assert policy.defaults.min_risk is Risk.HIGH
    assert policy.gate_record is GateRecord.ALL
    plain = parse_policy("rules: []\n")
    assert plain.mode is Mode.ENFORCE and plain.defaults.min_risk is None
    assert plain.gate_record is GateRecord.BLOCKS


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mode: monitr\n",
         'hitl-vault.yaml line 1: mode "monitr" is not valid (did you mean "monitor"'),
        ("defaults:\n  min_risk: hgh\n",
         'line 2: defaults min_risk "hgh" is not valid (did you mean "high"'),
        ("gate:\n  record: everything\n", 'line 2: gate record "everything" is not valid'),
        ("gate:\n  recrod: all\n", 'line 2: unknown key "recrod" in gate (did you mean "record"'),
        ("gate: all\n", "line 1: gate must be a mapping of key: value lines (write e.g. gate:"),
    ],
)  # fmt: skip
def test_a_bad_mode_min_risk_or_gate_key_names_the_line_and_the_fix(
    text: str, message: str
) -> None:
    """Each mistake in the new keys is an error with its line and a fix."""
    with pytest.raises(RulesError) as caught:
        parse_policy(text)
    assert message in str(caught.value)
