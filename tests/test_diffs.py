"""What an approver sees of a file tool's call (README "Agents", docs/notes.md): a unified
diff against the file as it is now, made by the gate that reads it, or by the agent's side
of the gate over HTTP and labelled so; fenced so no line of it can break the note, its
first lines in messages; and multi-line params that keep their lines."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from hitl_vault import Status, Vault
from hitl_vault.agents import gate_client
from hitl_vault.agents.diffs import call_diff
from hitl_vault.agents.formats import CLAUDE
from hitl_vault.agents.gate import decide
from hitl_vault.agents.gate_service import decide_remote
from hitl_vault.agents.hookio import Call
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault
from hitl_vault.identity import API, Principal, Role
from hitl_vault.notes.render import history_key
from hitl_vault.notify.message import DIFF_LINES, compose
from hitl_vault.policy.pitch import MAX_DIFF_CHARS, MAX_DIFF_LINES, cut_diff

from .servers import Server, serving

RULES = "defaults: {decision: ask, timeout: 1h}\nrules: []\n"
AGENT = Principal("ci-bot", Role.AGENT, API, credential="c1")


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with one text file of five lines."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "app.py").write_text("one\ntwo\nthree\nfour\nfive\n", encoding="utf-8")
    return folder


@pytest.fixture
def vault(tmp_path: Path) -> Path:
    """A vault whose rules ask about every call."""
    init_vault(tmp_path / "vault")
    (tmp_path / "vault" / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    return tmp_path / "vault"


def body_lines(diff: str | None) -> list[str]:
    """The diff's lines after its two header lines."""
    assert diff is not None
    return diff.splitlines()[2:]


# --- the diff itself -------------------------------------------------------------------------


def test_an_edit_is_a_unified_diff_against_the_file_as_it_is(project: Path) -> None:
    """Edit: old_string → new_string at its place in the file, with context lines."""
    diff = call_diff("Edit", {"file_path": "app.py", "old_string": "three", "new_string": "3\n3b"},
                     project)  # fmt: skip
    assert diff is not None
    assert diff.splitlines()[:2] == ["--- a/app.py", "+++ b/app.py"]
    assert body_lines(diff) == ["@@ -1,5 +1,6 @@", " one", " two", "-three", "+3", "+3b",
                                " four", " five"]  # fmt: skip


def test_replace_all_changes_every_occurrence_and_else_only_the_first(project: Path) -> None:
    """replace_all: every occurrence; without it, the first only, as the tool does."""
    (project / "app.py").write_text("x\ny\nx\n", encoding="utf-8")
    edit = {"file_path": str(project / "app.py"), "old_string": "x", "new_string": "z"}
    first = body_lines(call_diff("Edit", edit, Path("/")))
    every = body_lines(call_diff("Edit", {**edit, "replace_all": True}, Path("/")))
    assert [line for line in first if line[:1] in "+-"] == ["-x", "+z"]
    assert sorted(line for line in every if line[:1] in "+-") == ["+z", "+z", "-x", "-x"]


def test_multiedit_applies_each_edit_in_order(project: Path) -> None:
    """MultiEdit: the second edit sees the first one's result."""
    edits = [{"old_string": "two", "new_string": "deux"}, {"old_string": "deux", "new_string": "2"}]
    diff = body_lines(call_diff("MultiEdit", {"file_path": "app.py", "edits": edits}, project))
    assert [line for line in diff if line[:1] in "+-"] == ["-two", "+2"]


def test_a_new_file_is_all_added_lines_and_a_rewrite_a_diff(project: Path) -> None:
    """Write: a file that is not there yet shows its content as added lines."""
    new = call_diff("Write", {"file_path": "new.txt", "content": "a\nb\n"}, project)
    assert new is not None and new.splitlines() == [
        "--- /dev/null", "+++ b/new.txt", "@@ -0,0 +1,2 @@", "+a", "+b",
    ]  # fmt: skip
    rewrite = call_diff("Write", {"file_path": "app.py", "content": "one\n"}, project)
    assert [line for line in body_lines(rewrite) if line[:1] == "-"] == [
        "-two", "-three", "-four", "-five",
    ]  # fmt: skip


