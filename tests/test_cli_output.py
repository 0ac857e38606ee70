"""What the request commands print: `list`'s header and --limit, a blocked submit's reason,
and the stable --json shapes of approve, reject, cancel, verify and notify test."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hitl_vault.cli.main import cli

from .helpers import VaultHelper, set_status
from .receivers import Receiver, free_port


def invoke(vault: Path, *args: str) -> Result:
    result = CliRunner().invoke(
        cli, ["--vault", str(vault), *args], prog_name="hitl-vault", catch_exceptions=False
    )
    assert "Traceback" not in result.output + result.stderr
    return result


def pending(vault: Path, amount: int = 1500) -> str:
    result = invoke(vault, "submit", "payment", "-p", f"amount={amount}", "--json")
    request = json.loads(result.stdout)
    assert request["status"] == "pending"
    return str(request["id"])


def shown_keys(vault: Path, request_id: str) -> set[str]:
    """The keys `show --json` prints, less those only `show` adds."""
    data = json.loads(invoke(vault, "show", request_id, "--json").stdout)
    only_show = {"decided_uid", "decided_actor", "decided_credential", "params_sha"}
    return set(data) - only_show - {"edited_in_note"}


# --- list -------------------------------------------------------------------------------


def test_list_has_a_header_over_aligned_columns(vault_path: Path) -> None:
    """`list` starts with ID STATUS RISK SUMMARY, each column under its heading."""
    first = pending(vault_path)
    invoke(vault_path, "submit", "read_file", "-p", "path=a")
    invoke(vault_path, "submit", "x", "--summary", "a \x1b[31mred\x1b[0m summary")
    header, *rows = invoke(vault_path, "list").stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "RISK", "SUMMARY"]
    starts = [header.index(word) for word in ("STATUS", "RISK", "SUMMARY")]
    for row in rows:
        assert all(row[at - 1] == " " and row[at] != " " for at in starts), (header, row)
    assert rows[-1].startswith(f"{first} ") and rows[-1].split()[1:3] == ["pending", "high"]
    assert "\x1b" not in rows[0] and rows[0].endswith("a [31mred[0m summary")


def test_list_limit_keeps_the_newest(vault_path: Path) -> None:
    """`--limit N` prints the N newest (with --status and --json too); 0 is a usage error."""
    ids = [pending(vault_path, amount) for amount in (1500, 1600, 1700)]
    lines = invoke(vault_path, "list", "--limit", "2").stdout.splitlines()
    assert [line.split()[0] for line in lines] == ["ID", ids[2], ids[1]]
    data = json.loads(
        invoke(vault_path, "list", "--limit", "1", "--status", "pending", "--json").stdout
    )
    assert [r["id"] for r in data] == [ids[2]]
    bad = invoke(vault_path, "list", "--limit", "0")
    assert bad.exit_code == 2 and "--limit" in bad.stderr
    assert invoke(vault_path, "list", "--status", "executed").stdout == "no requests\n"


# --- submit -----------------------------------------------------------------------------


def test_a_blocked_submit_prints_the_rules_reason(vault_path: Path) -> None:
    """`submit shell` prints `<id> rejected`, then the rule and its reason on stderr."""
    result = invoke(vault_path, "submit", "shell", "-p", "cmd=ls")
    assert result.exit_code == 0
    request_id, word = result.stdout.split()
    assert "-shell-" in request_id  # the id, then the status
    assert word == "rejected"
    assert result.stderr == "rejected by rule no-shell: Shell commands are blocked by policy\n"
    waited = invoke(vault_path, "submit", "shell", "--wait")  # said once, not twice
    assert waited.exit_code == 1 and waited.stderr.count("Shell commands are blocked") == 1
    allowed = invoke(vault_path, "submit", "read_file", "-p", "path=a")
    assert allowed.stderr == "" and allowed.stdout.split()[1] == "approved"


# --- --json on approve, reject, cancel --------------------------------------------------


def test_approve_and_reject_json_is_one_entry_per_id(vault_path: Path) -> None:
    """`approve --json` prints [{id, ok, error, request}], also for an ID that failed."""
    first, second = pending(vault_path), pending(vault_path, 1600)
    result = invoke(vault_path, "approve", first, "--by", "alice", "--json")
    assert result.exit_code == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert set(entry) == {"id", "ok", "error", "request"}
    assert (entry["id"], entry["ok"], entry["error"]) == (first, True, None)
    assert set(entry["request"]) == shown_keys(vault_path, first)
    assert entry["request"]["status"] == "approved" and entry["request"]["decided_by"] == "alice"

    result = invoke(vault_path, "reject", second, "nope", first, "--reason", "no", "--json")
    assert result.exit_code == 1
    rejected, unknown, decided = json.loads(result.stdout)
    assert rejected["ok"] and rejected["request"]["status"] == "rejected"
    assert rejected["request"]["reason"] == "no"
    assert (unknown["id"], unknown["ok"], unknown["request"]) == ("nope", False, None)
    assert "not found" in unknown["error"] and "not found" in result.stderr
    assert decided["ok"] is False and "cannot become rejected" in decided["error"]
    assert decided["request"] is None


def test_one_failed_id_still_prints_its_entry_and_exits_as_before(vault_path: Path) -> None:
    """A single ID that fails prints its entry and keeps its exit code (2 for bad usage)."""
    result = invoke(vault_path, "approve", "nope", "--json")
    assert result.exit_code == 1 and "not found" in result.stderr
    assert json.loads(result.stdout)[0]["ok"] is False
    first, second = pending(vault_path), pending(vault_path, 1600)
    common = next(i for i in range(len(first)) if first[i] != second[i])
    result = invoke(vault_path, "reject", first[:common], "--json")
    assert result.exit_code == 2 and "matches 2 requests" in result.stderr
    assert "matches 2 requests" in json.loads(result.stdout)[0]["error"]


def test_cancel_json_is_the_request(vault_path: Path) -> None:
    """`cancel --json` prints the cancelled request, with the keys `show --json` has."""
    request_id = pending(vault_path)
    result = invoke(vault_path, "cancel", request_id, "--by", "bob", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == shown_keys(vault_path, request_id)
    assert data["status"] == "cancelled" and data["history"][-1].endswith("by bob")


# --- --json on verify and notify test ---------------------------------------------------


def test_verify_json_says_ok_and_lists_the_problems(vault_path: Path) -> None:
    """`verify --json`: {ok, requests, problems, checked_at}; exit 1 when a note disagrees."""
    request_id = pending(vault_path)
    result = invoke(vault_path, "verify", "--json")
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"ok", "requests", "problems", "checked_at"}
    assert (data["ok"], data["requests"], data["problems"]) == (True, 1, [])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", data["checked_at"])
    set_status(vault_path / "Pending_Approval" / f"{request_id}.md", "executed")
    result = invoke(vault_path, "verify", "--json")
    assert result.exit_code == 1 and result.stderr == "Error: 1 problem(s) found\n"
    data = json.loads(result.stdout)
    assert data["ok"] is False and len(data["problems"]) == 1
    assert "journal says pending" in data["problems"][0]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    r = Receiver().start()
    try:
        yield r
    finally:
        r.stop()


def add_targets(vault: Path, *urls: str) -> None:
    rules = vault / "hitl-vault.yaml"
    items = "".join(f"  - url: {url}\n" for url in urls)
    rules.write_text(rules.read_text().rstrip("\n") + "\nnotify:\n" + items)


@pytest.mark.process
def test_notify_test_json_has_one_entry_per_target(
    vault_path: Path, receiver: Receiver, helper: VaultHelper
) -> None:
    """`notify test --json`: {ok, targets: [{target, delivered, error}]}; exit 1 if one failed."""
    none = invoke(vault_path, "notify", "test", "--json")
    assert none.exit_code == 1 and json.loads(none.stdout) == {"ok": False, "targets": []}
    assert "no notify: targets" in none.stderr
    good = f"json://127.0.0.1:{receiver.port}/hook"
    down = f"json://127.0.0.1:{free_port()}/hook"
    add_targets(vault_path, good, down)
    done = helper.hitl("notify", "test", "--json")  # a process of its own, as a user runs it
    assert done.returncode == 1, done.stderr
    data: dict[str, Any] = json.loads(done.stdout)
    assert data["ok"] is False
    assert [(t["target"], t["delivered"]) for t in data["targets"]] == [(good, True), (down, False)]
    assert data["targets"][0]["error"] is None and "refused" in data["targets"][1]["error"]
    assert [set(t) for t in data["targets"]] == [{"target", "delivered", "error"}] * 2
    receiver.wait_for(1)


def test_an_approval_that_did_not_approve_is_not_ok(vault_path: Path) -> None:
    """An approval the rules turned into a rejection is `ok: false` with why, exit 1."""
    refund = json.loads(invoke(vault_path, "submit", "refund", "-p", "amount=40", "--json").stdout)
    result = invoke(
        vault_path, "approve", refund["id"], "--by", "alice", "-p", "amount=50", "--json"
    )
    assert result.exit_code == 1
    (entry,) = json.loads(result.stdout)
    assert entry["ok"] is False and entry["request"]["status"] == "rejected"
    assert entry["error"].startswith("not approved: ") and entry["error"] in result.stderr
