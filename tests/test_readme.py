"""Every Python and shell snippet in the README runs, in order, against one real vault.

The quick start's two commands install packages, so `.ci/run` runs them instead
(see `.ci/run`). The "human" in the examples is a thread that approves every
pending payment of 1500, the amount the examples wait on.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_vault import Status, Vault
from hitl_vault.errors import IllegalTransitionError
from hitl_vault.notes.file import parse_note
from hitl_vault.policy.rules import Proposal
from hitl_vault.policy.rulesfile import parse_policy

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"(?ms)^```(\w+)\n(.*?)^```$")


def blocks(language: str) -> list[str]:
    return [body for lang, body in BLOCK.findall(README.read_text()) if lang == language]


def quick_start() -> list[str]:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [body for lang, body in BLOCK.findall(section) if lang == "sh"]


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    subprocess.run(
        [sys.executable, "-m", "hitl_vault", "init", "vault"], cwd=tmp_path, check=True,
        capture_output=True,
    )  # fmt: skip
    stop = threading.Event()

    def human() -> None:
        with Vault(tmp_path / "vault") as vault:
            while not stop.wait(0.02):
                for r in vault.list(status=Status.PENDING):
                    if r.params.get("amount") == 1500:
                        with contextlib.suppress(IllegalTransitionError):
                            vault.approve(r.id, by="alice")

    thread = threading.Thread(target=human)
    thread.start()
    try:
        yield tmp_path
    finally:
        stop.set()
        thread.join()


def test_the_quick_start_is_two_commands() -> None:
    """The README's quick start is two commands (install and run; install and test), run by CI."""
    install_and_run, install_and_test = quick_start()
    assert install_and_run.strip().endswith("hitl-vault run")
    assert "pip install '.[test]'" in install_and_test and "pytest" in install_and_test
    ci = (README.parent / ".ci" / "run").read_text()
    assert "Quick start" in ci, ".ci/run must run the README's quick start commands"


def test_shell_and_python_snippets_run_in_order(workdir: Path) -> None:
    """Every sh and python snippet after the quick start runs, in order, against one vault."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    env.pop("HITL_VAULT", None)
    ran = 0
    text = README.read_text().split("## Quick start", 1)[1].split("\n## ", 1)[1]
    for lang, body in BLOCK.findall(text):
        if lang == "sh":
            proc = subprocess.run(
                ["bash", "-euo", "pipefail", "-c", body], cwd=workdir, env=env,
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        elif lang == "python":
            proc = subprocess.run(
                [sys.executable, "-c", body], cwd=workdir, env=env,
                capture_output=True, text=True, timeout=120,
            )  # fmt: skip
        else:
            continue
        assert proc.returncode == 0, f"{lang} snippet failed:\n{body}\n{proc.stdout}{proc.stderr}"
        assert "Traceback" not in proc.stderr, proc.stderr
        ran += 1
    assert ran >= 10
    with Vault(workdir / "vault") as vault:
        assert vault.verify() == []
        statuses = {r.status for r in vault.list()}
    assert {Status.EXECUTED, Status.REJECTED, Status.PENDING} <= statuses


def test_the_rules_example_is_a_valid_rules_file() -> None:
    """The README's rules example is a valid rules file with the rules and action it shows."""
    rules, _ = [b for b in blocks("yaml") if "rules:" in b]
    policy = parse_policy(rules, "README.md")
    assert [r.name for r in policy.rules][:2] == ["small-payments", "large-payments"]
    assert "payment" in policy.actions


def test_the_who_can_approve_example_says_who_decides() -> None:
    """The README's several-approvers example: two of three, lead then finance, escalation."""
    (rules,) = [b for b in blocks("yaml") if "groups:" in b]
    policy = parse_policy(rules, "README.md")
    deploy = policy.evaluate(Proposal("deploy", {})).plan
    assert deploy.stages[0].quorum == 2 and deploy.prevent_self_approval
    assert deploy.stages[0].approvers == {"alice", "bob", "carol"}
    wire = policy.evaluate(Proposal("wire", {})).plan
    assert [(s.name, s.approvers) for s in wire.stages] == [
        ("lead", {"alice", "bob"}),
        ("finance", {"alice", "bob"}),
    ]
    hotfix = policy.evaluate(Proposal("hotfix", {})).plan
    assert hotfix.escalate_to == {"dave"} and not hotfix.by_votes


def test_the_request_example_parses_strictly() -> None:
    """The README's example note parses strictly: a pending payment of 1500."""
    (note,) = blocks("markdown")
    parsed = parse_note(note.encode(), "README.md")
    assert parsed.meta["status"] == "pending" and parsed.meta["params"]["amount"] == 1500


def test_the_service_examples_run_the_daemon() -> None:
    """The README's systemd unit and launchd plist start `hitl-vault ... run`."""
    (unit,) = blocks("ini")
    assert re.search(r"(?m)^ExecStart=\S+/hitl-vault --vault \S+ run$", unit)
    (plist,) = blocks("xml")
    args = [e.text for e in ET.fromstring(plist.split("\n", 2)[2]).iter("string")]
    assert args[-1] == "run" and args[1].endswith("/hitl-vault")