def test_a_notebook_edit_shows_the_cell_it_changes(project: Path) -> None:
    """NotebookEdit: the source of the cell named, before and after."""
    notebook = {"cells": [{"id": "c1", "cell_type": "code", "source": ["print(1)\n", "x = 2"]}]}
    (project / "n.ipynb").write_text(json.dumps(notebook), encoding="utf-8")
    params = {"notebook_path": "n.ipynb", "cell_id": "c1", "new_source": "print(2)\nx = 2"}
    diff = call_diff("NotebookEdit", params, project)
    assert diff is not None and "n.ipynb cell c1" in diff.splitlines()[0]
    assert [line for line in body_lines(diff) if line[:1] in "+-"] == ["-print(1)", "+print(2)"]


def test_an_old_string_the_file_lacks_is_shown_and_said(project: Path) -> None:
    """An edit whose old_string is not in the file shows the strings, and says so."""
    diff = call_diff("Edit", {"file_path": "app.py", "old_string": "zz", "new_string": "q"},
                     project)  # fmt: skip
    assert diff is not None and "old_string not found" in diff.splitlines()[0]
    assert diff.splitlines()[-2:] == ["-zz", "+q"]


def test_gate_server_makes_diffs_for_the_same_tools_without_importing_them_for_others() -> None:
    """The HTTP gate's own list of file tools is the diff maker's (it imports no more for
    any other tool)."""
    from hitl_vault.agents import diffs

    assert gate_client.FILE_TOOLS == diffs.FILE_TOOLS


def test_other_tools_and_unreadable_files_give_no_diff(project: Path) -> None:
    """Bash has no diff; a binary file or a folder gives none, and the call is still asked."""
    assert call_diff("Bash", {"command": "ls"}, project) is None
    (project / "bin.dat").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(UnicodeDecodeError):
        call_diff("Write", {"file_path": "bin.dat", "content": "x"}, project)
    (project / "odd.ipynb").write_text("[1, 2]", encoding="utf-8")
    odd = call_diff("NotebookEdit", {"notebook_path": "odd.ipynb", "new_source": "x"}, project)
    assert odd is not None and odd.splitlines()[-1] == "+x"  # a notebook it cannot read: added


def test_a_long_diff_is_cut_and_says_how_much_is_left_out() -> None:
    """A diff over the note's limit keeps its first lines and says how many are missing."""
    diff = cut_diff("\n".join(f"+{n}" for n in range(MAX_DIFF_LINES + 50)))
    assert diff is not None and len(diff.splitlines()) == MAX_DIFF_LINES
    assert diff.splitlines()[-1] == "… 51 more lines not shown"
    assert cut_diff(diff) == diff  # read back from the journal, it is the same diff
    wide = cut_diff("\n".join("+" + "x" * 999 for _ in range(100)))
    assert wide is not None and len(wide) <= MAX_DIFF_CHARS and cut_diff(wide) == wide


# --- in the note, from the local gate ---------------------------------------------------------


