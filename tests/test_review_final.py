"""A review of the seams between several approvers, cancel, retry, monitor mode, the gate
and the README a new user reads first: each test is a finding, kept once it was fixed."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import Status, Vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import NotRetryableError

from .helpers import Clock, VaultHelper, eventually
from .test_approvers import flagged, invoke, submit_cli, write_vault
from .test_gate import decision, gate, hook_input


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    return write_vault(tmp_path / "vault")


def settle(daemon: Daemon, clock: Clock, steps: int = 6, every: float = 1.0) -> None:
    """Step the in-process daemon past the quiet period a few times."""
    for _ in range(steps):
        daemon.run_once(clock.advance(timedelta(seconds=every)))


def loosen(vault_path: Path, old: str, new: str) -> None:
    """Edit hitl-vault.yaml: replace ``old`` by ``new`` (which must be there)."""
    rules = vault_path / "hitl-vault.yaml"
    text = rules.read_text()
    assert old in text, old
    rules.write_text(text.replace(old, new, 1))


THREE_OF = "approvers: [alice, bob]\n    quorum: 2\n    require_reason"


def test_a_reject_command_never_approves_a_request(vault_path: Path) -> None:
    """reject --by carol after the quorum was lowered must not approve the request."""
    loosen(
        vault_path, THREE_OF, "approvers: [alice, bob, carol]\n    quorum: 3\n    require_reason"
    )
    rid = submit_cli(vault_path, "transfer", "amount=5")
    assert invoke(vault_path, "approve", rid, "--by", "alice").exit_code == 0
    assert invoke(vault_path, "approve", rid, "--by", "bob").exit_code == 0
    loosen(vault_path, "quorum: 3", "quorum: 2")
    result = invoke(vault_path, "reject", rid, "--by", "carol", "--reason", "absolutely not")
    with Vault(vault_path) as vault:
        request = vault.get(rid)
    # today: exit 0, stdout "<id> approved", status approved "by alice, bob", and carol's
    # rejection is recorded nowhere
    assert f"{rid} approved" not in result.stdout, result.stdout
    assert request.status is not Status.APPROVED or any(t.by == "carol" for t in request.history), (
        "carol's rejection was turned into an approval and lost"
    )


def test_a_vote_written_as_the_note_asks_after_the_quorum_was_dropped_is_not_lost(
    vault_path: Path, clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """quorum 2 -> 1 while pending: alice's vote on her line decides it, or is flagged."""
    req = clocked_vault.submit("payment", {"amount": 5}, requested_by="bot")
    assert req.path is not None
    settle(daemon, clock)
    loosen(vault_path, "approvers: [group:finance]\n    quorum: 2\n",
           "approvers: [group:finance]\n")  # fmt: skip
    daemon.notice(vault_path / "hitl-vault.yaml")
    settle(daemon, clock)
    assert not clocked_vault.votes(req.id).plan.by_votes, "the new rules are in force"
    note = clocked_vault.get(req.id).path
    assert note is not None
    text = note.read_text()
    # the note still says "Write `approved` ... after your own name under `votes:`"
    assert "\n  alice:\n" in text
    note.write_text(text.replace("\n  alice:\n", "\n  alice: approved\n", 1))
    daemon.notice(note)
    settle(daemon, clock)
    status = clocked_vault.get(req.id).status
    # today: still pending, no history line, nothing under Needs attention
    assert status is not Status.PENDING or req.id in flagged(clocked_vault), note.read_text()


