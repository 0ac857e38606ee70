"""Nothing broken stops the daemon and nothing is lost: values Python cannot hold, a journal
another process holds, a rules file half saved, a folder that refuses a move, a stop mid-burst.

Each test is a promise in the README ("Crashes, bad files and sync conflicts") that an
attack on the daemon once broke.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from hitl_vault import Status, Vault
from hitl_vault.cli.main import cli
from hitl_vault.daemon.loop import Daemon
from hitl_vault.daemon.quiet import RETRY_WRITE
from hitl_vault.errors import RulesError, UsageError
from hitl_vault.policy.rulesfile import parse_policy
from hitl_vault.times import utcnow

from .helpers import (
    LOG_PREAMBLE,
    QUIET,
    TEMPLATE_QUIET,
    Clock,
    DaemonProcess,
    VaultHelper,
    add_param,
    ended,
    eventually,
    set_status,
)

LONG_INT = "1" * 5000  # Python reads at most 4,300 digits as an int
BAD_VALUES = {
    "impossible-date": "due: 2026-02-30",
    "thirteenth-month": "due: 2026-13-01",
    "hour-25": "at: 2026-01-01T25:00:00Z",
    "long-number": f"n: {LONG_INT}",
}


# --- 1. one bad value never stops catch-up ------------------------------------------------


@pytest.mark.process
@pytest.mark.parametrize("bad", BAD_VALUES.values(), ids=BAD_VALUES.keys())
def test_a_value_python_cannot_hold_never_stops_run_once(
    vault_path: Path, bad: str, helper: VaultHelper
) -> None:
    """A note with ``2026-02-30`` or a 5,000-digit number is flagged; approvals still run."""
    helper.set_quiet(QUIET)  # run --once then waits 200 ms, not 2 s, before writing notes
    (vault_path / "Approved" / "notes.md").write_text(f"---\n{bad}\n---\nx\n")
    submitted = helper.hitl("submit", "payment", "-p", "amount=2500", "-p", "recipient=v@e")
    request_id = submitted.stdout.split()[0]
    set_status(vault_path / "Pending_Approval" / f"{request_id}.md", "approved")

    done = helper.hitl("run", "--once")

    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    with Vault(vault_path) as vault:
        assert vault.get(request_id).status is Status.EXECUTED
    dashboard = (vault_path / "Dashboard.md").read_text()
    assert re.search(r"Approved/notes\.md line 2: .*(date|number).*quote", dashboard)
    verified = helper.hitl("verify")
    assert verified.returncode == 0 and "Traceback" not in verified.stderr


@pytest.mark.process
def test_a_request_note_with_a_bad_value_is_named_by_verify(
    vault_path: Path, helper: VaultHelper
) -> None:
    """``verify`` names the note and the line of a value it cannot read, without a traceback."""
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 1500})
    assert request.path is not None
    text = request.path.read_text().replace("params:\n", "due: 2026-02-30\nparams:\n", 1)
    request.path.write_text(text)

    verified = helper.hitl("verify")

    assert verified.returncode == 1
    assert "Traceback" not in verified.stderr
    said = verified.stdout + verified.stderr
    assert re.search(rf"{request.id}\.md line \d+: '2026-02-30' reads as a date", said)


def test_bad_numbers_and_nesting_in_inbox_proposals_are_flagged(
    daemon: Daemon, clock: Clock, helper: VaultHelper
) -> None:
    """Each broken proposal is flagged on its own; the good one beside them becomes a request."""
    inbox = daemon.engine.root / "Inbox"
    broken = {
        "long.json": f'{{"action": "payment", "params": {{"amount": {LONG_INT}}}}}',
        "deep.json": '{"action": "payment", "params": {"a": '
        + "[" * 100_000
        + "]" * 100_000
        + "}}",
        "date.md": "---\naction: payment\nparams:\n  amount: 5\n  on: 2026-02-30\n---\n",
        "deep-params.json": json.dumps(
            {"action": "payment", "params": {"a": json.loads("[" * 200 + "]" * 200)}}
        ),
    }
    for name, text in broken.items():
        (inbox / name).write_text(text)
    (inbox / "good.json").write_text('{"action": "payment", "params": {"amount": 1500}}')
    for name in [*broken, "good.json"]:
        daemon.notice(inbox / name)

    daemon.run_once(clock.now)

    assert [r.params for r in daemon.engine.list()] == [{"amount": 1500}]
    attention = helper.attention(daemon, clock)
    for name in broken:
        assert f"Inbox/{name}" in attention
        assert (inbox / name).read_text() == broken[name]
    assert "nested" in attention and "date" in attention


def test_durations_past_a_hundred_years_are_refused_with_the_fix(vault_path: Path) -> None:
    """``99999999999d`` in the rules file, on the CLI or in the API is an error, not a crash."""
    with pytest.raises(RulesError, match=r"line 2: .*99999999999d.*not a positive duration"):
        parse_policy("defaults:\n  timeout: 99999999999d\n")
    with Vault(vault_path) as vault, pytest.raises(UsageError, match="100 years"):
        vault.submit("payment", {"amount": 1500}, timeout="99999999999d")
    result = CliRunner().invoke(
        cli, ["--vault", str(vault_path), "submit", "payment", "--timeout", "1e999d"]
    )
    assert result.exit_code == 2 and "not a duration" in result.output
    result = CliRunner().invoke(
        cli, ["--vault", str(vault_path), "submit", "payment", "--timeout", "99999999999d"]
    )
    assert result.exit_code == 2 and "36500d" in result.output


def test_a_number_too_long_for_python_is_compared_by_its_size(vault_path: Path) -> None:
    """``-p amount=<5,000 digits>`` stays the text typed, and still counts as >= 500."""
    runner = CliRunner()
    result = runner.invoke(
        cli, ["--vault", str(vault_path), "submit", "payment", "-p", f"amount={LONG_INT}", "--json"]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["status"] == "pending" and shown["rule"] == "large-payments"
    assert shown["params"]["amount"] == LONG_INT
    deep = '{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"
    result = runner.invoke(
        cli, ["--vault", str(vault_path), "submit", "payment", "--params-json", deep]
    )
    assert result.exit_code == 2 and "nested too deeply" in result.output
    with Vault(vault_path) as vault, pytest.raises(UsageError, match="too long"):
        vault.submit("payment", {"amount": 10**5000})


# --- 2. a date in edited params never loses the approval ---------------------------------


def test_a_date_typed_into_params_while_approving_is_flagged_then_runs_once_quoted(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """The human is told to quote the date; the quoted approval runs with it as text."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 1500})
    assert request.path is not None
    add_param(request.path, "pay_on: 2026-12-01")
    set_status(request.path, "approved")
    daemon.notice(request.path)

    daemon.run_once(clock.now)

    assert vault.get(request.id).status is Status.PENDING and ran == []
    attention = helper.attention(daemon, clock)
    assert re.search(r"line \d+: params\.pay_on reads as a date.*quote it", attention)
    # Once quiet, the note shows why the approval was not taken (not a silent drop).
    daemon.run_once(clock.advance(TEMPLATE_QUIET))
    text = request.path.read_text()
    assert "status: pending" in text
    assert re.search(r'ignored status "approved": params\.pay_on reads as a date', text)

    text = text.replace("pay_on: 2026-12-01", 'pay_on: "2026-12-01"')
    request.path.write_text(text.replace("status: pending", "status: approved", 1))
    daemon.notice(request.path)
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    eventually(lambda: ran == [request.id])
    assert vault.get(request.id).params == {"amount": 1500, "pay_on": "2026-12-01"}


