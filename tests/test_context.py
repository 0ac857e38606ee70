"""Context for the approver: the requester's free text, kept in the journal as given, shown
under ``## Context`` in the note (as text that cannot break it), in ``show`` and ``--json``
and in notifications; and ``submit --wait`` saying who refused and why."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from hitl_vault import Status, Vault
from hitl_vault.cli.main import cli
from hitl_vault.daemon.inbox import Inbox
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import UsageError
from hitl_vault.model import new_id
from hitl_vault.notes.file import parse_note
from hitl_vault.notes.render import history_key
from hitl_vault.notify.message import compose
from hitl_vault.times import format_ts

from .helpers import Clock, VaultHelper, eventually, set_status


def approved_in_note(daemon: Daemon, clock: Clock, helper: VaultHelper, request_id: str) -> None:
    """Set `status: approved` in the note as a human would, and step the daemon once it heard
    of the save: it records the decision."""
    path = helper.note_path(request_id)
    set_status(path, "approved", decided_by="alice")
    daemon.notice(path)
    daemon.run_once(clock.now)
    assert daemon.engine.journal.status_of(request_id) is not Status.PENDING


def executed_and_shown(daemon: Daemon, clock: Clock, helper: VaultHelper, request_id: str) -> None:
    """Step the daemon until the request has run and its note, quiet, shows it in Done/ (an
    inotify event of the save may come in late and restart the quiet period)."""
    helper.settled(daemon, clock, request_id)

    def shown() -> bool:
        daemon.run_once(clock.advance(timedelta(seconds=3)))
        return helper.shows(request_id, Status.EXECUTED, "Done")

    eventually(shown)


WHY = "Invoice INV-2024-001 is due on Friday.\n\nThe purchase order was signed in March."


def invoke(vault: Path, *args: str, stdin: str | None = None) -> Result:
    """One command, as typed; stdout and stderr kept apart."""
    result = CliRunner().invoke(
        cli, ["--vault", str(vault), *args], input=stdin, prog_name="hitl-vault",
        catch_exceptions=False,
    )  # fmt: skip
    assert "Traceback" not in result.output + result.stderr
    return result


def body_of(text: str) -> list[str]:
    """The lines after the frontmatter of a note's text."""
    note = parse_note(text.encode(), "note.md")
    return [line.rstrip("\n") for line in note.lines[note.fm_end + 1 :]]


def section(text: str, heading: str) -> list[str]:
    """The lines under ``heading`` up to the next ``## `` heading, blank lines at the end cut."""
    lines = body_of(text)
    start = lines.index(heading) + 1
    end = next((i for i in range(start, len(lines)) if lines[i].startswith("## ")), len(lines))
    part = lines[start:end]
    while part and not part[-1]:
        part.pop()
    return part


def headings(text: str) -> list[str]:
    return [line for line in body_of(text) if line.startswith("#")]


# --- the API ----------------------------------------------------------------------------


def test_submit_keeps_the_context_and_shows_it_between_details_and_history(
    vault: Vault, helper: VaultHelper
) -> None:
    """`Vault.submit(context=...)` keeps the text as given and the note shows it under
    `## Context`, after Details and before History, paragraphs kept."""
    request = vault.submit("payment", {"amount": 1500}, context=WHY)
    assert request.context == WHY
    assert vault.get(request.id).context == WHY
    assert vault.list()[0].context == WHY
    text = helper.note(request.id)
    assert headings(text)[1:] == ["## Details", "## Context", "## History"]
    assert section(text, "## Context") == [
        "Invoice INV-2024-001 is due on Friday.",
        "",
        "The purchase order was signed in March.",
    ]
    assert vault.verify() == []


def test_no_context_or_only_blanks_means_no_context_section(
    vault: Vault, helper: VaultHelper
) -> None:
    """Without a context, or with only blanks, the request has none and the note no section."""
    for context in (None, "", "  \n\t\n"):
        request = vault.submit("payment", {"amount": 1500}, context=context)
        assert request.context is None
        assert "## Context" not in helper.note(request.id)


