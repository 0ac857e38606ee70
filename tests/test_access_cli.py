"""``hitl-vault people …`` and ``hitl-vault token …``: the owner's commands for who may decide
and which credentials may ask, their output, their errors and exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from hitl_vault.access import tokens
from hitl_vault.cli.main import cli
from hitl_vault.journal.sqlite import Journal
from hitl_vault.model import JOURNAL_FILE, STATE_DIR
from hitl_vault.times import utcnow

from .helpers import COMMAND
from .receivers import Receiver, free_port


def invoke(vault: Path, *args: str) -> Result:
    """One command, as typed; stdout and stderr kept apart."""
    result = CliRunner().invoke(
        cli, ["--vault", str(vault), *args], prog_name="hitl-vault", catch_exceptions=False
    )
    assert "Traceback" not in result.output + result.stderr
    return result


def ok(vault: Path, *args: str) -> Result:
    result = invoke(vault, *args)
    assert result.exit_code == 0, (result.stdout, result.stderr)
    return result


def failed(vault: Path, code: int, *args: str) -> str:
    """The one error line of a command meant to fail with ``code``."""
    result = invoke(vault, *args)
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.stderr.strip() and not result.stdout
    return result.stderr


def listed(vault: Path, group: str) -> Any:
    return json.loads(ok(vault, group, "list", "--json").stdout)


@contextmanager
def journal(vault: Path) -> Iterator[Journal]:
    """The vault's store, opened as another process would, closed after."""
    store = Journal(vault / STATE_DIR / JOURNAL_FILE)
    try:
        yield store
    finally:
        store.close()


def test_people_are_added_changed_listed_and_disabled(vault_path: Path) -> None:
    """people add/set/list/disable, each saying what it did and whom it told."""
    with Receiver().start() as receiver:
        home = f"json://127.0.0.1:{receiver.port}/alice"
        added = ok(vault_path, "people", "add", "alice", "--uid", "1001", "--notify", home)
        assert added.stdout == f"added alice\n  told {home}: delivered\n"
        down = f"json://127.0.0.1:{free_port()}/phone"
        changed = ok(vault_path, "people", "set", "Alice", "--uid", "1002", "--notify", down)
        lines = changed.stdout.splitlines()
        assert lines[:2] == ["changed alice", f"  told {home}: delivered"]
        assert lines[2].startswith(f"  told {down}: NOT delivered: ")
        assert len(receiver.got("/alice")) == 2
    ok(vault_path, "token", "add", "alice", "--role", "approver")
    (person,) = listed(vault_path, "people")
    assert (person["name"], person["uids"], person["notify"]) == ("alice", [1002], [down])
    assert (person["disabled"], person["tokens"]) == (False, 1)
    table = ok(vault_path, "people", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "UIDS", "TOKENS", "CHANNELS"]
    assert table[1].split()[:4] == ["alice", "enabled", "1002", "1"]
    gone = ok(vault_path, "people", "disable", "alice")
    assert gone.stdout.startswith("disabled alice; 1 token(s) revoked, 0 session(s) signed out\n")
    assert listed(vault_path, "people")[0]["disabled"] is True
    assert [t["state"] for t in listed(vault_path, "token")] == ["revoked"]


def test_people_commands_refuse_bad_input_with_the_fix(vault_path: Path) -> None:
    """Root's uid, the owner's, a bad URL, an unknown or taken name: one line, the right code."""
    assert "0 is root" in failed(vault_path, 2, "people", "add", "bob", "--uid", "0")
    owner = str(os.getuid() or 4242)
    if os.getuid():
        assert "service's owner" in failed(vault_path, 2, "people", "add", "bob", "--uid", owner)
    assert "--notify" in failed(vault_path, 2, "people", "add", "bob", "--notify", "bob@x")
    assert "'--uid'" in failed(vault_path, 2, "people", "add", "bob", "--uid", "bob")
    assert "NAME" in failed(vault_path, 2, "people", "add", " ")
    assert "people list" in failed(vault_path, 1, "people", "set", "carol", "--uid", "1003")
    ok(vault_path, "people", "add", "bob", "--uid", "1002")
    assert "in people already" in failed(vault_path, 1, "people", "add", "BOB")
    assert "bob's already" in failed(vault_path, 1, "people", "add", "alice", "--uid", "1002")
    assert "nothing to change" in failed(vault_path, 2, "people", "set", "bob")
    ok(vault_path, "people", "disable", "bob")
    assert "--enable" in failed(vault_path, 1, "people", "disable", "bob")
    assert ok(vault_path, "people", "set", "bob", "--enable").stdout == "changed bob (enabled)\n"


