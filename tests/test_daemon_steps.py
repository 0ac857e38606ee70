"""The daemon's step as a whole: what it tells Dashboard.md at once, which path queues an
approval, and when each part says the daemon must next wake (all with injected time)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from hitl_vault import Status, Vault
from hitl_vault.daemon.loop import Daemon

from .helpers import TEMPLATE_QUIET, Clock, VaultHelper, ended, eventually


@contextmanager
def refusing_new_files(folder: Path) -> Iterator[None]:
    """``chattr +i``: a folder even root may not add a file to (skips where the file system
    cannot). The tests run as root, whom ``chmod`` does not stop."""
    chattr = shutil.which("chattr")
    if chattr is None or subprocess.run([chattr, "+i", str(folder)]).returncode != 0:
        pytest.skip("this file system cannot make a folder refuse new files")
    try:
        yield
    finally:
        subprocess.run([chattr, "-i", str(folder)], check=True)


# --- Needs attention, at once ----------------------------------------------------------------


def test_a_move_the_system_refuses_is_on_the_dashboard_in_the_same_step_and_stays(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str], helper: VaultHelper
) -> None:
    """A note that may not move into Done/ is on Dashboard.md after the step that failed (even
    under a second after the last rewrite), and stays there when the daemon sees its own
    half-done write; it leaves once the move is made."""
    vault = clocked_vault
    request = vault.submit("payment", {"amount": 1500})
    vault.approve(request.id, by="alice")
    daemon.run_once(clock.now)
    eventually(lambda: ran == [request.id])
    ended(daemon, clock, request.id, Status.EXECUTED)
    note = vault.root / "Approved" / f"{request.id}.md"
    with refusing_new_files(vault.root / "Done"):
        clock.advance(TEMPLATE_QUIET - timedelta(milliseconds=500))
        proposal = vault.root / "Inbox" / "rent.json"
        proposal.write_text('{"action": "payment", "params": {"amount": 1600}}')
        daemon.notice(proposal)
        daemon.run_once(clock.now)  # a new request: Dashboard.md is rewritten ...
        daemon.run_once(clock.advance(timedelta(milliseconds=600)))  # ... 0.6 s before this
        shown = helper.attention()  # no step in between
        assert f"Approved/{request.id}.md: cannot bring the note up to date" in shown
        assert "Operation not permitted" in shown and "may write" in shown

        daemon.notice(note)  # the new content was written in place before the move failed
        daemon.run_once(clock.advance(timedelta(milliseconds=100)))
        assert f"Approved/{request.id}.md" in helper.attention(daemon, clock)
    daemon.run_once(clock.advance(timedelta(seconds=30)))  # the retry of the refused write
    assert (vault.root / "Done" / f"{request.id}.md").exists()
    assert "Nothing needs attention" in helper.attention(daemon, clock)