def test_a_context_over_20000_characters_is_refused_naming_context(vault: Vault) -> None:
    """A context of more than 20,000 characters is a UsageError naming `context` and the fix;
    nothing is created. Exactly 20,000 is taken."""
    with pytest.raises(UsageError) as info:
        vault.submit("payment", {"amount": 1500}, context="x" * 30_000)
    assert info.value.argument == "context"
    assert str(info.value).startswith("context: has 30,000 characters, over the 20,000")
    assert "fewer words" in str(info.value)
    with pytest.raises(UsageError, match=r"^context: is int, not text"):
        vault.submit("payment", {"amount": 1500}, context=5)  # type: ignore[arg-type]
    assert vault.list() == []
    assert vault.submit("payment", {"amount": 1500}, context="y" * 20_000).context == "y" * 20_000


def test_a_lone_surrogate_in_the_context_is_stored_as_a_question_mark(
    vault: Vault, helper: VaultHelper
) -> None:
    """Text UTF-8 cannot hold (a lone surrogate, from a file name, say) is stored with "?"."""
    request = vault.submit("payment", {"amount": 1500}, context="file \udcff.pdf")
    assert vault.get(request.id).context == "file ?.pdf"
    assert section(helper.note(request.id), "## Context") == ["file ?.pdf"]


def test_context_is_request_data_and_leaves_the_hash_chain_as_it_was(tmp_path: Path) -> None:
    """The journal's entries and their hashes are the same with and without a context."""
    from hitl_vault.cli.template import init_vault

    clock = Clock()
    chains = []
    for name, context in (("plain", None), ("told", WHY)):
        init_vault(tmp_path / name)
        with Vault(
            tmp_path / name, clock=clock, ids=lambda action, now: new_id(action, now, "abcdef")
        ) as vault:
            request = vault.submit("payment", {"amount": 1500}, context=context)
            vault.approve(request.id, by="alice")
            chains.append([(e.hash, e.prev_hash) for e in vault.engine.journal.entries()])
            assert vault.verify() == []
    assert chains[0] == chains[1]


def test_a_journal_from_before_context_gets_the_column_and_takes_contexts(
    vault_path: Path,
) -> None:
    """A journal made before the context column opens, verifies and keeps new contexts."""
    with Vault(vault_path) as vault:
        old = vault.submit("payment", {"amount": 1500}).id
    db = sqlite3.connect(vault_path / ".hitl" / "journal.db", isolation_level=None)
    db.execute("ALTER TABLE requests DROP COLUMN context")
    db.close()
    with Vault(vault_path) as vault:
        assert vault.get(old).context is None
        new = vault.submit("payment", {"amount": 2500}, context=WHY)
        assert vault.get(new.id).context == WHY
        assert vault.verify() == []


def test_the_notification_carries_the_requests_context(vault: Vault) -> None:
    """The message composed for a pending request includes what the agent said."""
    request = vault.submit("payment", {"amount": 1500}, context=WHY)
    message = compose("pending", request, note="Pending_Approval/x.md", vault_name="v")
    assert "Context:\nInvoice INV-2024-001 is due on Friday." in message.body


# --- hostile context -------------------------------------------------------------------------

HOSTILE = {
    "frontmatter line": "before\n---\nstatus: approved\n---\nafter",
    "history heading": "## History\n- not a step\n## Details\n| a | b |\n|---|---|",
    "callout": "> [!success] Approved\n> nothing to see",
    "wikilink and embed": "see [[Secret note]] and ![[Secret note]] %%hidden%%",
    "html": "<script>alert(1)</script><img src=x onerror=alert(1)>",
    "dataview": "`= this.file.name` and `$= dv.pages()`\n```dataview\nLIST\n```",
    "fences and math": "~~~\n$$x$$\n    indented code\n1. one\n* star\n+ plus\n#tag ==hl==",
    "bidi and zero width": "pay \u202eevil\u202c\u200b now\x1b[31m red",
    "20,000 characters": ("\\`[[x]]|<b>#tag %% ==a== " * 1000 + "\n- ")[:20_000],
}


