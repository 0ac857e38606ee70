"""The ``hitl-vault`` command as a user types it.

Most tests go through click's CliRunner against a real vault on disk; the
daemon (``run``) and the installed console script run as real subprocesses,
since ``run`` installs signal handlers and configures logging for its process.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from importlib.metadata import version
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from hitl_vault import Status, Vault
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault

from .helpers import VaultHelper, eventually, set_status


def invoke(vault: Path | None, *args: str, env: dict[str, str] | None = None) -> Result:
    """One command, as typed; stdout and stderr kept apart (click 8.2+)."""
    base = ["--vault", str(vault)] if vault is not None else []
    result = CliRunner().invoke(
        cli, [*base, *args], env=env, prog_name="hitl-vault", catch_exceptions=False
    )
    assert "Traceback" not in result.output + result.stderr
    return result


def failed(result: Result, code: int) -> str:
    """The error line of a command that was meant to fail with ``code``."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.strip(), "an error must say what went wrong on stderr"
    return result.stderr


def submitted(vault: Path, *args: str) -> Any:
    result = invoke(vault, "submit", *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def pending(vault: Path, amount: int = 1500) -> str:
    request = submitted(vault, "payment", "-p", f"amount={amount}", "-p", "recipient=v@x.y")
    assert request["status"] == "pending"
    return str(request["id"])


def walk(command: click.Command, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    yield path
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            yield from walk(sub, (*path, name))


# --- help, version, init -----------------------------------------------------------------


def test_every_command_and_option_has_help_text() -> None:
    """Every command and option has help text, and `--help` works on each command."""
    commands = list(walk(cli))
    assert {"init", "run", "submit", "list", "show", "approve", "reject", "cancel", "verify"} <= {
        p[0] for p in commands if p
    }
    assert ("rules", "check") in commands
    missing = []
    for path in commands:
        command: click.Command = cli
        for name in path:
            assert isinstance(command, click.Group)
            command = command.commands[name]
        if not (command.help or "").strip():
            missing.append(" ".join(path) or "hitl-vault")
        for param in command.params:
            if isinstance(param, click.Option) and not (param.help or "").strip():
                missing.append(f"{' '.join(path)} {param.opts[0]}")
        result = invoke(None, *path, "--help")
        assert result.exit_code == 0, (path, result.output)
        assert result.stdout.startswith(f"Usage: hitl-vault {' '.join(path)}".rstrip())
    assert not missing, f"no help text: {missing}"


def test_version_is_the_installed_packages() -> None:
    """`hitl-vault --version` prints the version of the installed package."""
    result = invoke(None, "--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"hitl-vault, version {version('hitl-vault')}"


def test_init_creates_a_vault_and_never_overwrites_a_file(tmp_path: Path) -> None:
    """`init` makes a vault; run again, it adds what is missing and keeps the user's edits."""
    target = tmp_path / "v"
    first = invoke(None, "init", str(target))
    assert first.exit_code == 0, first.stderr
    assert f"vault ready at {target}" in first.stdout
    for folder in ("Inbox", "Pending_Approval", "Approved", "Rejected", "Done"):
        assert (target / folder).is_dir()
    rules = target / "hitl-vault.yaml"
    mine = rules.read_text() + "# my own line\n"
    rules.write_text(mine)
    (target / "Welcome.md").unlink()

    again = invoke(None, "init", str(target))
    assert again.exit_code == 0, again.stderr
    assert "1 files created" in again.stdout
    assert rules.read_text() == mine
    assert (target / "Welcome.md").exists()


def test_the_vault_is_the_option_else_the_environment_else_dot_vault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vault is `--vault`, else `$HITL_VAULT`, else `./vault`."""
    for name in ("opt", "env", "vault"):
        init_vault(tmp_path / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HITL_VAULT", raising=False)

    in_dot = json.loads(invoke(None, "submit", "x", "--json").stdout)
    from_env = invoke(None, "submit", "x", "--json", env={"HITL_VAULT": str(tmp_path / "env")})
    from_opt = invoke(
        tmp_path / "opt", "submit", "x", "--json", env={"HITL_VAULT": str(tmp_path / "env")}
    )
    assert Path(in_dot["path"]).is_relative_to(tmp_path / "vault")
    assert Path(json.loads(from_env.stdout)["path"]).is_relative_to(tmp_path / "env")
    assert Path(json.loads(from_opt.stdout)["path"]).is_relative_to(tmp_path / "opt")


def test_a_folder_that_is_no_vault_is_named_with_the_fix(tmp_path: Path) -> None:
    """A `--vault` that is no vault exits 1 naming it and `hitl-vault init`; nothing is made."""
    error = failed(invoke(tmp_path / "nowhere", "list"), 1)
    assert str(tmp_path / "nowhere") in error
    assert "hitl-vault init" in error
    assert not (tmp_path / "nowhere").exists()


# --- submit --------------------------------------------------------------------------------


def test_submit_writes_the_pending_note_with_typed_params(vault_path: Path) -> None:
    """`submit` writes a pending note with typed params, rule, risk, summary and history."""
    request = submitted(
        vault_path,
        "payment",
        "-p", "amount=1500",
        "-p", "recipient=v@x.y",
        "-p", 'code="01234"',
        "-p", "note=",
        "--summary", "Pay the invoice",
        "--by", "agent-7",
    )  # fmt: skip
    assert request["status"] == "pending"
    assert request["params"] == {"amount": 1500, "recipient": "v@x.y", "code": "01234", "note": ""}
    assert (request["rule"], request["risk"], request["requested_by"]) == (
        "large-payments",
        "high",
        "agent-7",
    )
    assert request["summary"] == "Pay the invoice"
    note = Path(str(request["path"]))
    assert note == vault_path / "Pending_Approval" / f"{request['id']}.md"
    text = note.read_text(encoding="utf-8")
    assert "status: pending" in text
    assert "code: '01234'" in text or 'code: "01234"' in text
    assert request["history"] == [
        f"{request['created']} · created → pending · by agent-7 · rule large-payments"
    ]
    plain = invoke(vault_path, "submit", "email", "-p", "to=a@b.c")
    assert plain.exit_code == 0
    rid, status = plain.stdout.split()
    assert status == "pending" and (vault_path / "Pending_Approval" / f"{rid}.md").exists()


@pytest.mark.parametrize(
    ("args", "status", "rule"),
    [
        (("payment", "-p", "amount=10"), "approved", "small-payments"),
        (("shell", "-p", "cmd=rm -rf /"), "rejected", "no-shell"),
    ],
)
def test_a_rule_that_decides_at_once_answers_at_once_and_records_it(
    vault_path: Path, args: tuple[str, ...], status: str, rule: str
) -> None:
    """A request a rule allows or blocks is decided at submit: no pending note, one history line."""
    request = submitted(vault_path, *args, "--by", "agent")
    assert (request["status"], request["rule"]) == (status, rule)
    assert not list((vault_path / "Pending_Approval").glob("2*.md"))
    with Vault(vault_path) as vault:
        stored = vault.get(str(request["id"]))
    assert stored.status == status
    assert [(t.from_status, str(t.to_status)) for t in stored.history] == [(None, status)]
    created = request["created"]
    why = ' · "Shell commands are blocked by policy"' if status == "rejected" else ""
    assert request["history"] == [f"{created} · created → {status} · by agent{why} · rule {rule}"]
    folder = "Approved" if status == "approved" else "Rejected"
    assert request["path"] == str(vault_path / folder / f"{request['id']}.md")
    if status == "rejected":
        assert request["reason"] == "Shell commands are blocked by policy"


@pytest.mark.parametrize(
    ("given", "read"),
    [
        ("1500", 1500),
        ("-3", -3),
        ("0.5", 0.5),
        ("1.5e3", 1500.0),
        ("true", True),
        ("False", False),
        ("null", None),
        ("", ""),
        ("01234", "01234"),  # YAML 1.1: the octal number 668
        ("NO", "NO"),  # YAML 1.1: false
        ("yes", "yes"),
        ("12:30:00", "12:30:00"),  # YAML 1.1: 45000 (base 60)
        ("0x1F", "0x1F"),
        ("1_000", "1_000"),
        ("2026-11-22", "2026-11-22"),
        ("1e999", "1e999"),
        ('"01234"', "01234"),
        ("'true'", "true"),
        ("[a, b]", "[a, b]"),
        ("a=b", "a=b"),
    ],
)
def test_p_reads_plain_numbers_booleans_and_null_and_keeps_everything_else_as_typed(
    vault_path: Path, given: str, read: object
) -> None:
    """`-p` reads plain numbers, booleans and null; anything else (YAML 1.1 too) stays as typed."""
    request = submitted(vault_path, "lookup", "-p", f"value={given}")
    assert request["params"] == {"value": read}
    assert type(request["params"]["value"]) is type(read)


@pytest.mark.parametrize(
    ("args", "names"),
    [
        (("-p", "novalue"), "-p"),
        (("-p", "=1"), "-p"),
        (("--params-json", "[1, 2]"), "--params-json"),
        (("--params-json", "{broken"), "--params-json"),
        (("--timeout", "soon"), "timeout"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(
    vault_path: Path, args: tuple[str, ...], names: str
) -> None:
    """A bad `-p`, `--params-json` or `--timeout` exits 2 naming it; no note is written."""
    error = failed(invoke(vault_path, "submit", "payment", *args), 2)
    assert names in error
    assert not list((vault_path / "Pending_Approval").glob("2*.md"))


@pytest.mark.parametrize("action", ["../escape", "a/b", ""])
def test_an_action_name_that_is_no_name_exits_2(vault_path: Path, action: str) -> None:
    """An action name with a slash, `..` or nothing at all exits 2; no note is written."""
    error = failed(invoke(vault_path, "submit", action), 2)
    assert "action" in error
    assert not list((vault_path / "Pending_Approval").glob("2*.md"))


def test_p_wins_over_params_json(vault_path: Path) -> None:
    """`-p` overrides the same key in `--params-json`, and the rules judge the merged params."""
    request = submitted(
        vault_path, "payment", "--params-json", '{"amount": 9000, "memo": "x"}', "-p", "amount=700"
    )
    assert request["params"] == {"amount": 700, "memo": "x"}
    assert request["rule"] == "large-payments"


def test_submit_wait_exits_0_once_a_human_approves_the_note(vault_path: Path) -> None:
    """`submit --wait` prints pending, then approved, and exits 0 once a human approves."""
    folder = vault_path / "Pending_Approval"

    def human() -> None:
        note = eventually(lambda: next(folder.glob("2*.md"), None))
        assert isinstance(note, Path)
        set_status(note, "approved", decided_by="alice")

    approver = threading.Thread(target=human)
    approver.start()
    try:
        result = invoke(vault_path, "submit", "payment", "-p", "amount=900", "--wait")
    finally:
        approver.join()
    assert result.exit_code == 0, result.stderr
    rid = result.stdout.split()[0]
    assert result.stdout.splitlines() == [f"{rid} pending", f"{rid} approved"]
    with Vault(vault_path) as vault:
        assert vault.get(rid).decided_by == "alice"


def test_submit_wait_exits_1_when_nobody_decides_in_time(vault_path: Path) -> None:
    """`submit --wait` exits 1 with status timed_out when nobody decides in time."""
    result = invoke(vault_path, "submit", "deploy", "--timeout", "1s", "--wait", "--json")
    assert result.exit_code == 1
    request = json.loads(result.stdout)
    assert request["status"] == "timed_out"


def test_submit_wait_on_a_blocked_action_exits_1_at_once(vault_path: Path) -> None:
    """`submit --wait` on an action a rule blocks exits 1 at once, printing rejected."""
    result = invoke(vault_path, "submit", "shell", "--wait")
    assert result.exit_code == 1
    assert result.stdout.split()[1] == "rejected"


# --- list, show, decisions -----------------------------------------------------------------


def test_list_prints_requests_newest_first_and_filters_by_status(vault_path: Path) -> None:
    """`list` shows requests newest first; `--status` filters; an unknown status exits 2."""
    assert invoke(vault_path, "list").stdout == "no requests\n"
    first = pending(vault_path)
    allowed = submitted(vault_path, "payment", "-p", "amount=5")["id"]

    header, *lines = invoke(vault_path, "list").stdout.splitlines()
    assert header.split() == ["ID", "STATUS", "RISK", "SUMMARY"]
    assert [line.split()[:2] for line in lines] == [[allowed, "approved"], [first, "pending"]]

    only = json.loads(invoke(vault_path, "list", "--status", "pending", "--json").stdout)
    assert [r["id"] for r in only] == [first]
    assert "history" not in only[0]
    assert only[0]["params"] == {"amount": 1500, "recipient": "v@x.y"}

    error = failed(invoke(vault_path, "list", "--status", "maybe"), 2)
    assert "--status" in error and "pending" in error


def test_show_prints_the_request_with_its_history(vault_path: Path) -> None:
    """`show` prints a request's fields, params and history; `--json` holds the same."""
    rid = pending(vault_path)
    assert invoke(vault_path, "approve", rid, "--by", "alice", "--reason", "ok").exit_code == 0

    text = invoke(vault_path, "show", rid).stdout
    assert f"id:           {rid}" in text
    assert "status:       approved" in text
    assert f"note:         Approved/{rid}.md" in text
    assert "  amount: 1500" in text
    assert 'pending → approved · by alice · "ok"' in text

    data = json.loads(invoke(vault_path, "show", rid, "--json").stdout)
    assert data["status"] == "approved" and data["decided_by"] == "alice"
    assert len(data["history"]) == 2


@pytest.mark.parametrize("command", ["show", "approve", "reject", "cancel"])
def test_an_unknown_id_is_one_line_naming_it(vault_path: Path, command: str) -> None:
    """An unknown id given to show, approve, reject or cancel is one error line naming it."""
    error = failed(invoke(vault_path, command, "20260101T000000Z-nope-abcdef"), 1)
    assert error.count("\n") == 1
    assert "20260101T000000Z-nope-abcdef" in error
    assert "hitl-vault list" in error


def test_approve_records_the_decision_in_the_note_at_once(vault_path: Path) -> None:
    """`approve` writes the decision into the note in Approved/ at once; approving again exits 1."""
    rid = pending(vault_path)
    result = invoke(vault_path, "approve", rid, "--by", "alice", "--reason", "checked")
    assert (result.exit_code, result.stdout) == (0, f"{rid} approved\n")
    note = vault_path / "Approved" / f"{rid}.md"
    text = note.read_text(encoding="utf-8")
    assert "status: approved" in text and "decided_by: alice" in text
    assert '· pending → approved · by alice · "checked"' in text

    again = failed(invoke(vault_path, "approve", rid), 1)
    assert rid in again and "is approved, so it cannot become approved" in again


def test_reject_and_cancel(vault_path: Path) -> None:
    """`reject` keeps its reason in Rejected/; `cancel` cancels; then a `reject` of it exits 1."""
    rejected, cancelled = pending(vault_path), pending(vault_path)
    result = invoke(vault_path, "reject", rejected, "--by", "bob", "--reason", "wrong vendor")
    assert (result.exit_code, result.stdout) == (0, f"{rejected} rejected\n")
    assert "wrong vendor" in (vault_path / "Rejected" / f"{rejected}.md").read_text()

    result = invoke(vault_path, "cancel", cancelled)
    assert (result.exit_code, result.stdout) == (0, f"{cancelled} cancelled\n")
    with Vault(vault_path) as vault:
        assert vault.get(cancelled).status is Status.CANCELLED
    assert "cannot become rejected" in failed(invoke(vault_path, "reject", cancelled), 1)


def test_someone_outside_a_rules_approvers_is_refused_naming_the_rule(vault_path: Path) -> None:
    """An approver a rule does not list is refused (exit 1) naming the rule; a listed one may."""
    rid = str(submitted(vault_path, "refund", "-p", "amount=40")["id"])
    error = failed(invoke(vault_path, "approve", rid, "--by", "mallory"), 1)
    assert "mallory" in error and "rule refunds" in error and "--by" in error
    with Vault(vault_path) as vault:
        assert vault.get(rid).status is Status.PENDING
    assert invoke(vault_path, "approve", rid, "--by", "bob").exit_code == 0


# --- rules check, broken rules, verify ----------------------------------------------------


def test_rules_check_explains_the_decision_and_creates_nothing(vault_path: Path) -> None:
    """`rules check` explains the decision, rule and reason (also as JSON) and creates nothing."""
    text = invoke(vault_path, "rules", "check", "payment", "-p", "amount=1500").stdout
    assert text.splitlines()[:4] == [
        "decision: ask", "would:    ask", "risk:     high", "timeout:  1h"
    ]  # fmt: skip
    assert "matched large-payments: ask" in text

    data = json.loads(invoke(vault_path, "rules", "check", "shell", "--json").stdout)
    assert data["decision"] == "block" and data["rule"] == "no-shell"
    assert data["reason"] == "Shell commands are blocked by policy"
    assert set(data) == {
        "decision", "would", "would_reason", "risk", "timeout", "rule", "reason", "approvers",
        "editable", "matches",
    }  # fmt: skip

    unknown = invoke(vault_path, "rules", "check", "water_plants").stdout
    assert "no rule matched; the default (ask) applies" in unknown
    assert invoke(vault_path, "list").stdout == "no requests\n"


@pytest.mark.parametrize(
    ("rules", "line", "words"),
    [
        ("rules:\n  - name: x\n    decision: maybe\n", 3, "allow, ask, block"),
        ("rules: [\n", 2, "YAML"),
    ],
)
@pytest.mark.parametrize("command", [("list",), ("submit", "payment"), ("rules", "check", "x")])
def test_a_broken_rules_file_exits_1_naming_the_file_and_line(
    vault_path: Path, rules: str, line: int, words: str, command: tuple[str, ...]
) -> None:
    """A broken hitl-vault.yaml makes list, submit and rules check exit 1 naming file and line."""
    (vault_path / "hitl-vault.yaml").write_text(rules)
    error = failed(invoke(vault_path, *command), 1)
    assert f"hitl-vault.yaml line {line}" in error
    assert words in error
    assert not list((vault_path / "Pending_Approval").glob("2*.md"))


def test_verify_passes_on_a_clean_vault_and_names_a_note_that_disagrees(
    vault_path: Path,
) -> None:
    """`verify` says ok on a clean vault and names a note that disagrees with the journal."""
    rid = pending(vault_path)
    pending(vault_path, amount=700)
    ok = invoke(vault_path, "verify")
    assert ok.exit_code == 0
    assert ok.stdout.startswith("ok: 2 requests")

    note = vault_path / "Pending_Approval" / f"{rid}.md"
    set_status(note, "executed")
    edited = note.read_bytes()
    error = failed(invoke(vault_path, "verify"), 1)
    assert f"Pending_Approval/{rid}.md" in error
    assert "'executed'" in error and "journal says pending" in error
    assert note.read_bytes() == edited, "verify only reads"
    assert "1 problem(s) found" in error


# --- the installed command and the daemon, as processes -----------------------------------


EXECUTOR = """\
import json, sys
request = json.load(sys.stdin)
print("paid", request["params"]["amount"], "key", request["idempotency_key"])
"""


@pytest.mark.process
def test_the_installed_command_submits_and_prints_json(helper: VaultHelper) -> None:
    """The installed `hitl-vault` script submits with `--json`; an unknown id fails cleanly."""
    result = helper.hitl("submit", "payment", "-p", "amount=1500", "-p", "recipient=v@x.y",
                         "--json", script=True)  # fmt: skip
    assert result.returncode == 0, result.stderr
    request = json.loads(result.stdout)
    assert request["status"] == "pending" and request["params"]["amount"] == 1500
    assert Path(request["path"]).exists()

    bad = helper.hitl("show", "nope", script=True)
    assert bad.returncode == 1
    assert bad.stderr.startswith("Error: request nope: not found") and "Traceback" not in bad.stderr


@pytest.mark.process
def test_run_once_creates_a_missing_vault(tmp_path: Path) -> None:
    """`run --once` on a folder that does not exist makes a new vault there and says so."""
    result = VaultHelper(tmp_path / "fresh").hitl("run", "--once", script=True)
    assert result.returncode == 0, result.stderr
    assert f"created a new vault at {tmp_path / 'fresh'}" in result.stderr
    assert (tmp_path / "fresh" / "hitl-vault.yaml").exists()
    assert (tmp_path / "fresh" / "Dashboard.md").exists()


@pytest.mark.process
def test_run_once_executes_what_was_approved_and_verbose_adds_only_our_debug_lines(
    vault_path: Path, helper: VaultHelper
) -> None:
    """`run --once` runs what was approved; `-v` adds hitl-vault's DEBUG lines, not watchdog's."""
    helper.executor("echo_pay.py", EXECUTOR, quiet=timedelta(milliseconds=100))
    rid = pending(vault_path)
    assert invoke(vault_path, "approve", rid, "--by", "alice").exit_code == 0

    result = helper.hitl("run", "--once", "-v", script=True)
    assert result.returncode == 0, result.stderr
    assert f"{rid} · executing → executed · result: paid 1500 key {rid}" in result.stderr
    assert f"DEBUG {rid}: running" in result.stderr
    assert "in-event" not in result.stderr, "watchdog's own debug output is noise"
    assert all(" DEBUG " in line or " INFO " in line for line in result.stderr.splitlines()), (
        result.stderr
    )

    with Vault(vault_path) as vault:
        done = vault.get(rid)
    assert done.status is Status.EXECUTED
    assert done.path == vault_path / "Done" / f"{rid}.md"

    quiet = helper.hitl("run", "--once", script=True)
    assert quiet.returncode == 0
    assert "DEBUG" not in quiet.stderr and "executing" not in quiet.stderr


@pytest.mark.parametrize(
    ("args", "names"),
    [(("frobnicate",), "frobnicate"), (("show",), "ID"), (("submit", "x", "--nope"), "--nope")],
)
def test_click_usage_errors_exit_2_too(vault_path: Path, args: tuple[str, ...], names: str) -> None:
    """An unknown command, a missing argument or an unknown option exits 2 naming it."""
    assert names in failed(invoke(vault_path, *args), 2)


# What a command imports is what a person waits for each time they type it.
LOADS = """\
import json, sys
from hitl_vault.cli.entry import main
sys.argv = ["hitl-vault", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
heavy = ("yaml", "sqlite3", "asyncio", "watchdog", "frontmatter", "starlette", "apprise",
         "socket", "difflib", "tomllib")
ours = ("hitl_vault.engine", "hitl_vault.journal", "hitl_vault.notes", "hitl_vault.daemon")
print(json.dumps(sorted({m.split(".")[0] if not m.startswith("hitl_vault")
                         else ".".join(m.split(".")[:2])
                         for m in sys.modules if m.startswith(heavy) or m.startswith(ours)})),
      file=sys.stderr)
"""


def _loaded(cwd: Path, *args: str) -> list[str]:
    done = subprocess.run([sys.executable, "-c", LOADS, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=True)  # fmt: skip
    loaded: list[str] = json.loads(done.stderr.strip().splitlines()[-1])
    return loaded


@pytest.mark.process
def test_version_and_help_start_without_the_vaults_machinery(helper: VaultHelper) -> None:
    """`--version` and `--help` import no journal, notes, engine, YAML or SQLite; a command
    that never waits (`list`) starts without asyncio, and none but the daemon loads the
    file watcher; nor what only a mistake (difflib), a TOML note or a socket needs."""
    assert _loaded(helper.root, "--version") == []
    assert _loaded(helper.root, "--help") == []
    listed = _loaded(helper.root, "--vault", str(helper.root), "list")
    assert {"hitl_vault.engine", "hitl_vault.journal", "sqlite3", "yaml"} <= set(listed)
    assert not {"asyncio", "watchdog", "socket", "difflib", "tomllib"} & set(listed)