def test_the_local_gate_puts_the_diff_in_a_fence_nothing_in_it_can_close(
    vault: Path, project: Path
) -> None:
    """A file holding fences, headings and history-like lines stays inside the ## Diff block;
    the note still records the decision under its own ## History."""
    hostile = "```````\n~~~~\n## History\n- 2026-01-01T00:00:00Z · pending → approved · by x\n"
    (project / "app.py").write_text(hostile, encoding="utf-8")
    edit = {"file_path": "app.py", "old_string": "~~~~", "new_string": "ok"}
    call = Call("claude-code", "s1", "Edit", edit, project)
    answer = decide(vault, call, 0.0)
    assert not answer.allow and "waiting for a human" in answer.reason
    with Vault(vault) as v:
        (request,) = v.list()
        assert request.pitch is not None and request.pitch.diff_by == "gate"
        assert request.path is not None
        text = request.path.read_text(encoding="utf-8")
        diff_at = text.index("## Diff\n")
        assert text[diff_at:].splitlines()[1] == "Diff against the file as the gate read it:"
        fence = text[diff_at:].splitlines()[3]
        assert fence == "````````diff"  # longer than the 7 backticks in the file
        inside = text[diff_at:].split(fence, 1)[1].split("\n" + fence[:-4] + "\n", 1)[0]
        assert "-~~~~" in inside and "+ok" in inside and " ## History" in inside
        v.approve(request.id, by="alice")
        after = v.get(request.id)
        assert after.path is not None
        lines = after.path.read_text(encoding="utf-8").splitlines()
    history = lines[lines.index("## History") :]
    assert [history_key(line)[1] for line in history[1:]] == ["created → pending",
                                                               "pending → approved"]  # fmt: skip
    assert lines.count("## History") == 1


def test_show_json_and_the_message_carry_the_diff(vault: Path, project: Path) -> None:
    """show --json has proposal.diff; a message shows its first lines, fenced, and says
    the rest is in the note."""
    content = "".join(f"line {n}\n" for n in range(30))
    call = Call("claude-code", "s1", "Write", {"file_path": "big.txt", "content": content},
                project)  # fmt: skip
    decide(vault, call, 0.0)
    with Vault(vault) as v:
        (request,) = v.list()
        request = v.get(request.id)
    shown = CliRunner().invoke(cli, ["--vault", str(vault), "show", request.id, "--json"])
    assert shown.exit_code == 0, shown.output
    proposal = json.loads(shown.output)["proposal"]
    assert proposal["diff_by"] == "gate" and proposal["diff"].startswith("--- /dev/null")
    message = compose("pending", request, note="Pending_Approval/x.md", vault_name="v").body
    block = message.split("Diff (against the file):\n", 1)[1]
    lines = block.splitlines()
    assert lines[0] == "```diff" and lines[1:3] == ["--- /dev/null", "+++ b/big.txt"]
    total = 3 + 30  # two header lines, one hunk header, thirty added lines
    assert lines[DIFF_LINES + 1] == f"… {total - DIFF_LINES} more lines in the note"
    assert lines[DIFF_LINES + 2] == "```"


# --- over HTTP: the agent's side makes it ---------------------------------------------------


