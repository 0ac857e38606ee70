"""A real `hitl-vault run` process on a real folder, driven as people and editors drive it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_vault import Status, Vault
from hitl_vault.daemon import INTERRUPTED

from .helpers import DaemonProcess, eventually, save_by_rename, set_status

RECORD = """\
import json, os, sys, time
request = json.load(sys.stdin)
with open(os.path.join(os.path.dirname(__file__), "runs.log"), "a") as f:
    f.write(request["id"] + "\\n")
if request["params"].get("hold"):
    open(os.path.join(os.path.dirname(__file__), request["id"] + ".started"), "w").close()
    time.sleep(120)
print("paid", request["params"]["amount"])
"""


@pytest.fixture
def vault_path(vault_path: Path) -> Path:
    """The template vault, with a quick quiet period and an executor that logs every run."""
    (vault_path / "scripts" / "record.py").write_text(RECORD)
    rules = vault_path / "hitl-vault.yaml"
    text = rules.read_text().replace("quiet: 2s", "quiet: 200ms")
    text = text.replace(
        "run: [python3, scripts/pay.py]", f"run: [{sys.executable}, scripts/record.py]"
    )
    rules.write_text(text)
    return vault_path


@pytest.fixture
def daemon(vault_path: Path) -> Iterator[DaemonProcess]:
    with DaemonProcess(vault_path) as d:
        yield d


def runs(vault_path: Path) -> list[str]:
    log = vault_path / "scripts" / "runs.log"
    return log.read_text().split() if log.exists() else []


def settled(vault: Vault, request_id: str, status: Status, folder: str) -> bool:
    """The journal says ``status`` and the note shows it, in ``folder`` (its only copy)."""
    path = vault.root / folder / f"{request_id}.md"
    copies = list(vault.root.glob(f"*/{request_id}.md"))
    return (
        vault.journal.status_of(request_id) is status
        and copies == [path]
        and f"status: {status}" in path.read_text(encoding="utf-8")
    )


def test_saves_in_place_by_rename_and_by_folder_move_each_run_once(
    vault_path: Path, daemon: DaemonProcess
) -> None:
    with Vault(vault_path) as vault:
        a, b, c, d = (vault.submit("payment", {"amount": 1000 + i}) for i in range(4))
        assert a.path and b.path and c.path and d.path
        set_status(a.path, "approved", decided_by="alice")  # VS Code: truncate and rewrite
        save_by_rename(b.path, b.path.read_text().replace("status: pending", "status: Yes"))
        shutil.move(c.path, vault_path / "Approved" / c.path.name)  # drag into Approved/
        set_status(d.path, "rejected", reason="not this month")
        for r in (a, b, c):
            eventually(lambda r=r: settled(vault, r.id, Status.EXECUTED, "Done"), 30)
        eventually(lambda: settled(vault, d.id, Status.REJECTED, "Rejected"), 30)
        assert sorted(runs(vault_path)) == sorted([a.id, b.id, c.id])
        done = (vault_path / "Done" / f"{a.id}.md").read_text()
        assert "result: paid 1000" in done and "pending → approved · by alice" in done
        assert "reason: not this month" in (vault_path / "Rejected" / f"{d.id}.md").read_text()
        assert vault.verify() == []
    assert daemon.stop() == 0


def test_timeout_inbox_typo_and_revert(vault_path: Path, daemon: DaemonProcess) -> None:
    with Vault(vault_path) as vault:
        late = vault.submit("payment", {"amount": 700}, timeout="1s")
        typo = vault.submit("payment", {"amount": 800})
        done = vault.submit("payment", {"amount": 900})
        assert typo.path and done.path
        (vault_path / "Inbox" / "rent.json").write_text(
            json.dumps({"action": "payment", "params": {"amount": 5}, "summary": "rent"})
        )
        set_status(typo.path, "aproved")
        set_status(done.path, "approved")
        old_approved = done.path.read_bytes()
        eventually(lambda: settled(vault, late.id, Status.TIMED_OUT, "Rejected"), 30)
        eventually(lambda: not (vault_path / "Inbox" / "rent.json").exists(), 30)
        rent = next(r for r in vault.list() if r.summary == "rent")
        eventually(lambda: settled(vault, rent.id, Status.EXECUTED, "Done"), 30)
        eventually(lambda: 'kept pending · ignored status "aproved"' in typo.path.read_text(), 30)
        assert "status: pending" in typo.path.read_text()
        eventually(lambda: settled(vault, done.id, Status.EXECUTED, "Done"), 30)
        # A git revert brings the approved version back where it was.
        (vault_path / "Done" / done.path.name).unlink()
        done.path.write_bytes(old_approved)
        eventually(lambda: settled(vault, done.id, Status.EXECUTED, "Done"), 30)
        assert "pending → approved" in (vault_path / "Done" / done.path.name).read_text()
        assert sorted(runs(vault_path)) == sorted([rent.id, done.id])
        assert "aproved" in daemon.log()
    assert daemon.stop() == 0


def test_kill_9_mid_action_then_restart_never_runs_it_again(vault_path: Path) -> None:
    with Vault(vault_path) as vault, DaemonProcess(vault_path) as daemon:
        req = vault.submit("payment", {"amount": 1500, "hold": True})
        vault.approve(req.id, by="alice")
        eventually(lambda: (vault_path / "scripts" / f"{req.id}.started").exists(), 30)
        assert vault.journal.status_of(req.id) is Status.EXECUTING
        daemon.kill()
        daemon.start()
        eventually(lambda: settled(vault, req.id, Status.FAILED, "Done"), 30)
        assert vault.get(req.id).error == INTERRUPTED
        assert runs(vault_path) == [req.id]
        assert daemon.stop() == 0


def test_a_second_daemon_on_the_same_vault_exits_with_a_clear_message(
    vault_path: Path, daemon: DaemonProcess
) -> None:
    second = subprocess.run(
        [sys.executable, "-m", "hitl_vault", "--vault", str(vault_path), "run"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    )
    assert second.returncode == 1
    assert "already running" in second.stderr
    assert "Traceback" not in second.stderr
    assert daemon.proc is not None and daemon.proc.poll() is None
