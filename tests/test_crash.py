"""SIGKILL the real daemon at random moments during a stream of approvals, over and over.

Two executors count what really happened:

* ``pay`` (``idempotent: false``) appends the request id to ``scripts/runs.log``
  on every run: no id may appear twice; an executed request appears once; a
  request interrupted by a kill is ``failed`` with the "interrupted" error.
* ``refund`` (``idempotent: true``) appends every attempt to ``attempts.log``
  and records its idempotency key in ``effects.log`` only if it is not there
  yet, as a payment provider would: every refund ends executed, its key
  recorded exactly once, however many attempts the crashes caused.

:func:`crash_loop` is shared with ``tests/stress/crash_loop.py``, which runs
more kills and prints the figures.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hitl_vault import Request, Status, Vault
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.workers import INTERRUPTED
from hitl_vault.errors import JournalUnavailableError

from .helpers import LOG_PREAMBLE, DaemonProcess, VaultHelper, eventually, set_status

pytestmark = pytest.mark.process  # nearly every test here starts a real process

RULES = """\
defaults:
  decision: ask
  timeout: 24h
  quiet: 100ms
rules: []
actions:
  pay:
    run: [{python}, -S, scripts/once.py]
    timeout: 30s
    idempotent: false
  refund:
    run: [{python}, -S, scripts/keyed.py]
    timeout: 30s
    idempotent: true
"""
ONCE = (
    LOG_PREAMBLE
    + """\
import random
append("runs.log", request["id"])
time.sleep(random.uniform(0, 0.15))
print("paid", request["params"]["n"])
"""
)
KEYED = (
    LOG_PREAMBLE
    + """\
import fcntl, random