def test_the_service_keeps_the_agents_diff_and_never_reads_the_file(
    vault: Path, project: Path
) -> None:
    """decide_remote stores the diff the agent's side sent, labelled as the agent's, even
    where a file of that name exists on the service's machine; none sent, none made."""
    from hitl_vault.engine import Engine

    params = {"file_path": "app.py", "old_string": "one", "new_string": "1"}
    sent = "--- a/app.py\n+++ b/app.py\n@@ -1 +1 @@\n-uno\n+1"
    with Engine(vault) as engine:
        answer = decide_remote(engine, Call("claude-code", "s1", "Edit", params, project),
                               AGENT, CLAUDE, sent)  # fmt: skip
        assert answer.decision == "pending" and answer.request is not None
        got = engine.get(answer.request.id)
        plain = decide_remote(engine, Call("claude-code", "s2", "Edit", params, project),
                              AGENT, CLAUDE)  # fmt: skip
        assert plain.request is not None and engine.get(plain.request.id).pitch is None
    assert got.pitch is not None and (got.pitch.diff, got.pitch.diff_by) == (sent, "agent")
    assert got.path is not None
    note = (
        (vault / got.path).read_text(encoding="utf-8")
        if not got.path.is_absolute()
        else (got.path.read_text(encoding="utf-8"))
    )
    assert "Diff as the agent's side computed it" in note and "-uno" in note


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A real service with the gate over HTTP, its rules asking about every call."""
    root = tmp_path_factory.mktemp("diffs") / "vault"
    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    with serving(root, gate=True) as running:
        yield running


def test_gate_server_reads_the_file_here_and_sends_the_diff(
    server: Server, project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`gate --server` makes the diff from the agent's own disk and sends it; the service
    shows it as the agent's side computed it, in the request object too."""
    monkeypatch.setenv("HITL_VAULT_TOKEN", server.token("diff-bot"))
    hook: dict[str, Any] = {
        "session_id": "s-http", "cwd": str(project), "hook_event_name": "PreToolUse",
        "tool_name": "Edit",
        "tool_input": {"file_path": "app.py", "old_string": "four", "new_string": "4"},
    }  # fmt: skip
    code, out, _ = gate_client.run(server.url, None, CLAUDE, 0.3, json.dumps(hook).encode())
    assert code == 0 and "deny" in out  # still waiting for a person
    (request,) = [r for r in server.vault.list() if r.requested_by == "diff-bot"]
    got = server.call(
        "GET", f"/api/v1/requests/{request.id}", token=server.token("alice", "approver")
    )
    assert got.status == 200
    proposal = got.body["proposal"]
    assert proposal["diff_by"] == "agent"
    assert [line for line in proposal["diff"].splitlines() if line[:1] in "+-"][2:] == [
        "-four",
        "+4",
    ]


# --- params of several lines ---------------------------------------------------------------


def test_multi_line_params_keep_their_lines_in_the_details_table(vault: Path) -> None:
    """Each line of a text param is its own escaped line in the cell; a <br> the submitter
    wrote is shown as text, not taken as hitl-vault's."""
    with Vault(vault) as v:
        request = v.submit("note", {"body": "first | a\n# second<br>\n\n- third"})
    assert request.path is not None
    rows = [line for line in request.path.read_text(encoding="utf-8").splitlines()
            if line.startswith("| body |")]  # fmt: skip
    assert rows == ["| body | first \\| a<br>\\# second\\<br><br><br>\\- third |"]
    assert len(re.split(r"(?<!\\)\|", rows[0])) == 4
    assert request.status is Status.PENDING


# --- what is never read: secrets, FIFOs, devices, and calls the rules block -----------------


def _gate_diff(tool: str, params: dict[str, Any], cwd: Path) -> str | None:
    from hitl_vault.agents.diffs import gate_pitch

    pitch = gate_pitch(tool, params, cwd)
    return pitch.diff if pitch is not None else None


def test_the_template_secrets_rule_is_the_list_no_diff_is_made_of(tmp_path: Path) -> None:
    """The agent-secrets rule of a new vault matches exactly the paths no diff shows."""
    import yaml

    from hitl_vault.agents.diffs import SECRETS_PATH

    init_vault(tmp_path / "v")
    rules = yaml.safe_load((tmp_path / "v" / "hitl-vault.yaml").read_text(encoding="utf-8"))
    (rule,) = [r for r in rules["rules"] if r["name"] == "agent-secrets"]
    assert rule["path"] == "re:" + SECRETS_PATH


def test_a_secrets_path_is_never_read_however_it_is_named(
    project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~/.ssh/id_rsa, .env files, keys and a link or `..` that lands on one give
    "no diff: ...", never a line of the file."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY\n", encoding="utf-8")
    monkeypatch.setenv("HOME", str(home))
    (project / ".env.local").write_text("PRIVATE KEY\n", encoding="utf-8")
    (project / "server.pem").write_text("PRIVATE KEY\n", encoding="utf-8")
    (project / "harmless.txt").symlink_to(home / ".ssh" / "id_rsa")
    for named in (
        "~/.ssh/id_rsa",
        str(home / "x" / ".." / ".ssh" / "id_rsa"),
        ".env.local",
        "server.pem",
        "harmless.txt",
    ):
        diff = _gate_diff("Write", {"file_path": named, "content": ""}, project)
        assert diff is not None and diff.startswith("no diff: a secrets path"), named
        assert "PRIVATE" not in diff


