"""The Python API without a daemon: submit, decide, wait, approval(), requires_approval, verify."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import stat
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import (
    Decision,
    IllegalTransitionError,
    NotAnApproverError,
    Rejected,
    RequestNotFoundError,
    Status,
    TimedOut,
    UsageError,
    Vault,
    VaultNotFoundError,
    WaitTimeoutError,
)
from hitl_vault.errors import ParamsChangedError
from hitl_vault.notes.file import read_note
from hitl_vault.times import utcnow

from .helpers import save_by_rename, set_status


def _history(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    return [line for line in lines[lines.index("## History") + 1 :] if line.startswith("- ")]


def _moves(path: Path) -> list[str]:
    return [re.sub(r"^- \S+ · ", "", line).split(" · ")[0] for line in _history(path)]


def test_vault_must_exist(tmp_path: Path) -> None:
    """Opening a folder that is not a vault says how to make one."""
    with pytest.raises(VaultNotFoundError, match="hitl-vault init"):
        Vault(tmp_path / "nowhere")


def test_submit_that_needs_a_human_writes_a_pending_note(vault: Vault) -> None:
    """A large payment becomes a pending note in Pending_Approval/ with the README's fields."""
    req = vault.submit(
        "payment", {"amount": 1500, "recipient": "vendor@example.com", "currency": "USD"},
        summary="Pay $1500 to vendor@example.com for INV-2024-001", requested_by="invoice-bot",
    )  # fmt: skip
    assert req.status is Status.PENDING and req.rule == "large-payments" and req.risk == "high"
    assert req.path == vault.root / "Pending_Approval" / f"{req.id}.md"
    assert re.fullmatch(r"\d{8}T\d{6}Z-payment-[0-9a-f]{6}", req.id)
    assert req.expires is not None and (req.expires - req.created).total_seconds() == 3600
    meta = read_note(req.path, "n").meta
    assert meta["id"] == req.id and meta["status"] == "pending" and meta["params"]["amount"] == 1500
    text = req.path.read_text()
    assert "Matched rule `large-payments`: payment with amount >= 500 needs approval." in text
    assert _moves(req.path) == ["created → pending"]


def test_allow_and_block_rules_decide_at_once(vault: Vault) -> None:
    """An allow rule approves at once (note in Approved/); a block rule rejects with its reason."""
    small = vault.submit("payment", {"amount": 20})
    assert small.status is Status.APPROVED and small.path is not None
    assert small.path.parent.name == "Approved"
    shell = vault.submit("shell", {"cmd": "ls"})
    assert (
        shell.status is Status.REJECTED and shell.reason == "Shell commands are blocked by policy"
    )
    assert shell.path is not None and shell.path.parent.name == "Rejected"
    assert _moves(shell.path) == ["created → rejected"]
    assert vault.get(shell.id).history[0].reason == "Shell commands are blocked by policy"


def test_submit_timeout_is_capped_by_the_rules(vault: Vault) -> None:
    """The shortest of the asked timeout and the rule's timeout wins."""
    short = vault.submit("payment", {"amount": 900}, timeout="15m")
    long = vault.submit("payment", {"amount": 900}, timeout="2d")
    assert short.expires is not None and long.expires is not None
    assert (short.expires - short.created).total_seconds() == 900
    assert (long.expires - long.created).total_seconds() == 3600


def test_bad_arguments_name_the_argument(vault: Vault) -> None:
    """Bad action names, durations and params raise UsageError naming the argument and fix."""
    with pytest.raises(UsageError, match=r"action: '\.\./etc' is not a valid action name"):
        vault.submit("../etc", {})
    with pytest.raises(UsageError, match="timeout: 'soon' is not a duration"):
        vault.submit("payment", {"amount": 1}, timeout="soon")
    with pytest.raises(UsageError, match=r"params\.when is a"):
        vault.submit("payment", {"when": object()})


def test_approve_updates_note_and_keeps_human_lines(vault: Vault) -> None:
    """Approving through the API changes only owned lines: a human's comment and key survive."""
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    text = req.path.read_text()
    text = text.replace("risk: high\n", "risk: high\nmy_tag: keep me   # my comment\n")
    text = text.replace("## Details", "My own paragraph.\n\n## Details")
    req.path.write_text(text)
    done = vault.approve(req.id, by="alice", reason="invoice checked")
    assert done.status is Status.APPROVED and done.decided_by == "alice"
    after = (vault.root / "Approved" / f"{req.id}.md").read_text()
    assert "my_tag: keep me   # my comment\n" in after and "My own paragraph." in after
    assert "status: approved\n" in after and "decided_by: alice\n" in after
    assert _moves(vault.root / "Approved" / f"{req.id}.md") == [
        "created → pending",
        "pending → approved",
    ]
    assert '· pending → approved · by alice · "invoice checked"' in after
    assert not req.path.exists(), "the note moved to the folder of its status"