def test_submit_json_has_the_keys_the_readme_lists(vault_path: Path) -> None:
    """README: submit and show print one request object with votes, stage and approvers."""
    result = invoke(vault_path, "submit", "payment", "-p", "amount=5", "--by", "bot", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    missing = {"votes", "stage", "approvers"} - set(data)
    assert not missing, f"submit --json lacks {sorted(missing)}"


def test_approve_several_ids_says_each_counted_vote_and_exits_0(vault_path: Path) -> None:
    """Two quorum requests each get alice's vote: a line each with the progress, exit 0; a
    vote that does not count makes it 1, as the README says."""
    a = submit_cli(vault_path, "payment", "amount=5")
    b = submit_cli(vault_path, "payment", "amount=6")
    result = invoke(vault_path, "approve", a, b, "--by", "alice")
    assert result.stdout.count("pending: 1 of 2 approvals") == 2
    assert result.exit_code == 0, result.stdout
    again = invoke(vault_path, "approve", a, b, "--by", "alice")  # each person counts once
    assert again.exit_code == 1 and "voted on it already" in again.stderr


@pytest.mark.parametrize("word", ["ok", "+1", "[approved]"])
def test_a_vote_word_it_does_not_understand_is_flagged(
    word: str, clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """alice writes `alice: ok` on her line: it must not vanish silently."""
    req = clocked_vault.submit("payment", {"amount": 5}, requested_by="bot")
    assert req.path is not None
    settle(daemon, clock)
    note = clocked_vault.get(req.id).path
    assert note is not None
    note.write_text(note.read_text().replace("\n  alice:\n", f"\n  alice: {word}\n", 1))
    daemon.notice(note)
    settle(daemon, clock)
    request = clocked_vault.get(req.id)
    assert request.status is Status.PENDING
    said = [t for t in request.history if "alice" in " ".join((t.move, *t.details))]
    # today: no history line, nothing listed, the note unchanged: alice thinks she voted
    assert said or req.id in flagged(clocked_vault), note.read_text()


@pytest.mark.process
def test_an_agents_timed_out_call_is_not_retried_from_the_vault_but_asked_again(
    vault_path: Path, tmp_path: Path, helper: VaultHelper
) -> None:
    """retry of a gate request says to make the call again; the identical call asks anew."""
    loosen(vault_path, "rules:\n", "rules:\n  - name: pushes\n    action: Bash\n"
           "    decision: ask\n    timeout: 1s\n")  # fmt: skip
    project = tmp_path / "project"
    project.mkdir()
    call = hook_input("Bash", {"command": "git push origin main"}, cwd=project)
    assert decision(gate(vault_path, call, "--wait", "100ms"))["permissionDecision"] == "deny"
    with Vault(vault_path) as vault:
        (asked,) = vault.list()
        eventually(lambda: vault.engine.refresh(asked.id).status is Status.TIMED_OUT)
        with pytest.raises(NotRetryableError, match="have the agent make the same call again"):
            vault.retry(asked.id, by="alice")
        assert len(vault.list()) == 1  # nothing made that no call would ever find
    # The new request waits an hour: a loaded machine must not time it out before it is seen.
    loosen(vault_path, "    timeout: 1s\n", "    timeout: 1h\n")
    again = decision(gate(vault_path, call, "--wait", "100ms"))
    assert (
        again["permissionDecision"] == "deny"
        and "waiting for a human" in again["permissionDecisionReason"]
    )
    with Vault(vault_path) as vault:
        (fresh,) = vault.list(status=Status.PENDING)  # the call asks again: a request to approve
        vault.approve(fresh.id, by="alice")
    assert decision(gate(vault_path, call, "--wait", "100ms"))["permissionDecision"] == "allow"


def uncomment(text: str, first: str, last: str) -> str:
    """``text`` with the lines from the one starting ``first`` up to (not including) the one
    starting ``last`` uncommented, as a user does in an editor (the leading ``#`` removed)."""
    out, inside = [], False
    for line in text.splitlines(keepends=True):
        inside = (inside or line.startswith(first)) and not line.startswith(last)
        out.append(line[1:] if inside and line.startswith("#") else line)
    return "".join(out)


def test_the_templates_groups_can_be_uncommented_beside_its_agent_rules(tmp_path: Path) -> None:
    """A new user uncomments groups: (for group:finance) beside the agent rules, which the
    template has on: it loads, and the agent rules still apply."""
    from hitl_vault.cli.template import init_vault

    path = tmp_path / "fresh"
    init_vault(path)
    rules = path / "hitl-vault.yaml"
    text = rules.read_text().replace("# groups:", "groups:", 1)
    text = text.replace("#   finance: [alice, bob]", "  finance: [alice, bob]", 1)
    rules.write_text(text)
    result = invoke(path, "rules", "check", "TodoWrite")
    assert result.exit_code == 0, result.stderr
    assert "agent-planning" in result.stdout


def test_the_templates_remind_before_example_can_be_uncommented(tmp_path: Path) -> None:
    """Uncommenting the template's `# defaults:` / `#   remind_before: 15m` lines loads."""
    from hitl_vault.cli.template import init_vault

    path = tmp_path / "fresh"
    init_vault(path)
    rules = path / "hitl-vault.yaml"
    text = rules.read_text()
    assert "  # remind_before: 15m" in text and "  # min_risk: high" in text
    rules.write_text(text.replace("  # remind_before: 15m", "  remind_before: 15m").replace(
        "  # min_risk: high", "  min_risk: high"))  # fmt: skip
    result = invoke(path, "rules", "check", "payment", "-p", "amount=900")
    # today: exit 1, 'the key "defaults" appears twice (first at line 10)'
    assert result.exit_code == 0, result.stderr


def test_a_pending_note_shows_the_vote_lines_once_the_rules_ask_for_a_quorum(
    vault_path: Path, clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """email (one of alice/bob) gets quorum: 2 while pending: its note gets votes: lines."""
    req = clocked_vault.submit("email", {"to": "x"}, requested_by="bot")
    settle(daemon, clock)
    loosen(vault_path, "  - name: single\n    action: email\n    decision: ask\n"
           "    approvers: [alice, bob]\n", "  - name: single\n    action: email\n"
           "    decision: ask\n    approvers: [alice, bob]\n    quorum: 2\n")  # fmt: skip
    daemon.notice(vault_path / "hitl-vault.yaml")
    settle(daemon, clock)
    assert clocked_vault.votes(req.id).plan.by_votes, "the new rules are in force"
    note = clocked_vault.get(req.id).path
    assert note is not None
    text = note.read_text()
    # today: no votes: map, and the callout still says "Set `status` to `approved`"
    assert "\n  alice:\n" in text and "Set `status`" not in text, text


def test_verify_names_a_vote_line_rewritten_after_the_request_ran(
    vault_path: Path, clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """bob's `approved` turned into `rejected` in the Done note: verify or the daemon says so."""
    req = clocked_vault.submit("payment", {"amount": 5}, requested_by="bot")
    clocked_vault.approve(req.id, by="alice")
    clocked_vault.approve(req.id, by="bob")
    settle(daemon, clock, steps=10)
    assert ran == [req.id]
    note = clocked_vault.get(req.id).path
    assert note is not None and note.parent.name == "Done"
    text = note.read_text()
    assert "\n  bob: approved\n" in text
    note.write_text(text.replace("\n  bob: approved\n", "\n  bob: rejected, never agreed\n"))
    daemon.notice(note)
    settle(daemon, clock)
    result = invoke(vault_path, "verify")
    # today: the note says bob rejected a payment that ran; verify exits 0, nothing listed
    assert (
        "bob: approved" in note.read_text()
        or result.exit_code == 1
        or (req.id in flagged(clocked_vault))
    ), result.stdout


@pytest.mark.process
def test_a_hitl_vault_module_written_into_the_project_cannot_replace_the_gate(
    vault_path: Path, tmp_path: Path
) -> None:
    """The agent writes <project>/hitl_vault.py (allowed: not the vault nor our code)."""
    import shlex
    import subprocess
    import sys

    project = tmp_path / "project"
    project.mkdir()
    installed = subprocess.run(
        [sys.executable, "-m", "hitl_vault", "--vault", str(vault_path), "hook", "install",
         "--project", str(project)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    settings = json.loads((project / ".claude" / "settings.json").read_text())
    (hook,) = [h for m in settings["hooks"]["PreToolUse"] for h in m["hooks"]]
    allow = {"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow"}}
    (project / "hitl_vault.py").write_text(f"print({json.dumps(allow)!r})\n")
    call = hook_input("Bash", {"command": "git push --force origin main"}, cwd=project)
    argv = shlex.split(hook["command"])
    wait = argv[argv.index("--wait") + 1]  # the real gate asks, then denies after a second
    command = hook["command"].replace(f"--wait {wait}", "--wait 1s")
    done = subprocess.run(  # through a shell, as the agent runs a hook command
        ["/bin/sh", "-c", command], input=call, cwd=project, capture_output=True, timeout=60,
        check=False,
    )  # fmt: skip
    assert b'"allow"' not in done.stdout, (hook["command"], done.stdout)
    assert b'"deny"' in done.stdout and b"waiting for a human" in done.stdout, done.stdout
