"""The vault template: what `hitl-vault init` gives a new user, in Obsidian or any editor."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from hitl_vault import Decision, Vault
from hitl_vault.cli.template import template_root
from hitl_vault.daemon.dashboard import render_dashboard
from hitl_vault.notes.state import is_candidate
from hitl_vault.policy.rules import Proposal
from hitl_vault.policy.rulesfile import parse_policy
from hitl_vault.times import utcnow

TEMPLATE = Path(__file__).resolve().parent.parent / "vault_template"


def test_every_template_file_is_installed(vault_path: Path) -> None:
    """An installed package carries the same template as the source tree."""
    shipped = {p.relative_to(TEMPLATE) for p in TEMPLATE.rglob("*") if p.is_file()}
    assert {Path(".obsidian/types.json"), Path("Approvals.base"), Path("Welcome.md")} <= shipped
    for rel in shipped:
        assert (vault_path / rel).read_bytes() == (TEMPLATE / rel).read_bytes(), rel
    assert template_root().joinpath("hitl-vault.yaml").is_file()


def test_the_dashboard_is_what_the_daemon_writes_for_an_empty_vault(vault: Vault) -> None:
    """A new vault's Dashboard.md is already what the daemon would write: no first rewrite."""
    assert (vault.root / "Dashboard.md").read_text() == render_dashboard(
        vault.engine.journal, utcnow()
    )


def test_dashboard_tables_keep_their_columns_in_obsidian(vault: Vault) -> None:
    """A link label's pipe inside a table row is escaped, or Obsidian splits the cell."""
    pending = vault.submit("payment", {"amount": 1500}, summary="Pay | INV-1 [draft]")
    text = render_dashboard(vault.engine.journal, utcnow())
    rows = [line for line in text.splitlines() if pending.id in line and line.startswith("|")]
    assert rows == [
        f"| [Pay \\| INV-1 \\[draft\\]](Pending_Approval/{pending.id}.md) | payment | high | "
        f"{pending.expires:%Y-%m-%dT%H:%M:%SZ} |"
    ]
    for line in text.splitlines():
        if line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line)
            assert len(cells) in (4, 6), line  # 2 or 4 columns between the outer pipes
    assert f"- [{pending.id}](Pending_Approval/{pending.id}.md) " in text  # not in a table


def test_folder_notes_say_what_belongs_there_and_are_never_requests(vault_path: Path) -> None:
    """Each folder's _README.md says what belongs there and is never read as a request."""
    for folder in ("Inbox", "Pending_Approval", "Approved", "Done", "Rejected"):
        note = vault_path / folder / "_README.md"
        text = note.read_text()
        assert text.startswith("---\nhitl: folder-note\n---\n") and len(text.splitlines()) > 3
        assert not is_candidate(note.relative_to(vault_path))


def test_approvals_base_has_the_three_views(vault_path: Path) -> None:
    """Approvals.base has its three views; Pending shows the key columns, sorted by expiry."""
    base = yaml.safe_load((vault_path / "Approvals.base").read_text())
    views = {v["name"]: v for v in base["views"]}
    assert set(views) == {"Pending", "Decided", "Needs attention"}
    pending = views["Pending"]
    assert pending["type"] == "table"
    assert {"status", "action", "risk", "summary", "expires"} <= set(pending["order"])
    assert pending["sort"] == [{"property": "expires", "direction": "ASC"}]
    assert "'id'" in (vault_path / "Approvals.base").read_text()  # folder notes have no id


def test_types_json_declares_every_property_a_request_note_has(vault: Vault) -> None:
    """Obsidian's types.json declares every property of a request note, dates as datetime."""
    types = json.loads((vault.root / ".obsidian" / "types.json").read_text())["types"]
    req = vault.submit("payment", {"amount": 1500})
    vault.approve(req.id, by="alice", reason="ok")
    assert req.path is not None
    note = vault.get(req.id).path
    assert note is not None
    keys = set(yaml.safe_load(note.read_text().split("---")[1])) - {"params"}
    assert keys <= set(types), keys - set(types)
    for key in ("created", "expires", "decided_at", "executed_at"):
        assert types[key] == "datetime"
    assert types["status"] == "text"


def test_sync_and_git_ignore_the_journal(vault_path: Path) -> None:
    """The vault's .gitignore and .stignore keep .hitl/ (the journal) out of git and Syncthing."""
    assert ".hitl/" in (vault_path / ".gitignore").read_text().split()
    assert ".hitl" in (vault_path / ".stignore").read_text().split()


def test_welcome_teaches_both_gestures_in_five_steps(vault_path: Path) -> None:
    """Welcome.md teaches, in five steps, approving by `status: approved` and by Approved/."""
    text = (vault_path / "Welcome.md").read_text()
    steps = re.findall(r"(?m)^\d\. ", text)
    assert len(steps) == 5
    assert "status: approved" in text and "Approved/" in text


def test_the_example_rules_decide_as_their_comments_say(vault: Vault) -> None:
    """Each example rule in the template decides as its comment says."""

    def decide(action: str, **params: object) -> tuple[Decision, str]:
        ruling = vault.evaluate(action, params)
        return ruling.decision, ruling.rule

    assert decide("payment", amount=499) == (Decision.ALLOW, "small-payments")
    assert decide("payment", amount=500) == (Decision.ASK, "large-payments")
    assert decide("shell", cmd="ls") == (Decision.BLOCK, "no-shell")
    assert decide("delete_user", id=3)[0] is Decision.ASK
    assert decide("deploy", environment="production") == (Decision.ASK, "production")
    assert decide("archive", count=250) == (Decision.ASK, "bulk")
    assert decide("read_file", path="a") == (Decision.ALLOW, "read-only-tools")
    assert decide("send_email", to="x@y.z") == (Decision.ASK, "email")
    refund = vault.evaluate("refund", {"amount": 5})
    assert set(refund.approvers or ()) == {"alice", "bob"}
    assert decide("unknown_tool") == (Decision.ASK, "defaults")


def test_the_several_approvers_examples_read_as_their_comments_say() -> None:
    """Uncommented, the template's deploys, big-wires and hotfix rules ask whom they say."""
    text = (Path(__file__).parents[1] / "vault_template" / "hitl-vault.yaml").read_text()
    start = text.index("  # - name: deploys")
    end = text.index("# Coding agents")
    block = [  # "  # - name" is a rule's line
        "  " + line[4:] if line.startswith("  # ") else line
        for line in text[start:end].splitlines()
    ]
    text = text[:start] + "\n".join(block) + "\n" + text[end:]
    text = text.replace("# groups:\n#   finance: [alice, bob]", "groups:\n  finance: [alice, bob]")
    policy = parse_policy(text)
    deploy = policy.evaluate(Proposal("deploy", {})).plan
    assert deploy.stages[0].quorum == 2 and deploy.prevent_self_approval and deploy.by_votes
    wire = policy.evaluate(Proposal("wire", {})).plan
    assert [s.name for s in wire.stages] == ["lead", "finance"]
    assert wire.stages[1].approvers == frozenset({"alice", "bob"})
    hotfix = policy.evaluate(Proposal("hotfix", {})).plan
    assert hotfix.escalate_to == {"dave"} and not hotfix.by_votes