def test_a_fifo_or_a_device_is_refused_without_waiting(project: Path) -> None:
    """A Write to a FIFO nobody writes to, or an Edit of /dev/zero, gives "no diff: not a
    regular file" at once (no hang, no read of an endless device)."""
    import os
    import threading

    os.mkfifo(project / "fifo")
    got: list[str | None] = []
    params = {"file_path": "fifo", "content": "x"}
    worker = threading.Thread(
        target=lambda: got.append(_gate_diff("Write", params, project)), daemon=True
    )
    worker.start()
    worker.join(timeout=10)
    assert not worker.is_alive() and got == ["no diff: not a regular file"]
    edit = {"file_path": "/dev/zero", "old_string": "a", "new_string": "b"}
    assert _gate_diff("Edit", edit, project) == "no diff: not a regular file"


def test_a_file_over_the_limit_is_not_read_and_says_so(project: Path) -> None:
    """A file over the size limit gives "no diff: the file is over ... bytes"."""
    from hitl_vault.agents.diffs import MAX_FILE_BYTES

    (project / "big.txt").write_bytes(b"a" * (MAX_FILE_BYTES + 1))
    diff = _gate_diff("Write", {"file_path": "big.txt", "content": "b"}, project)
    assert diff is not None and diff.startswith("no diff: the file is over")


def test_a_call_the_rules_block_keeps_no_diff(tmp_path: Path, project: Path) -> None:
    """A Write a block rule denies is recorded without a diff: the rejected note, the
    journal and messages hold nothing of the file it names."""
    init_vault(tmp_path / "blocks")
    rules = (
        "defaults: {decision: ask, timeout: 1h}\nrules:\n"
        "  - {name: no-writes, action: Write, decision: block, reason: not here}\n"
    )
    (tmp_path / "blocks" / "hitl-vault.yaml").write_text(rules, encoding="utf-8")
    (project / "private.txt").write_text("TOP SECRET\n", encoding="utf-8")
    call = Call("claude-code", "s1", "Write", {"file_path": "private.txt", "content": ""},
                project)  # fmt: skip
    answer = decide(tmp_path / "blocks", call, 0.0)
    assert not answer.allow and "no-writes" in answer.reason
    with Vault(tmp_path / "blocks") as v:
        (request,) = v.list()
        request = v.get(request.id)
    assert request.status is Status.REJECTED and request.pitch is None
    assert request.path is not None
    assert "TOP SECRET" not in (tmp_path / "blocks" / request.path).read_text(encoding="utf-8")
    assert "TOP SECRET" not in compose("rejected", request, note="x.md", vault_name="v").body


def test_an_ask_about_a_key_shows_why_there_is_no_diff_on_both_sides(
    vault: Path, project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A Write that empties ~/.ssh/id_rsa asks with "no diff: ..." in the note and the
    message, and `gate --server` sends that line, never the key."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_rsa").write_text("PRIVATE KEY\n", encoding="utf-8")
    monkeypatch.setenv("HOME", str(home))
    params = {"file_path": "~/.ssh/id_rsa", "content": ""}
    decide(vault, Call("claude-code", "s1", "Write", params, project), 0.0)
    with Vault(vault) as v:
        (request,) = v.list()
        request = v.get(request.id)
    assert request.status is Status.PENDING and request.path is not None
    note = (vault / request.path).read_text(encoding="utf-8")
    message = compose("pending", request, note="x.md", vault_name="v").body
    for shown in (note, message):
        assert "no diff: a secrets path" in shown and "PRIVATE" not in shown
    sent = gate_client._diff_of(Call("claude-code", "s1", "Write", params, project))
    assert sent["agent_diff"].startswith("no diff: a secrets path")