def test_reject_cancel_and_illegal_moves(vault: Vault) -> None:
    """Reject and cancel work on pending requests only; the error names the request and why."""
    a = vault.submit("payment", {"amount": 1500})
    b = vault.submit("payment", {"amount": 1500})
    assert vault.reject(a.id, by="bob", reason="duplicate").status is Status.REJECTED
    assert vault.cancel(b.id).status is Status.CANCELLED
    with pytest.raises(IllegalTransitionError, match=f"request {a.id}: is rejected"):
        vault.approve(a.id, by="alice")
    with pytest.raises(RequestNotFoundError, match="hitl-vault list"):
        vault.get("20990101T000000Z-payment-000000")
    assert (vault.root / "Rejected" / f"{b.id}.md").exists()


@pytest.mark.parametrize("obstacle", ["pipe", "folder", "dangling link", "another file"])
def test_a_file_in_the_way_of_a_move_is_named_and_left_alone(vault: Vault, obstacle: str) -> None:
    """The rejected note stays where it is, and the flag names the file in the way, not the note."""
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    before = req.path.read_bytes()
    dest = vault.root / "Rejected" / req.path.name
    if obstacle == "pipe":
        os.mkfifo(dest)
    elif obstacle == "folder":
        dest.mkdir()
    elif obstacle == "dangling link":
        dest.symlink_to(vault.root / "nowhere.md")
    else:
        dest.write_bytes(b"someone else's note\n")
    kind = stat.S_IFMT(dest.lstat().st_mode)

    assert vault.reject(req.id, reason="duplicate").status is Status.REJECTED

    assert req.path.read_bytes() == before
    assert stat.S_IFMT(dest.lstat().st_mode) == kind
    where = f"Pending_Approval/{req.path.name}"
    assert [a.message for a in vault.engine.journal.attention()] == [
        f"{where}: cannot move it: Rejected/{req.path.name} already exists "
        "(remove or rename the other file with this name)"
    ]


def test_human_edit_in_the_note_is_applied_by_refresh(vault: Vault) -> None:
    """Setting `status: Yes` in the note approves it; the canonical word is written back."""
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    set_status(req.path, " Yes ", decided_by="carol")
    got = vault.engine.refresh(req.id)
    assert got.status is Status.APPROVED and got.decided_by == "carol"
    note = vault.root / "Approved" / f"{req.id}.md"
    assert "status: approved\n" in note.read_text()


def test_edit_then_approve_runs_the_edited_params(vault: Vault) -> None:
    """Params edited before approving are what is approved, and the history says what changed."""
    req = vault.submit("payment", {"amount": 1500, "recipient": "v@x.y"})
    assert req.path is not None
    text = req.path.read_text().replace("  amount: 1500", "  amount: 1000")
    req.path.write_text(text)
    with pytest.raises(ParamsChangedError, match=r"edited \(amount 1500 → 1000\) since it was"):
        vault.approve(req.id, by="alice")  # the approver may not have seen the edit
    params, sha, edited = vault.params_to_run(req.id)
    assert params == {"amount": 1000, "recipient": "v@x.y"} and edited == "amount 1500 → 1000"
    got = vault.approve(req.id, by="alice", expect=sha[:12])
    assert got.status is Status.APPROVED and got.params == {"amount": 1000, "recipient": "v@x.y"}
    assert any(
        "amount 1500 → 1000" in line for line in _history(vault.root / "Approved" / f"{req.id}.md")
    )


def test_approve_with_a_stale_hash_runs_nothing(vault: Vault) -> None:
    """``expect`` names the params the approver saw: any others are refused, nothing recorded."""
    req = vault.submit("payment", {"amount": 1500})
    seen = vault.params_to_run(req.id)[1]
    assert req.path is not None
    req.path.write_text(req.path.read_text().replace("  amount: 1500", "  amount: 9000"))
    with pytest.raises(ParamsChangedError, match=f"not {seen[:16]}"):
        vault.approve(req.id, by="alice", expect=seen)
    with pytest.raises(ParamsChangedError, match="not 1234"):
        vault.approve(req.id, by="alice", expect="1234")  # too short to mean anything
    assert vault.get(req.id).status is Status.PENDING