def test_a_token_is_printed_once_and_listed_without_it(vault_path: Path) -> None:
    """token add prints the token alone on stdout and warns it is shown once; list never has it."""
    made = ok(vault_path, "token", "add", "deploy-bot", "--role", "agent", "--actions", "deploy")
    secret = made.stdout.strip()
    assert secret.startswith("hv_") and made.stdout.count("\n") == 1
    assert "will not be shown again" in made.stderr
    as_json = json.loads(
        ok(vault_path, "token", "add", "ci", "--role", "agent", "--expires", "12h", "--json").stdout
    )
    assert set(as_json) == {"id", "name", "role", "token", "expires"}
    assert (as_json["name"], as_json["role"]) == ("ci", "agent")
    forever = ok(vault_path, "token", "add", "x", "--role", "agent", "--expires", "never", "--json")
    assert json.loads(forever.stdout)["expires"] is None
    rows = listed(vault_path, "token")
    assert set(rows[0]) == {
        "id", "name", "role", "actions", "created", "expires", "revoked", "last_used", "state",
    }  # fmt: skip
    assert [(r["name"], r["actions"], r["state"]) for r in rows] == [
        ("deploy-bot", ["deploy"], "live"),
        ("ci", None, "live"),
        ("x", None, "live"),
    ]
    text = ok(vault_path, "token", "list").stdout + json.dumps(rows)
    assert secret not in text and secret.split("_", 2)[2] not in text
    with journal(vault_path) as store:
        got = tokens.authenticate(store, secret, utcnow())
        assert got is not None and got.actions == ("deploy",)
        assert tokens.authenticate(store, as_json["token"], utcnow() + timedelta(hours=13)) is None
        assert secret not in repr(store.service_log())


def test_tokens_are_revoked_by_name_or_id(vault_path: Path) -> None:
    """token revoke NAME ends all of a name's tokens, ID just one; unknown is exit 1."""
    first = json.loads(ok(vault_path, "token", "add", "bot", "--role", "agent", "--json").stdout)
    ok(vault_path, "token", "add", "bot", "--role", "agent")
    ok(vault_path, "token", "add", "bot", "--role", "agent")
    assert ok(vault_path, "token", "revoke", first["id"]).stdout == (
        f"revoked 1 token(s) ({first['id']})\n"
    )
    assert ok(vault_path, "token", "revoke", "bot").stdout == "revoked 2 token(s) (bot)\n"
    assert "revoked already" in ok(vault_path, "token", "revoke", "bot").stdout
    assert "token list" in failed(vault_path, 1, "token", "revoke", "nobody")


def test_token_commands_refuse_bad_input_with_the_fix(vault_path: Path) -> None:
    """A bad role, duration, action or owner: one line naming the argument, exit 2 or 1."""
    assert "'--role'" in failed(vault_path, 2, "token", "add", "bot", "--role", "admin")
    assert "--expires" in failed(
        vault_path, 2, "token", "add", "bot", "--role", "agent", "--expires", "soon"
    )
    assert "--actions" in failed(
        vault_path, 2, "token", "add", "bot", "--role", "agent", "--actions", "a b"
    )
    assert "people add" in failed(vault_path, 1, "token", "add", "alice", "--role", "approver")
    ok(vault_path, "people", "add", "alice", "--uid", "1001")
    assert "pass for a person" in failed(vault_path, 1, "token", "add", "Alice", "--role", "agent")
    assert listed(vault_path, "token") == []
    assert ok(vault_path, "token", "list").stdout.startswith("no tokens")


@pytest.mark.process
def test_the_installed_command_makes_a_token(vault_path: Path) -> None:
    """`hitl-vault token add … --json` as a process: the token parses and authenticates."""
    run = subprocess.run(
        [str(COMMAND), "--vault", str(vault_path), "token", "add", "bot", "--role", "agent",
         "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    made = json.loads(run.stdout)
    with journal(vault_path) as store:
        got = tokens.authenticate(store, made["token"], utcnow())
        assert got is not None and got.id == made["id"]


def test_verify_reports_an_edited_service_log(vault_path: Path) -> None:
    """hitl-vault verify checks the service log's chain too: an edited token entry is exit 1."""
    ok(vault_path, "token", "add", "bot", "--role", "agent")
    assert ok(vault_path, "verify").stdout.startswith("ok:")
    db = sqlite3.connect(vault_path / STATE_DIR / JOURNAL_FILE, isolation_level=None)
    db.execute("UPDATE service_log SET subject = 'other-bot'")
    db.close()
    result = invoke(vault_path, "verify")
    assert result.exit_code == 1 and "service log entry 1" in result.stdout + result.stderr


def test_verify_reports_a_revoked_token_made_a_persons_behind_the_log(vault_path: Path) -> None:
    """A revoked agent token edited in SQLite into alice's approver token fails verify."""
    ok(vault_path, "people", "add", "alice", "--uid", "1001")
    made = json.loads(ok(vault_path, "token", "add", "bot", "--role", "agent", "--json").stdout)
    ok(vault_path, "token", "revoke", "bot")
    db = sqlite3.connect(vault_path / STATE_DIR / JOURNAL_FILE, isolation_level=None)
    db.execute("UPDATE credentials SET revoked=NULL, role='approver', name='alice', key='alice'")
    db.close()
    with journal(vault_path) as store:
        forged = tokens.authenticate(store, made["token"], utcnow())
        assert forged is not None and forged.name == "alice"  # what verify has to catch
    result = invoke(vault_path, "verify")
    assert result.exit_code == 1
    said = result.stdout + result.stderr
    assert f"token {made['id']} (alice): differs from the service log" in said


def test_people_add_refuses_the_uid_serve_recorded(vault_path: Path) -> None:
    """The service's uid, as serve recorded it, is refused whoever runs people add (root too)."""
    with journal(vault_path) as store:
        store.set_setting("service_uid", "1234", utcnow(), "svc")
    said = failed(vault_path, 2, "people", "add", "eve", "--uid", "1234")
    assert "the service runs as" in said