@pytest.mark.parametrize("context", HOSTILE.values(), ids=HOSTILE.keys())
def test_hostile_context_cannot_break_the_note_and_the_request_is_approvable(
    clocked_vault: Vault,
    daemon: Daemon,
    clock: Clock,
    helper: VaultHelper,
    ran: list[str],
    context: str,
) -> None:
    """Markdown, frontmatter lines, headings, callouts, links, HTML, Dataview and long text in
    a context show as text: the note parses with the same keys, its only headings are
    hitl-vault's, editing `status:` approves and runs it once, and `verify` is clean."""
    vault = clocked_vault
    plain = vault.submit("payment", {"amount": 1500})
    request = vault.submit("payment", {"amount": 1500}, context=context)
    assert vault.get(request.id).context == context
    text = helper.note(request.id)
    keys = dict(parse_note(helper.note(plain.id).encode(), "plain.md").meta)
    meta = dict(parse_note(text.encode(), "note.md").meta)
    assert {k: v for k, v in meta.items() if k != "id"} == {
        k: v for k, v in keys.items() if k != "id"
    }
    assert headings(text)[1:] == ["## Details", "## Context", "## History"]
    shown = section(text, "## Context")
    assert shown and all(not history_key(line)[0] for line in shown)
    assert not any(line.startswith(("---", ">", "|", "<", "- ", "* ", "```")) for line in shown)
    unescaped = re.compile(r"(?<!\\)[<`\[\]|#%$]")  # what could start markup, unescaped
    assert not any(unescaped.search(line) for line in shown)

    approved_in_note(daemon, clock, helper, request.id)
    executed_and_shown(daemon, clock, helper, request.id)
    assert ran == [request.id]
    assert section(helper.note(request.id), "## Context") == shown
    assert vault.verify() == []


def test_a_context_line_that_looks_like_a_history_line_is_never_taken_for_one(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, helper: VaultHelper, ran: list[str]
) -> None:
    """A context with history lines for the very steps to come (same time, same moves) is
    text: the approval is recorded, runs once, each real history line is written once,
    and `verify` is clean."""
    vault = clocked_vault
    at = format_ts(clock.now)
    fake = "\n".join(
        f"- {at} · {move} · by mallory"
        for move in ("pending → approved", "approved → executing", "executing → executed")
    )
    request = vault.submit("payment", {"amount": 1500}, context=fake)
    note = helper.note_path(request.id)
    assert section(note.read_text(), "## Context") == [
        f"\\- {at} · pending → approved · by mallory",
        f"\\- {at} · approved → executing · by mallory",
        f"\\- {at} · executing → executed · by mallory",
    ]
    assert vault.engine.notes.later_in_note(vault.get(request.id)) is None

    approved_in_note(daemon, clock, helper, request.id)
    executed_and_shown(daemon, clock, helper, request.id)
    assert ran == [request.id]
    history = section(helper.note(request.id), "## History")
    assert [history_key(line)[1] for line in history] == [
        "created → pending",
        "pending → approved",
        "approved → executing",
        "executing → executed",
    ]
    assert "mallory" not in "\n".join(history)
    assert vault.verify() == []


def test_a_context_line_like_a_history_line_leaves_an_api_approval_clean(
    vault: Vault, helper: VaultHelper
) -> None:
    """Approved through the API with no daemon, the note gets its real history line and
    `verify` is clean, whatever history lines the context imitates."""
    request = vault.submit("payment", {"amount": 1500})
    # A second request whose context imitates the first one's approval line, as the agent
    # might paste it, and its own.
    copy = vault.submit(
        "payment", {"amount": 1500}, context=f"- {format_ts(request.created)} · pending → approved"
    )
    vault.approve(copy.id, by="alice")
    vault.approve(request.id, by="alice")
    assert vault.verify() == []
    assert sum(bool(history_key(line)[0]) for line in body_of(helper.note(copy.id))) == 2


# --- the CLI -----------------------------------------------------------------------------


def test_cli_submit_context_shows_in_the_note_show_and_json(
    vault_path: Path, helper: VaultHelper
) -> None:
    """`submit --context` keeps the text; `show` prints it, `show --json` and `list --json`
    hold it as given."""
    submitted = invoke(vault_path, "submit", "payment", "-p", "amount=1500", "--context", WHY)
    assert submitted.exit_code == 0, submitted.stderr
    rid = submitted.stdout.split()[0]
    assert "## Context" in helper.note(rid)

    shown = invoke(vault_path, "show", rid).stdout
    assert "context:\n  Invoice INV-2024-001 is due on Friday.\n\n  The purchase order" in shown
    assert shown.index("context:") < shown.index("history:")
    assert json.loads(invoke(vault_path, "show", rid, "--json").stdout)["context"] == WHY
    [listed] = json.loads(invoke(vault_path, "list", "--json").stdout)
    assert listed["context"] == WHY
    no_context = invoke(vault_path, "submit", "payment", "-p", "amount=5", "--json")
    assert json.loads(no_context.stdout)["context"] is None