def test_editable_false_turns_an_edited_approval_into_a_rejection(vault_path: Path) -> None:
    """With editable: false, approving edited params rejects the request and says why."""
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text().replace("    timeout: 1h\n", "    timeout: 1h\n    editable: false\n")
    )
    with Vault(vault_path) as vault:
        req = vault.submit("payment", {"amount": 1500})
        assert req.path is not None
        req.path.write_text(req.path.read_text().replace("  amount: 1500", "  amount: 9000"))
        got = vault.approve(req.id, by="alice", expect=vault.params_to_run(req.id)[1])
        assert got.status is Status.REJECTED
        assert (
            got.reason is not None
            and "editable: false" in got.reason
            and "amount 1500 → 9000" in got.reason
        )


def test_approvers_are_enforced(vault_path: Path) -> None:
    """Only a rule's approvers may decide: the API raises; a note edit is flagged, not acted on."""
    rules = vault_path / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text().replace("    timeout: 1h\n", "    timeout: 1h\n    approvers: [alice]\n")
    )
    with Vault(vault_path) as vault:
        req = vault.submit("payment", {"amount": 1500})
        with pytest.raises(NotAnApproverError, match="bob may not decide"):
            vault.approve(req.id, by="bob")
        assert req.path is not None
        set_status(req.path, "approved", decided_by="bob")
        assert vault.engine.refresh(req.id).status is Status.PENDING
        flagged = [a.message for a in vault.engine.journal.attention()]
        assert any("bob may not decide" in m for m in flagged)
        set_status(req.path, "approved", decided_by="alice")
        assert vault.engine.refresh(req.id).status is Status.APPROVED
        assert vault.engine.journal.attention() == []


def test_typo_is_flagged_then_restored_with_a_history_line(vault: Vault) -> None:
    """`status: aproved` is never acted on; the true status comes back with a line saying why."""
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    set_status(req.path, "aproved")
    assert vault.engine.refresh(req.id).status is Status.PENDING
    [flag] = vault.engine.journal.attention()
    assert 'unknown status "aproved" (use approved or rejected)' in flag.message
    assert flag.message.startswith(f"Pending_Approval/{req.id}.md line 3:")
    assert vault.engine.notes.sync(req.id, vault.engine.now())
    text = req.path.read_text()
    assert "status: pending\n" in text
    assert _history(req.path)[-1].endswith('· kept pending · ignored status "aproved"')
    [kept] = vault.engine.journal.attention()  # listed until a human changes the note
    assert 'ignored status "aproved"; set back to pending' in kept.message


def test_moving_the_note_into_approved_counts_as_approval(vault: Vault) -> None:
    """A human dragging a pending note into Approved/ approves it."""
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    moved = vault.root / "Approved" / req.path.name
    shutil.move(req.path, moved)
    assert vault.engine.refresh(req.id).status is Status.APPROVED
    assert "status: approved\n" in moved.read_text()


async def test_wait_returns_when_a_human_edits_the_note(vault: Vault) -> None:
    """With no daemon, wait() sees an in-place save of `status: approved` and returns approved."""
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    path = req.path
    loop = asyncio.get_running_loop()
    loop.call_later(0.2, set_status, path, "approved")
    got = await asyncio.wait_for(vault.wait(req.id), 20)
    assert got.status is Status.APPROVED
    assert _moves(vault.root / "Approved" / path.name) == [
        "created → pending",
        "pending → approved",
    ]


async def test_wait_sees_a_rename_save(vault: Vault) -> None:
    """A temp-file-then-rename save (vim, sync tools) is seen too."""
    req = vault.submit("payment", {"amount": 1500})
    assert req.path is not None
    text = req.path.read_text().replace("status: pending", "status: rejected")
    asyncio.get_running_loop().call_later(0.2, save_by_rename, req.path, text)
    got = await asyncio.wait_for(vault.wait(req.id), 20)
    assert got.status is Status.REJECTED


async def test_wait_times_out_and_expiry_is_applied(vault_path: Path) -> None:
    """wait(timeout=) raises while pending; at `expires` the waiter itself times the request out."""
    now = [utcnow()]
    with Vault(vault_path, clock=lambda: now[0]) as vault:
        req = vault.submit("payment", {"amount": 1500}, timeout="1h")
        with pytest.raises(WaitTimeoutError, match="still pending"):
            await vault.wait(req.id, timeout=0.1)
        now[0] += timedelta(hours=1, seconds=1)
        got = await asyncio.wait_for(vault.wait(req.id), 20)
    assert got.status is Status.TIMED_OUT
    assert (vault_path / "Rejected" / f"{req.id}.md").exists()