key = request["idempotency_key"]
append("attempts.log", key)
time.sleep(random.uniform(0, 0.15))
with open(os.path.join(here, "keys.lock"), "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
        with open(os.path.join(here, "effects.log")) as f:
            done = set(f.read().split())
    except FileNotFoundError:
        done = set()
    if key not in done:
        append("effects.log", key)
print("refunded", request["params"]["n"])
"""
)


def prepare(vault: Path) -> None:
    """A vault where everything asks, with the two counting executors."""
    if not vault.exists():
        init_vault(vault)
    (vault / "hitl-vault.yaml").write_text(RULES.format(python=sys.executable))
    (vault / "scripts" / "once.py").write_text(ONCE)
    (vault / "scripts" / "keyed.py").write_text(KEYED)


def _status_line(path: Path) -> str:
    lines = [li for li in path.read_text().splitlines() if li.startswith("status:")]
    return lines[0] if lines else "(no status)"


@dataclass
class Figures:
    kills: int = 0
    kills_before_watching: int = 0
    kills_mid_action: int = 0
    requests: int = 0
    approvals: int = 0
    executed: int = 0
    interrupted: int = 0
    refunds_run_again: int = 0
    seconds: float = 0.0
    catch_up_seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def show(self) -> str:
        return (
            f"{self.kills} kills ({self.kills_before_watching} before the daemon was watching, "
            f"{self.kills_mid_action} with an action running); {self.requests} requests, "
            f"{self.approvals} approvals; {self.executed} executed, {self.interrupted} failed "
            f"as interrupted, {self.refunds_run_again} idempotent refunds run again after a "
            f"crash; {self.seconds:.1f}s, final catch-up {self.catch_up_seconds:.1f}s"
        )


def _spawn(vault: Path, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "hitl_vault", "--vault", str(vault), "run"],
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def crash_loop(vault_path: Path, kills: int, seed: int, alive: tuple[float, float]) -> Figures:
    """Kill the daemon ``kills`` times while approving; then let it finish; check everything.

    Returns the figures; ``problems`` lists every broken guarantee (empty when all held).
    """
    prepare(vault_path)
    rng = random.Random(seed)
    figures = Figures()
    helper = VaultHelper(vault_path)
    started = time.monotonic()
    kinds: dict[str, str] = {}  # each request submitted: pay or refund
    with Vault(vault_path) as vault:
        _kill_while_approving(vault, vault_path, kills, rng, alive, figures, kinds)
        _catch_up(vault, vault_path, figures, len(kinds))
        figures.seconds = time.monotonic() - started
        runs = collections.Counter(helper.runs("runs.log"))
        effects = collections.Counter(helper.runs("effects.log"))
        attempts = collections.Counter(helper.runs("attempts.log"))
        for request_id, kind in kinds.items():
            request = vault.get(request_id)
            if kind == "pay":
                _check_pay(request, runs[request_id], figures)
            else:
                _check_refund(request, effects[request_id], attempts[request_id], figures)
            _check_note(vault_path, request, figures)
        strangers = set(runs) - set(kinds)
        if strangers:
            figures.problems.append(f"runs of unknown requests: {sorted(strangers)}")
        figures.problems += [f"verify: {p}" for p in vault.verify()]
    return figures


def _kill_while_approving(
    vault: Vault,
    vault_path: Path,
    kills: int,
    rng: random.Random,
    alive: tuple[float, float],
    figures: Figures,
    kinds: dict[str, str],
) -> None:
    """Start a daemon, submit and approve for a random while, SIGKILL it; ``kills`` times.
    What is left unapproved is approved with no daemon running."""
    log = vault_path.parent / f"crash-{vault_path.name}.log"
    waiting: list[tuple[float, Request]] = []

    def approve(req: Request) -> None:
        assert req.path is not None
        set_status(req.path, "approved", decided_by="alice")
        figures.approvals += 1

    for _ in range(kills):
        before = log.read_text(errors="replace").count("watching ") if log.exists() else 0
        proc = _spawn(vault_path, log)
        until = time.monotonic() + rng.uniform(*alive)
        while time.monotonic() < until:
            kind = rng.choice(("pay", "refund"))
            req = vault.submit(kind, {"n": figures.requests})
            figures.requests += 1
            kinds[req.id] = kind
            waiting.append((time.monotonic(), req))
            # Approve what was submitted a moment ago (approving within a millisecond of
            # the note appearing is tested in test_editors.py), in place, as in VS Code.
            while waiting and waiting[0][0] < time.monotonic() - 0.3:
                approve(waiting.pop(0)[1])
            time.sleep(rng.uniform(0.02, 0.12))  # pacing the stream, not an assertion
        executing = vault.engine.journal.ids(Status.EXECUTING)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        figures.kills += 1
        after = log.read_text(errors="replace").count("watching ")
        figures.kills_before_watching += after == before
        figures.kills_mid_action += bool(executing)
    while waiting:  # no daemon runs now
        approve(waiting.pop(0)[1])


def _catch_up(vault: Vault, vault_path: Path, figures: Figures, submitted: int) -> None:
    """The last start: it must catch up on everything and settle every note."""
    catch_up = time.monotonic()
    final = DaemonProcess(vault_path)
    final.log_path = vault_path.parent / f"final-{vault_path.name}.log"
    with final:

        def finished() -> bool:
            counts = vault.engine.journal.counts()
            return counts[Status.EXECUTED] + counts[Status.FAILED] == submitted

        with contextlib.suppress(AssertionError):  # reported below, request by request
            eventually(finished, 40)
            eventually(lambda: not any((vault_path / "Approved").glob("2*.md")), 10)
            eventually(lambda: not any((vault_path / "Pending_Approval").glob("2*.md")), 5)
        figures.catch_up_seconds = time.monotonic() - catch_up
        time.sleep(0.3)  # orphaned executors of killed daemons finish their last write
        code = final.stop()
        if code != 0:
            figures.problems.append(f"the last daemon exited {code}")


def _check_pay(request: Request, runs: int, figures: Figures) -> None:
    """A payment (not idempotent) ran at most once: executed having run once, or failed as
    interrupted."""
    status = request.status
    if runs > 1:
        figures.problems.append(f"{request.id} ran {runs} times")
    if status is Status.EXECUTED:
        figures.executed += 1
        if runs != 1:
            figures.problems.append(f"{request.id} executed but ran {runs}")
    elif status is Status.FAILED and request.error == INTERRUPTED:
        figures.interrupted += 1
    else:
        figures.problems.append(
            f"{request.id} (pay) ended {request.status} ({request.error or 'no error'})"
        )


def _check_refund(request: Request, effects: int, attempts: int, figures: Figures) -> None:
    """A refund (idempotent, keyed) executed, and its effect happened exactly once."""
    if request.status is not Status.EXECUTED:
        figures.problems.append(
            f"{request.id} (refund, idempotent) ended {request.status} ({request.error})"
        )
    else:
        figures.executed += 1
    if effects != 1:
        figures.problems.append(f"{request.id}: refund recorded {effects} times")
    figures.refunds_run_again += attempts > 1


def _check_note(vault_path: Path, request: Request, figures: Figures) -> None:
    """One note, in its status's folder, showing its status."""
    request_id, status = request.id, request.status
    note = vault_path / status.folder / f"{request_id}.md"
    others = [
        p.relative_to(vault_path).as_posix()
        for p in vault_path.glob(f"*/{request_id}.md")
        if p != note
    ]
    if not note.exists():
        figures.problems.append(
            f"{request_id} is {status} but its note is only at {others}: "
            + ", ".join(f"{o} says {_status_line(vault_path / o)}" for o in others)
        )
    elif f"status: {status}" not in note.read_text():
        figures.problems.append(f"{request_id}: its note does not show {status}")
    elif others:
        figures.problems.append(
            f"{request_id}: copies left behind besides {status.folder}/: {others}"
        )


def freeze_between_writes(proc: subprocess.Popen[bytes], vault: Vault, request_id: str) -> bool:
    """SIGSTOP the daemon, then start the request's execution as its requester would.

    A daemon frozen in the middle of a write holds the journal until it runs again (the
    requester's write then fails after its wait, as it should): thaw it a moment and
    freeze it again, until it is frozen between writes. Returns whether the execution
    started (False also if the daemon was never caught between writes).
    """
    journal = vault.engine.journal
    journal.wait_for_lock(2)
    try:
        for _ in range(30):
            proc.send_signal(signal.SIGSTOP)
            try:
                return vault.engine.start_execution(request_id, by="requester") is not None
            except JournalUnavailableError:
                proc.send_signal(signal.SIGCONT)
                time.sleep(0.1)
        return False
    finally:
        journal.wait_for_lock(30)


def test_a_report_the_killed_daemon_never_showed_reaches_the_note_after_restart(
    vault_path: Path, helper: VaultHelper
) -> None:
    """The journal moved on while the daemon was frozen, then it was killed: the restart shows it.

    A requester carries out its own approved request (``vault.approval()``'s
    steps) while the daemon is stopped with SIGSTOP, so only the journal records
    executing and executed; the daemon is then SIGKILLed. The daemon that starts
    next must bring the note, which still holds the bytes the daemon last wrote,
    up to date: ``executed``, in Done/.
    """
    prepare(vault_path)
    with Vault(vault_path) as vault:
        first = DaemonProcess(vault_path)
        first.start()
        try:
            req = vault.engine.submit("transfer", {"n": 1}, carried_by_requester=True)
            assert req.path is not None
            helper.settle()
            set_status(req.path, "approved", decided_by="alice")
            moved = vault_path / "Approved" / req.path.name
            eventually(lambda: moved.exists() and "status: approved" in moved.read_text(), 30)
            assert first.proc is not None
            assert freeze_between_writes(first.proc, vault, req.id)
            vault.engine.show_in_note(
                req.id, vault.engine.now()
            )  # a daemon holds the lock: it will do it
            assert vault.engine.finish_execution(req.id, True, result="sent") is not None
            vault.engine.show_in_note(req.id, vault.engine.now())
        finally:
            first.kill()  # SIGKILL reaches a stopped process too
        second = DaemonProcess(vault_path)
        second.log_path = vault_path.parent / "second.log"
        with second:
            done = vault_path / "Done" / req.path.name
            eventually(lambda: done.exists() and "status: executed" in done.read_text(), 20)
            eventually(lambda: not moved.exists())  # a move makes the new file, then drops the old
            assert "result: sent" in done.read_text()
            assert vault.verify() == []
            assert second.stop() == 0


@pytest.mark.slow
@pytest.mark.process
def test_sigkill_at_random_moments_never_runs_anything_twice(vault_path: Path) -> None:
    """20 SIGKILLs amid a stream of approvals: nothing runs twice and every request ends right.

    .ci/run also runs the longer loop, tests/stress/crash_loop.py, outside the suite.
    """
    figures = crash_loop(vault_path, kills=20, seed=int(os.environ.get("CRASH_SEED", "5")),
                         alive=(0.05, 0.7))  # fmt: skip
    print(figures.show())
    assert figures.kills >= 20
    assert figures.kills_before_watching > 0 and figures.kills_mid_action > 0, figures.show()
    assert not figures.problems, f"{figures.show()}\n" + "\n".join(figures.problems[:20])


FAST_RULES = """\
defaults:
  decision: ask
  timeout: 24h
  quiet: 100ms
rules: []
actions:
  fast:
    run: [/bin/sh, scripts/fast.sh]
    timeout: 60s
"""
FAST = "cat > /dev/null\nprintf '%s\\n' \"$HITL_REQUEST_ID\" >> scripts/fast.log\n"


@pytest.mark.slow
@pytest.mark.process
def test_hundreds_of_approvals_saved_while_the_daemon_is_frozen_all_run_once(
    vault_path: Path,
) -> None:
    """SIGSTOP, 300 approvals saved in place (a burst of events at once), SIGCONT: all run once.

    .ci/run also runs it with 1,000 (tests/stress/frozen_daemon.py), outside the suite.
    """
    frozen_approvals(vault_path, 300)


def frozen_approvals(vault_path: Path, count: int) -> None:
    """SIGSTOP a real daemon, save ``count`` approvals in place, SIGCONT: each runs once,
    and every note reaches Done/ (shared with tests/stress/frozen_daemon.py)."""
    helper = VaultHelper(vault_path)
    (vault_path / "hitl-vault.yaml").write_text(FAST_RULES)
    (vault_path / "scripts" / "fast.sh").write_text(FAST)
    with Vault(vault_path) as vault:
        reqs = [vault.submit("fast", {"n": n}) for n in range(count)]
        with DaemonProcess(vault_path) as daemon:
            assert daemon.proc is not None
            daemon.proc.send_signal(signal.SIGSTOP)
            try:
                for req in reqs:
                    assert req.path is not None
                    set_status(req.path, "approved", decided_by="alice")
            finally:
                daemon.proc.send_signal(signal.SIGCONT)
            resumed = time.monotonic()

            def all_executed() -> bool:
                return vault.engine.journal.counts()[Status.EXECUTED] == count

            eventually(all_executed, 90)
            executed_after = time.monotonic() - resumed
            done = vault_path / "Done"
            eventually(lambda: sum(1 for _ in done.glob("2*.md")) == count, 90)
            settled_after = time.monotonic() - resumed
            print(
                f"{count} approvals caught up: all executed {executed_after:.1f}s after SIGCONT, "
                f"all notes in Done/ after {settled_after:.1f}s"
            )
            runs = collections.Counter(helper.runs("fast.log"))
            assert sorted(runs) == sorted(r.id for r in reqs)
            assert set(runs.values()) == {1}, "some ran more than once"
            for req in reqs[:: count // 20]:
                assert "status: executed" in (done / f"{req.id}.md").read_text()
            assert not any((vault_path / "Pending_Approval").glob("2*.md"))
            assert daemon.stop() == 0