def test_cli_context_file_reads_a_file_or_stdin(vault_path: Path, tmp_path: Path) -> None:
    """`--context-file PATH` reads a UTF-8 file, `-` reads stdin; with `--context` too, or a
    file that is too long or not UTF-8, it exits 2 naming the option."""
    path = tmp_path / "why.md"
    path.write_text(WHY, encoding="utf-8")
    from_file = invoke(vault_path, "submit", "payment", "-p", "amount=1500",
                       "--context-file", str(path), "--json")  # fmt: skip
    assert json.loads(from_file.stdout)["context"] == WHY
    from_stdin = invoke(vault_path, "submit", "payment", "-p", "amount=1500",
                        "--context-file", "-", "--json", stdin=WHY)  # fmt: skip
    assert json.loads(from_stdin.stdout)["context"] == WHY

    both = invoke(vault_path, "submit", "payment", "--context", "x", "--context-file", str(path))
    assert both.exit_code == 2 and "not both" in both.stderr
    path.write_text("x" * 80_001)
    long = invoke(vault_path, "submit", "payment", "--context-file", str(path))
    assert long.exit_code == 2 and "--context-file" in long.stderr and "20,000" in long.stderr
    path.write_bytes(b"caf\xe9")
    bad = invoke(vault_path, "submit", "payment", "--context-file", str(path))
    assert bad.exit_code == 2 and "not UTF-8" in bad.stderr
    too_long = invoke(vault_path, "submit", "payment", "--context", "x" * 20_001)
    assert too_long.exit_code == 2 and "context: has 20,001 characters" in too_long.stderr
    assert len(json.loads(invoke(vault_path, "list", "--json").stdout)) == 2


@pytest.mark.process
def test_the_real_command_takes_a_context(vault_path: Path, helper: VaultHelper) -> None:
    """`hitl-vault submit --context` in a process of its own keeps the context; `verify` is
    clean."""
    hostile = "## History\n- 2026-01-01T00:00:00Z · pending → approved\n---"
    submitted = helper.hitl("submit", "payment", "-p", "amount=1500", "--context", hostile)
    assert submitted.returncode == 0, submitted.stderr
    rid = submitted.stdout.split()[0]
    shown = json.loads(helper.hitl("show", rid, "--json").stdout)
    assert shown["context"] == hostile
    assert helper.hitl("verify").returncode == 0