def test_approve_on_the_cli_names_the_date_and_the_fix(vault_path: Path) -> None:
    """``hitl-vault approve`` refuses a date in the note's params with the note, line and fix."""
    with Vault(vault_path) as vault:
        request = vault.submit("payment", {"amount": 1500})
    assert request.path is not None
    add_param(request.path, "pay_on: 2026-12-01")

    result = CliRunner().invoke(cli, ["--vault", str(vault_path), "approve", request.id])

    assert result.exit_code == 1
    assert re.search(rf"{request.id}\.md line \d+: params\.pay_on reads as a date", result.output)
    assert 'quote it to keep it: "2026-12-01"' in result.output
    with Vault(vault_path) as vault:
        assert vault.get(request.id).status is Status.PENDING


# --- 3. a transient error is retried as soon as it clears -----------------------------------


def test_a_journal_held_by_another_process_delays_a_decision_but_never_drops_it(
    clocked_vault: Vault,
    daemon: Daemon,
    clock: Clock,
    ran: list[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The step fails while the journal is held; nothing is logged as done; it lands once free."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 1500})
    assert request.path is not None
    vault.engine.journal.wait_for_lock(0.1)
    set_status(request.path, "approved")
    other = sqlite3.connect(vault.root / ".hitl" / "journal.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing, for longer than we wait
    caplog.set_level(logging.INFO, logger="hitl_vault")
    try:
        daemon.notice(request.path)
        daemon.run_once(clock.now)
        assert "pending → approved" not in caplog.text  # never said of a rolled-back step
        assert "locked" in caplog.text
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert vault.get(request.id).status is Status.PENDING

    daemon.run_once(clock.advance(timedelta(seconds=1)))  # the retry, 0.5 s after the failure

    eventually(lambda: ran == [request.id])
    assert caplog.text.count(f"{request.id} · pending → approved") == 1


# --- 5. stopping or crashing during a burst ------------------------------------------------

SLOW = (
    LOG_PREAMBLE
    + """\
append("started.log", request["id"])
time.sleep(1.5)
append("ended.log", request["id"])
"""
)


def _slow_vault(helper: VaultHelper, count: int) -> list[str]:
    """``count`` approved ``slow`` actions, each taking 1.5 s, and no daemon yet."""
    (helper.scripts / "slow.py").write_text(SLOW)
    helper.set_quiet(QUIET)
    rules = helper.rules
    text = rules.read_text()
    text = text.replace(
        "actions:\n",
        f"actions:\n  slow:\n    run: [{sys.executable}, scripts/slow.py]\n    timeout: 60s\n",
        1,
    )
    text = text.replace(
        "rules:\n", "rules:\n  - name: slow\n    action: slow\n    decision: allow\n", 1
    )
    rules.write_text(text)
    with Vault(helper.root) as v:
        return [v.submit("slow", {"n": i}).id for i in range(count)]


def _statuses(vault: Path, ids: list[str]) -> dict[Status, int]:
    with Vault(vault) as v:
        found = [v.get(i).status for i in ids]
    return {s: found.count(s) for s in set(found)}


@pytest.mark.process
def test_sigterm_during_a_burst_finishes_what_runs_and_starts_nothing_new(
    vault_path: Path, helper: VaultHelper
) -> None:
    """On SIGTERM the 4 running actions finish; the other 8 stay approved and run next time."""
    ids = _slow_vault(helper, 12)
    with DaemonProcess(vault_path) as daemon:
        eventually(lambda: len(helper.runs("started.log")) >= 4, 30)
        assert daemon.stop() == 0
    assert len(helper.runs("started.log")) == 4  # nothing started after the signal
    assert _statuses(vault_path, ids) == {Status.EXECUTED: 4, Status.APPROVED: 8}

    assert helper.hitl("run", "--once").returncode == 0

    assert _statuses(vault_path, ids) == {Status.EXECUTED: 12}
    assert sorted(helper.runs("ended.log")) == sorted(ids)


# A stop that needs a lock the main thread holds when the signal comes: the daemon's loop
# holds a threading.Event's lock for a moment each time it waits on or clears one, and a
# leader's stop takes the leadership's. The signal's handler runs in that thread, there.
SIGNALLED_INSIDE_A_LOCK = """
import os, signal, threading
from hitl_vault.daemon.signals import stop_on_signals
lock, stopped = threading.Lock(), threading.Event()
def stop():
    with lock:
        stopped.set()
restore = stop_on_signals(stop)
with lock:
    os.kill(os.getpid(), signal.SIGTERM)
    sum(range(100_000))  # bytecodes: the handler runs among them, the lock held
assert stopped.wait(20), "stop was never called"
restore()
print("stopped")
"""


@pytest.mark.process
def test_a_sigterm_that_comes_while_the_main_thread_holds_a_lock_still_stops() -> None:
    """The first SIGTERM calls the daemon's ``stop`` wherever the main thread was. A handler
    that called it there waited forever for a lock that thread held: the daemon never
    stopped, and only a second signal (its exit at once) ended it."""
    done = subprocess.run(
        [sys.executable, "-c", SIGNALLED_INSIDE_A_LOCK], capture_output=True, text=True, timeout=60
    )
    assert (done.returncode, done.stdout.strip()) == (0, "stopped"), done.stderr


@pytest.mark.process
def test_a_kill_during_a_burst_interrupts_only_the_actions_that_had_started(
    vault_path: Path, helper: VaultHelper
) -> None:
    """After kill -9, only the 4 started actions read "interrupted"; the 8 queued run once."""
    ids = _slow_vault(helper, 12)
    with DaemonProcess(vault_path) as daemon:
        eventually(lambda: len(helper.runs("started.log")) >= 4, 30)
        daemon.kill()
    running = set(helper.runs("started.log"))

    assert helper.hitl("run", "--once").returncode == 0

    with Vault(vault_path) as vault:
        failed = {r.id for r in vault.list(status=Status.FAILED)}
        executed = {r.id for r in vault.list(status=Status.EXECUTED)}
    assert failed == running and len(failed) == 4
    assert executed == set(ids) - running
    assert all("interrupted" in (Vault(vault_path).get(i).error or "") for i in failed)


# --- 8. smaller promises ----------------------------------------------------------------


def test_a_rules_file_is_reloaded_only_once_quiet(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """A half-saved hitl-vault.yaml is never loaded: the rules change once the save is quiet."""
    vault = clocked_vault
    rules = vault.root / "hitl-vault.yaml"
    full = rules.read_text()
    edited = full.replace('amount: "< 500"', 'amount: "< 5000"')
    edited = edited.replace('amount: ">= 500"', 'amount: ">= 5000"')
    assert edited != full
    loaded = vault.policy
    rules.write_text(full[: full.index("large-payments")])  # an editor mid-save: truncated
    daemon.notice(rules)
    daemon.run_once(clock.now)
    assert vault.policy is loaded
    rules.write_text(edited)
    daemon.notice(rules)
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    assert vault.policy is loaded

    daemon.run_once(clock.advance(TEMPLATE_QUIET))

    assert vault.policy is not loaded
    assert vault.submit("payment", {"amount": 1500}).status is Status.APPROVED


@pytest.mark.process
def test_an_executor_added_to_the_rules_runs_what_was_already_approved(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """An approval resting in Approved/ for want of an executor runs once the rules give one."""
    vault = clocked_vault
    request = vault.submit("ship", {"box": 1})
    vault.approve(request.id, by="alice")
    daemon.run_once(clock.now)
    assert vault.get(request.id).status is Status.APPROVED
    (vault.root / "scripts" / "ship.py").write_text("print('shipped')\n")
    rules = vault.root / "hitl-vault.yaml"
    rules.write_text(
        rules.read_text().replace(
            "actions:\n", f"actions:\n  ship:\n    run: [{sys.executable}, scripts/ship.py]\n", 1
        )
    )
    daemon.notice(rules)
    daemon.run_once(clock.now)

    daemon.run_once(clock.advance(TEMPLATE_QUIET))

    ended(daemon, clock, request.id, Status.EXECUTED)
    assert vault.get(request.id).result == "shipped"


def _immutable(folder: Path, on: bool) -> bool:
    """``chattr +i``: a folder even root may not add to (False where the file system can't)."""
    if shutil.which("chattr") is None:
        return False
    flag = "+i" if on else "-i"
    return subprocess.run(["chattr", flag, str(folder)], capture_output=True).returncode == 0


@pytest.mark.process
def test_a_move_the_system_refuses_is_flagged_and_tried_again(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """A note that may not move into Done/ is listed with the reason; it moves once allowed."""
    vault = clocked_vault
    done = vault.root / "Done"
    if not _immutable(done, True):
        pytest.skip("this file system cannot make a folder refuse new files")
    try:
        request = vault.submit("payment", {"amount": 1500})
        vault.approve(request.id, by="alice")
        daemon.run_once(clock.now)
        eventually(lambda: ran == [request.id])
        ended(daemon, clock, request.id, Status.EXECUTED)
        daemon.run_once(clock.advance(TEMPLATE_QUIET))
        attention = helper.attention(daemon, clock)
        assert f"Approved/{request.id}.md" in attention
        assert "Operation not permitted" in attention and "may write" in attention
    finally:
        _immutable(done, False)

    daemon.run_once(clock.advance(RETRY_WRITE))

    assert (done / f"{request.id}.md").exists()
    assert "Nothing needs attention" in helper.attention(daemon, clock)


def test_a_dashboard_that_cannot_be_written_reports_every_new_problem(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """Dashboard.md replaced by a folder: each change it misses is an error naming the files."""
    vault = clocked_vault
    dashboard = vault.root / "Dashboard.md"
    dashboard.unlink()
    dashboard.mkdir()
    caplog.set_level(logging.ERROR, logger="hitl_vault")
    for n, name in enumerate(["one.md", "two.md"]):
        broken = vault.root / "Pending_Approval" / name
        broken.write_text("no frontmatter\n")
        # The note's own time counts (a save is quiet once ``quiet`` old): a slow set-up
        # must not leave the test's clock behind it.
        clock.now = max(clock.now, utcnow())
        daemon.notice(broken)
        daemon.run_once(clock.advance(timedelta(seconds=TEMPLATE_QUIET.total_seconds() + 1)))
        daemon.run_once(clock.advance(timedelta(seconds=1)))
        errors = [r.getMessage() for r in caplog.records if "Dashboard.md" in r.getMessage()]
        assert len(errors) >= n + 1
        assert f"Pending_Approval/{name}" in errors[-1]


@pytest.mark.process
def test_a_damaged_journal_is_named_with_the_fix_by_every_command(
    vault_path: Path, helper: VaultHelper
) -> None:
    """``list``, ``show``, ``verify``, ``run --once`` on a damaged journal: one line, no trace."""
    with Vault(vault_path) as vault:
        request_id = vault.submit("payment", {"amount": 1500}).id
    journal = vault_path / ".hitl" / "journal.db"
    with open(journal, "r+b") as f:
        f.write(b"not a database" * 10)
    for args in (["list"], ["show", request_id], ["verify"], ["run", "--once"]):
        result = helper.hitl(*args)
        assert result.returncode == 1, args
        assert "Traceback" not in result.stderr
        assert "journal.db: the journal cannot be read" in result.stderr
        assert "restore .hitl/" in result.stderr


def test_a_note_too_big_to_read_back_is_never_written(vault: Vault) -> None:
    """Params that would make a note over 1 MiB are refused before anything is recorded."""
    with pytest.raises(UsageError, match="over the 1,048,576 a note may hold"):
        vault.submit("payment", {"amount": 1500, "memo": "x" * (1024 * 1024)})
    assert vault.list() == []
    assert list((vault.root / "Pending_Approval").glob("2*.md")) == []


def test_the_same_proposal_dropped_again_later_is_a_new_request(
    daemon: Daemon, clock: Clock
) -> None:
    """A monthly cron job dropping the same rent.json: one request each time, none lost."""
    inbox = daemon.engine.root / "Inbox"
    text = '{"action": "payment", "params": {"amount": 1200}, "summary": "Rent"}'
    for month in (1, 2):
        (inbox / "rent.json").write_text(text)
        daemon.notice(inbox / "rent.json")
        daemon.run_once(clock.advance(timedelta(days=30)))
        assert not (inbox / "rent.json").exists()
        assert len(daemon.engine.list()) == month


def test_a_proposal_left_behind_after_its_request_was_made_is_not_taken_twice(
    daemon: Daemon, clock: Clock
) -> None:
    """A crash between making the request and removing the file: the file is only removed.

    The file a crash leaves is the same file (inode and modification time): a hard
    link kept aside and linked back after the daemon removed it is exactly that.
    """
    inbox = daemon.engine.root / "Inbox"
    rent = inbox / "rent.json"
    rent.write_text('{"action": "payment", "params": {"amount": 1200}}')
    kept = daemon.engine.root / "kept-rent.json"
    os.link(rent, kept)
    daemon.notice(rent)
    daemon.run_once(clock.now)
    assert not rent.exists() and len(daemon.engine.list()) == 1
    os.link(kept, rent)
    daemon.notice(rent)

    daemon.run_once(clock.advance(timedelta(seconds=5)))

    assert not rent.exists()
    assert len(daemon.engine.list()) == 1


def test_a_rules_error_replaced_by_another_shows_only_the_new_one(
    daemon: Daemon, clock: Clock, helper: VaultHelper
) -> None:
    """Needs attention shows the rules file's current error, never one already fixed."""
    rules = daemon.engine.root / "hitl-vault.yaml"
    good = rules.read_text()
    for typo in ("decision: alow", "decision: blok"):
        rules.write_text(good.replace("decision: allow", typo, 1))
        daemon.notice(rules)
        daemon.run_once(clock.now)
        daemon.run_once(clock.advance(TEMPLATE_QUIET))
        attention = helper.attention(daemon, clock)
        assert typo.split()[1] in attention
    assert "alow" not in attention
    rules.write_text(good)
    daemon.notice(rules)
    daemon.run_once(clock.now)
    daemon.run_once(clock.advance(TEMPLATE_QUIET))
    assert "hitl-vault.yaml" not in helper.attention(daemon, clock)


def test_a_rules_error_fixed_while_no_daemon_ran_is_gone_at_the_next_start(
    vault_path: Path, clock: Clock, helper: VaultHelper
) -> None:
    """A daemon that starts with good rules clears the error a previous one listed."""
    rules = vault_path / "hitl-vault.yaml"
    good = rules.read_text()
    with Vault(vault_path, clock=clock) as vault, Daemon(vault.engine, clock=clock) as first:
        first.run_once(clock.now)
        rules.write_text(good.replace("decision: allow", "decision: alow", 1))
        first.notice(rules)
        first.run_once(clock.now)
        first.run_once(clock.advance(TEMPLATE_QUIET))
        assert "alow" in helper.attention(first, clock)
    rules.write_text(good)
    with Vault(vault_path, clock=clock) as vault, Daemon(vault.engine, clock=clock) as second:
        assert "hitl-vault.yaml" not in helper.attention(second, clock)


def test_a_reason_that_looks_like_an_impossible_date_is_written_quoted(vault: Vault) -> None:
    """``--reason 2026-02-30`` is text: the note gets it quoted and reads back as written."""
    request = vault.submit("payment", {"amount": 1500})

    vault.approve(request.id, by="alice", reason="2026-02-30")

    path = vault.get(request.id).path
    assert path is not None
    assert 'reason: "2026-02-30"' in path.read_text() or "reason: '2026-02-30'" in path.read_text()
    assert vault.verify() == []