def test_two_waiters_record_a_decision_once(vault_path: Path) -> None:
    """Two processes' vaults seeing the same human decision journal it exactly once."""
    with Vault(vault_path) as a, Vault(vault_path) as b:
        req = a.submit("payment", {"amount": 1500})
        assert req.path is not None
        set_status(req.path, "approved")
        barrier = threading.Barrier(2)

        def look(v: Vault) -> None:
            barrier.wait()
            v.engine.refresh(req.id)

        threads = [threading.Thread(target=look, args=(v,)) for v in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [t.to_status for t in a.get(req.id).history] == [Status.PENDING, Status.APPROVED]
        assert a.verify() == []


async def test_approval_context_records_execution(vault: Vault) -> None:
    """approval(): executing on entry, executed with the result on exit."""
    async with vault.approval("payment", {"amount": 20}) as req:
        assert vault.get(req.id).status is Status.EXECUTING
        req.result = "txn 9921"
    got = vault.get(req.id)
    assert got.status is Status.EXECUTED and got.result == "txn 9921"
    assert [t.to_status for t in got.history][-2:] == [Status.EXECUTING, Status.EXECUTED]
    assert got.path is not None and got.path.parent.name == "Done"


async def test_approval_context_records_failure_and_refusal(vault: Vault) -> None:
    """An exception inside approval() marks it failed; a blocked action raises Rejected."""
    with pytest.raises(ZeroDivisionError):
        async with vault.approval("payment", {"amount": 20}) as req:
            1 / 0  # noqa: B018
    got = vault.get(req.id)
    assert got.status is Status.FAILED and got.error == "ZeroDivisionError: division by zero"
    with pytest.raises(Rejected, match="Shell commands are blocked"):
        async with vault.approval("shell", {"cmd": "ls"}):
            pytest.fail("a rejected request must not run")


async def test_approval_raises_timed_out(vault: Vault) -> None:
    """A request nobody decides raises TimedOut from approval()."""
    with pytest.raises(TimedOut):
        async with vault.approval("payment", {"amount": 1500}, timeout="1s"):
            pytest.fail("a timed-out request must not run")


def test_requires_approval_sync_function(vault: Vault) -> None:
    """A decorated sync function asks first and runs with the params (summary formatted)."""
    calls: list[tuple[str, float]] = []

    @vault.requires_approval("payment", summary="Pay {recipient} ${amount}")
    def pay(recipient: str, amount: float) -> str:
        calls.append((recipient, amount))
        return f"paid {amount}"

    assert pay("v@x.y", 20) == "paid 20"
    assert calls == [("v@x.y", 20)]
    [req] = vault.list(status=Status.EXECUTED)
    assert req.summary == "Pay v@x.y $20" and req.result == "paid 20"


async def test_requires_approval_async_function_waits_for_a_human(vault: Vault) -> None:
    """A decorated async function waits for the human and runs with the params as edited."""

    @vault.requires_approval("payment")
    async def pay(recipient: str, amount: float) -> str:
        return f"paid {amount} to {recipient}"

    def approve_with_edit() -> None:
        [pending] = vault.list(status="pending")
        assert pending.path is not None
        text = pending.path.read_text().replace("amount: 1500", "amount: 1200")
        pending.path.write_text(text.replace("status: pending", "status: approved"))

    asyncio.get_running_loop().call_later(0.3, approve_with_edit)
    assert await asyncio.wait_for(pay("v@x.y", 1500), 20) == "paid 1200 to v@x.y"


def test_callable_rule(vault: Vault) -> None:
    """vault.rule(fn) can block what the file would allow."""

    @vault.rule
    def no_weekend_payments(proposal: object) -> Decision | None:
        return Decision.BLOCK if getattr(proposal, "params", {}).get("weekend") else None

    assert vault.submit("payment", {"amount": 5, "weekend": True}).status is Status.REJECTED
    assert vault.submit("payment", {"amount": 5}).status is Status.APPROVED


def test_verify_names_disagreements(vault: Vault) -> None:
    """verify passes on a clean vault and names the file when a note's status or history is off."""
    req = vault.submit("payment", {"amount": 1500})
    vault.approve(req.id, by="alice")
    assert vault.verify() == []
    note = vault.root / "Approved" / f"{req.id}.md"
    text = note.read_text()
    note.write_text(text.replace("status: approved", "status: executed"))
    problems = vault.verify()
    assert any(p.startswith(f"Approved/{req.id}.md: status says 'executed'") for p in problems)
    note.write_text(
        "\n".join(line for line in text.splitlines() if "pending → approved" not in line) + "\n"
    )
    assert any("history lacks journal entry" in p for p in vault.verify())