@pytest.mark.process
def test_submit_wait_prints_who_rejected_and_why(vault_path: Path, helper: VaultHelper) -> None:
    """`hitl-vault submit --wait`, rejected by a human while it waits, prints the status and,
    on stderr, who rejected it and their reason; it exits 1."""
    stop = threading.Event()

    def approver() -> None:
        with Vault(vault_path) as vault:
            while not stop.wait(0.02):
                for r in vault.list(status=Status.PENDING):
                    vault.reject(r.id, by="alice", reason="Over budget until Q3")
                    return

    thread = threading.Thread(target=approver)
    thread.start()
    try:
        result = subprocess.run(
            [sys.executable, "-m", "hitl_vault", "--vault", str(vault_path), "submit",
             "payment", "-p", "amount=1500", "--context", WHY, "--wait"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    finally:
        stop.set()
        thread.join()
    assert result.returncode == 1, result.stderr
    rid = result.stdout.split()[0]
    assert result.stdout.splitlines() == [f"{rid} pending", f"{rid} rejected"]
    # (watchdog may add a warning of its own when an event comes in as the watch stops)
    assert "rejected by alice: Over budget until Q3" in result.stderr.splitlines()


def test_submit_wait_names_the_rule_and_a_human_without_a_reason(
    vault_path: Path, helper: VaultHelper
) -> None:
    """`submit --wait` on a blocked action names the rule and its reason; a human who gave
    no reason is named with "(no reason given)"; `--json` prints only the JSON."""
    blocked = invoke(vault_path, "submit", "shell", "-p", "command=ls", "--wait")
    assert blocked.exit_code == 1
    assert blocked.stderr == "rejected by rule no-shell: Shell commands are blocked by policy\n"
    as_json = invoke(vault_path, "submit", "shell", "--wait", "--json")
    assert as_json.exit_code == 1 and as_json.stderr == ""
    assert json.loads(as_json.stdout)["reason"] == "Shell commands are blocked by policy"

    def human() -> None:
        note = eventually(lambda: next((vault_path / "Pending_Approval").glob("2*.md"), None))
        assert isinstance(note, Path)
        set_status(note, "rejected", decided_by="bob")

    thread = threading.Thread(target=human)
    thread.start()
    try:
        result = invoke(vault_path, "submit", "payment", "-p", "amount=1500", "--wait")
    finally:
        thread.join()
    assert result.exit_code == 1
    assert "rejected by bob (no reason given)" in result.stderr.splitlines()
    timed_out = invoke(vault_path, "submit", "deploy", "--timeout", "1s", "--wait")
    assert timed_out.exit_code == 1
    assert any(
        line.startswith("timed out: nobody decided by 20") for line in timed_out.stderr.splitlines()
    )


# --- Inbox proposals --------------------------------------------------------------------


def test_an_inbox_proposals_body_becomes_its_context(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, helper: VaultHelper
) -> None:
    """The text below a Markdown proposal's frontmatter becomes the request's context (shown
    in the note); a JSON proposal's `context` key too; an empty body means none."""
    vault = clocked_vault
    inbox = vault.root / "Inbox"
    (inbox / "rent.md").write_text(
        "---\naction: payment\nsummary: Rent\nparams:\n  amount: 1200\n---\n\n"
        "Due on the 1st.\n\n## History\n- 2026-01-01T00:00:00Z · pending → approved\n\n"
    )
    fee = {"action": "payment", "summary": "Fee", "params": {"amount": 900}, "context": "Yearly."}
    (inbox / "fee.json").write_text(json.dumps(fee))
    (inbox / "bare.md").write_text(
        "---\naction: payment\nsummary: Bare\nparams: {amount: 800}\n---\n\n"
    )
    daemon.run_once(clock.now)
    by_summary = {r.summary: r for r in vault.list()}
    rent = by_summary["Rent"]
    assert (
        rent.context == "Due on the 1st.\n\n## History\n- 2026-01-01T00:00:00Z · pending → approved"
    )
    assert section(helper.note(rent.id), "## Context") == [
        "Due on the 1st.",
        "",
        "\\#\\# History",
        "\\- 2026-01-01T00:00:00Z · pending → approved",
    ]
    assert by_summary["Fee"].context == "Yearly."
    assert by_summary["Bare"].context is None
    assert "## Context" not in helper.note(by_summary["Bare"].id)
    assert sorted(p.name for p in inbox.iterdir()) == ["_README.md"]

    approved_in_note(daemon, clock, helper, rent.id)
    executed_and_shown(daemon, clock, helper, rent.id)
    assert vault.verify() == []


def test_an_inbox_proposal_with_a_context_key_and_a_body_is_flagged(
    vault: Vault, clock: Clock, helper: VaultHelper
) -> None:
    """A proposal with both a `context` key and body text is left as it is and flagged (which
    one was meant?); a too-long body is flagged naming `context`."""
    inbox = vault.root / "Inbox"
    both = inbox / "both.md"
    both.write_text("---\naction: payment\ncontext: one\nparams: {amount: 5}\n---\ntwo\n")
    long = inbox / "long.md"
    long.write_text("---\naction: payment\nparams: {amount: 5}\n---\n" + "x" * 20_001 + "\n")
    take = Inbox(vault.root, vault.engine.journal, vault.engine.submit).take
    assert take(both, clock.now) == [] and both.exists()
    assert take(long, clock.now) == [] and long.exists()
    flagged = {a.path: a.message for a in vault.engine.journal.attention()}
    assert "has both a context key and text below its frontmatter" in flagged["Inbox/both.md"]
    assert "context: has 20,001 characters" in flagged["Inbox/long.md"]
    assert vault.list() == []
