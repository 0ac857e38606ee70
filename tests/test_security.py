"""Security: no shell, no way out of the vault, and a private ``.hitl/``.

* Params reach an executor only as JSON on stdin: ``$(rm -rf ~)`` or
  ``; reboot`` arrive as those very strings, never run, never in argv.
* Action names, ids and file names cannot point outside the vault: the API
  and the CLI refuse them, the daemon flags an Inbox proposal that tries.
* ``.hitl/`` (the journal and the lock) is owner-only, whatever the umask.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from hitl_vault import Status, Vault
from hitl_vault.cli.template import init_vault
from hitl_vault.errors import RequestNotFoundError, UsageError
from hitl_vault.policy.trust import UntrustedVaultError

from .helpers import DaemonProcess, VaultHelper, eventually, set_status

# Dumps exactly what it was given: stdin, argv, and the request id in its environment.
RECEIVE = """\
import json, os, sys
raw = sys.stdin.read()
request = json.loads(raw)
out = os.path.join(os.path.dirname(__file__), "received")
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, request["id"] + ".json"), "w") as f:
    json.dump({"stdin": raw, "argv": sys.argv, "env_id": os.environ.get("HITL_REQUEST_ID")}, f)
print("received")
"""


def received(vault: Path, request_id: str) -> dict[str, object] | None:
    """What the executor received for a request, once it has written all of it."""
    path = vault / "scripts" / "received" / f"{request_id}.json"
    try:
        return json.loads(path.read_text())  # type: ignore[no-any-return]
    except (FileNotFoundError, json.JSONDecodeError):  # not yet, or still being written
        return None


def tree(root: Path) -> set[str]:
    """Every path under ``root`` (the journal's own files aside)."""
    return {
        p.relative_to(root).as_posix()
        for p in root.rglob("*")
        if ".hitl" not in p.parts and "__pycache__" not in p.parts
    }


@pytest.fixture
def vault_path(vault_path: Path) -> Path:
    """The template vault, its payment executor the script above, quiet after 200 ms."""
    VaultHelper(vault_path).executor("receive.py", RECEIVE)
    return vault_path


# --- params reach the executor only as JSON ------------------------------------------------


def hostile_params(canary: Path) -> dict[str, object]:
    return {
        "amount": 1500,
        "memo": "$(rm -rf ~)",
        "then": "; reboot",
        "touch": f"$(touch {canary}-dollar)",
        "backticks": f"`touch {canary}-backtick`",
        "and": f"x && touch {canary}-and",
        "pipe": "| cat /etc/passwd",
        "newline": f"a\ntouch {canary}-newline",
        "quotes": "'\"\\",
        "glob": "*",
        "var": "$HOME ${PATH}",
        "dash": "--help",
        "nested": {"list": [f"$(touch {canary}-nested)", "; reboot"]},
    }


@pytest.mark.process
def test_shell_metacharacters_in_params_reach_the_executor_as_literal_json(
    vault_path: Path, daemon_process: DaemonProcess, tmp_path: Path, helper: VaultHelper
) -> None:
    """`$(...)`, backticks, `;` in params (note, CLI, Inbox) reach the executor only as JSON."""
    canary = tmp_path / "canary"
    params = hostile_params(canary)
    with Vault(vault_path) as vault:
        # Through a note: submitted, approved by editing it.
        by_note = vault.submit("payment", params)
        assert by_note.path is not None
        helper.settle()
        set_status(by_note.path, "approved", decided_by="alice")
        # Through the CLI, values given with -p as a shell user would quote them.
        out = helper.hitl("submit", "payment", "-p", "amount=100", "-p",
                          f"memo=$(touch {canary}-cli)", "-p", "then=; reboot", "--json",
                          timeout=120)  # fmt: skip
        assert out.returncode == 0, out.stderr
        by_cli = json.loads(out.stdout)
        assert by_cli["status"] == "approved"  # a small payment: allowed at once
        # Through the Inbox, as JSON from another program.
        (vault_path / "Inbox" / "agent.json").write_text(
            json.dumps({"action": "payment", "params": {"amount": 5, "memo": "; reboot"}})
        )
        eventually(lambda: received(vault_path, by_note.id) is not None, 30)
        eventually(lambda: received(vault_path, by_cli["id"]) is not None, 30)
        eventually(lambda: not (vault_path / "Inbox" / "agent.json").exists(), 30)
        inbox = next(r for r in vault.list() if r.requested_by == "inbox")
        eventually(lambda: received(vault_path, inbox.id) is not None, 30)

        got = received(vault_path, by_note.id)
        assert got is not None
        request = json.loads(str(got["stdin"]))
        assert request["params"] == params
        assert request["id"] == request["idempotency_key"] == by_note.id
        assert request["decided_by"] == "alice"
        assert got["env_id"] == by_note.id
        argv = got["argv"]
        assert isinstance(argv, list) and len(argv) == 1 and argv[0].endswith("receive.py")
        cli_got = received(vault_path, by_cli["id"])
        assert cli_got is not None
        cli_request = json.loads(str(cli_got["stdin"]))
        assert cli_request["params"] == {
            "amount": 100,
            "memo": f"$(touch {canary}-cli)",
            "then": "; reboot",
        }
        inbox_got = received(vault_path, inbox.id)
        assert inbox_got is not None
        inbox_request = json.loads(str(inbox_got["stdin"]))
        assert inbox_request["params"] == {"amount": 5, "memo": "; reboot"}
    assert not list(tmp_path.glob("canary*")), "a param was run by a shell"
    assert daemon_process.stop() == 0


@pytest.mark.process
def test_params_a_human_edits_before_approving_also_arrive_literally(
    vault_path: Path, daemon_process: DaemonProcess, tmp_path: Path, helper: VaultHelper
) -> None:
    """Shell syntax a human types into the params before approving reaches the executor as text."""
    canary = tmp_path / "canary-edited"
    with Vault(vault_path) as vault:
        req = vault.submit("payment", {"amount": 1500, "memo": "invoice"})
        assert req.path is not None
        helper.settle()
        text = req.path.read_text().replace("memo: invoice", f"memo: $(touch {canary}); reboot")
        req.path.write_text(text.replace("status: pending", "status: approved"))
        eventually(lambda: received(vault_path, req.id) is not None, 30)
        edited = received(vault_path, req.id)
        assert edited is not None
        got = json.loads(str(edited["stdin"]))
        assert got["params"] == {"amount": 1500, "memo": f"$(touch {canary}); reboot"}
        eventually(lambda: vault.engine.journal.status_of(req.id) is Status.EXECUTED)
    assert not canary.exists()
    assert daemon_process.stop() == 0


@pytest.mark.process
def test_an_executor_given_as_a_shell_string_is_refused_at_start(
    vault_path: Path, tmp_path: Path, helper: VaultHelper
) -> None:
    """An executor given as one shell string is refused at start, naming the rules file."""
    canary = tmp_path / "canary-string"
    rules = vault_path / "hitl-vault.yaml"
    text = rules.read_text()
    start = text.index("    run: [")
    end = text.index("\n", start)
    rules.write_text(
        text[:start] + f'    run: "python3 scripts/pay.py; touch {canary}"' + text[end:]
    )
    out = helper.hitl("run", "--once", timeout=120)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "hitl-vault.yaml" in out.stderr and "Traceback" not in out.stderr
    assert not canary.exists()


# --- nothing leaves the vault ---------------------------------------------------------------

BAD_ACTIONS = [
    "../x",
    "../../../../tmp/evil",
    "/etc/passwd",
    "a/b",
    "a\\b",
    "..",
    ".hidden",
    "",
    "pay ment",
    "pay\nment",
    "x\x00y",
    "$(reboot)",
    "x" * 65,
]


@pytest.mark.parametrize("action", BAD_ACTIONS)
def test_submit_refuses_an_action_name_that_could_leave_the_folder(
    vault: Vault, tmp_path: Path, action: str
) -> None:
    """`submit` refuses an action name that could point outside the vault; nothing is written."""
    before = tree(tmp_path)
    with pytest.raises(UsageError) as e:
        vault.submit(action, {"amount": 1})
    assert "action" in str(e.value)
    assert tree(tmp_path) == before
    assert vault.list() == []


@pytest.mark.process
def test_the_cli_refuses_them_too_without_a_traceback(
    vault_path: Path, tmp_path: Path, helper: VaultHelper
) -> None:
    """The CLI refuses such action names and ids (exit 1 or 2, no traceback); nothing is written."""
    before = tree(tmp_path)
    for action in ("../x", "a/b", "..", "$(reboot)"):
        out = helper.hitl("submit", action, "-p", "amount=1", timeout=120)
        assert out.returncode == 2, (action, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr and "action" in out.stderr
    for command in ("show", "approve", "reject", "cancel"):
        out = helper.hitl(command, "../../../etc/passwd", timeout=120)
        assert out.returncode in (1, 2), (command, out.stdout, out.stderr)
        assert "Traceback" not in out.stderr
    assert tree(tmp_path) == before


def test_ids_that_point_outside_are_just_unknown(vault: Vault) -> None:
    """An id like `../../etc/passwd` is just an unknown request, to get and to approve."""
    for request_id in ("../../etc/passwd", "/etc/passwd", "..", "../Done/x"):
        with pytest.raises(RequestNotFoundError):
            vault.get(request_id)
        with pytest.raises(RequestNotFoundError):
            vault.approve(request_id, by="mallory")


@pytest.mark.process
def test_inbox_proposals_with_weird_action_names_are_flagged_and_nothing_is_written_outside(
    vault_path: Path, daemon_process: DaemonProcess, tmp_path: Path, helper: VaultHelper
) -> None:
    """Inbox proposals with path-like or non-text action names are flagged, kept, never run."""
    inbox = vault_path / "Inbox"
    proposals = {
        "dotdot.json": json.dumps({"action": "../../../outside", "params": {"amount": 5}}),
        "slash.json": json.dumps({"action": "payment/../../x", "params": {"amount": 5}}),
        "absolute.json": json.dumps({"action": "/tmp/x", "params": {"amount": 5}}),
        "shell.json": json.dumps({"action": "$(reboot)", "params": {"amount": 5}}),
        "number.json": json.dumps({"action": 12, "params": {"amount": 5}}),
        "list.json": json.dumps({"action": ["payment"], "params": {"amount": 5}}),
        "long.json": json.dumps({"action": "p" * 300, "params": {"amount": 5}}),
        "dotdot.md": "---\naction: ../../outside\nparams:\n  amount: 5\n---\n",
        "newline.md": '---\naction: "pay\\nment"\nparams:\n  amount: 5\n---\n',
    }
    before_outside = tree(tmp_path)
    for name, text in proposals.items():
        (inbox / name).write_text(text)
    with Vault(vault_path) as vault:
        try:
            eventually(lambda: all(f"Inbox/{n}" in helper.attention() for n in proposals), 10)
        except AssertionError:
            missing = [n for n in proposals if f"Inbox/{n}" not in helper.attention()]
            logged = [n for n in missing if f"Inbox/{n}" in daemon_process.log()]
            raise AssertionError(
                f"not under Needs attention in Dashboard.md: {missing} "
                f"(in the daemon's log: {logged})"
            ) from None
        section = helper.attention()
        for name, text in proposals.items():
            line = next(li for li in section.splitlines() if f"Inbox/{name}" in li)
            assert "action" in line, line
            assert (inbox / name).read_text() == text, f"{name} was changed or removed"
        assert vault.list() == []
        assert not (vault_path / "scripts" / "received").exists()
    after = tree(tmp_path)
    new = {p for p in after - before_outside if not p.startswith("vault/")}
    assert new == set(), f"files appeared outside the vault: {new}"
    assert daemon_process.stop() == 0


@pytest.mark.process
def test_a_note_whose_id_points_outside_is_flagged_not_followed(
    vault_path: Path, daemon_process: DaemonProcess, tmp_path: Path, helper: VaultHelper
) -> None:
    """A note whose id points outside the vault is flagged, left alone, and nothing goes there."""
    with Vault(vault_path) as vault:
        real = vault.submit("payment", {"amount": 1500})
        assert real.path is not None
        text = real.path.read_text().replace(f"id: {real.id}", "id: ../../../outside")
        evil = vault_path / "Approved" / "evil.md"
        evil.write_text(text.replace("status: pending", "status: approved"))
        eventually(lambda: "Approved/evil.md" in helper.attention(), 30)
        assert evil.read_text() == text.replace("status: pending", "status: approved")
        assert vault.engine.journal.status_of(real.id) is Status.PENDING
    assert not (tmp_path / "outside").exists() and not (tmp_path / "outside.md").exists()
    assert daemon_process.stop() == 0


# --- .hitl/ is private -------------------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.process
def test_state_folder_is_owner_only_even_with_a_permissive_umask(tmp_path: Path) -> None:
    """Under umask 000, init, run and submit still make nothing another user may write."""
    helper = VaultHelper(tmp_path / "vault")  # not made yet: init makes it, under that umask
    vault = helper.root
    out = helper.hitl("init", umask=0, timeout=120)
    assert out.returncode == 0, out.stderr
    out = helper.hitl("run", "--once", umask=0, timeout=120)
    assert out.returncode == 0, out.stderr
    state = vault / ".hitl"
    assert _mode(state) == 0o700
    for name in ("journal.db", "daemon.lock"):
        assert _mode(state / name) & 0o077 == 0, f"{name} is {oct(_mode(state / name))}"
    out = helper.hitl("submit", "payment", "-p", "amount=1500", umask=0, timeout=120)
    assert out.returncode == 0, out.stderr
    for p in state.iterdir():
        assert _mode(p) & 0o022 == 0, f"{p.name} is {oct(_mode(p))}: others may write it"
    for p in (vault, vault / "hitl-vault.yaml", *vault.glob("*/*.md")):
        assert _mode(p) & 0o022 == 0, f"{p} is {oct(_mode(p))}: others may write it"


@pytest.mark.process
def test_an_open_state_folder_is_refused_until_fixed(tmp_path: Path) -> None:
    """A .hitl/ anyone may write may hold a forged journal: refused with the fix, never used."""
    helper = VaultHelper(tmp_path / "vault")
    vault = helper.root
    init_vault(vault)
    (vault / ".hitl").mkdir(mode=0o777, exist_ok=True)
    os.chmod(vault / ".hitl", 0o777)
    with pytest.raises(UntrustedVaultError, match=r"\.hitl: anyone may write it \(chmod o-w "):
        Vault(vault)
    out = helper.hitl("run", "--once", timeout=120)
    assert out.returncode == 1 and ".hitl: anyone may write it" in out.stderr
    assert not (vault / ".hitl" / "journal.db").exists()
    os.chmod(vault / ".hitl", 0o700)
    with DaemonProcess(vault) as daemon:
        assert _mode(vault / ".hitl") == 0o700
        assert daemon.stop() == 0
