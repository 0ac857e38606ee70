"""Separate OS users, for real: the setup docs/separate-users.md describes.

Three users of the test's own: the service, which owns the vault (mode 0700) and runs
``hitl-vault serve``; an agent, holding only an agent token; and a person, mapped in
``people`` to their uid, who decides through the service's Unix socket. Creating users
needs root (CI runs as root); their processes need an interpreter every user can reach,
which ``.ci/run`` builds and names in ``HITL_VAULT_USERS_PYTHON``. Without either the
module skips, saying why, except under ``CI=true``, where a missing piece fails.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

pytestmark = [pytest.mark.process, pytest.mark.slow]

PYTHON = os.environ.get("HITL_VAULT_USERS_PYTHON", "")
USERS = ("hv-sep-service", "hv-sep-agent", "hv-sep-person")


def _missing() -> str | None:
    if not hasattr(os, "getuid") or os.getuid() != 0:
        return "creating OS users needs root"
    if not shutil.which("useradd"):
        return "no useradd on this system"
    if not PYTHON or not Path(PYTHON).exists():
        return (
            "HITL_VAULT_USERS_PYTHON names no interpreter every user can run "
            "(.ci/run builds one: see docs/contributing.md)"
        )
    return None


if (why := _missing()) is not None:
    if os.environ.get("CI") == "true":
        raise RuntimeError(f"tests/test_separation.py cannot run under CI: {why}")
    pytest.skip(why, allow_module_level=True)


@dataclass(frozen=True)
class User:
    name: str
    uid: int
    gid: int
    home: Path  # this run's own folder for the user (the suite's workers share the users)

    def run(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """``hitl-vault ARGS`` as this user, in a clean environment."""
        return self.python("-m", "hitl_vault", *args, env=env, check=check)

    def python(
        self, *args: str, env: dict[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [PYTHON, *args],
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            env=_env(self, env),
            capture_output=True,
            text=True,
            timeout=60,
            cwd="/",
        )
        if check and done.returncode != 0:
            raise AssertionError(f"{args} as {self.name}: {done.returncode}\n{done.stderr}")
        return done


def _env(user: User, extra: dict[str, str] | None) -> dict[str, str]:
    home = str(user.home)
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "USER": user.name, "LANG": "C.UTF-8"}
    env.update(extra or {})
    return env


def _user(name: str, home: Path) -> User:
    """The system user ``name`` (made once, kept for later runs), with ``home`` as this run's
    folder for it; tests on other workers may use the same user at the same time."""
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        made = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
            capture_output=True,
        )
        try:
            entry = pwd.getpwnam(name)
        except KeyError:  # not made by another worker either
            raise AssertionError(f"useradd {name}: {made.stderr!r}") from None
    home.mkdir(mode=0o700, exist_ok=True)
    os.chown(home, entry.pw_uid, entry.pw_gid)
    return User(name, entry.pw_uid, entry.pw_gid, home)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


RULES = """\
defaults:
  decision: ask
  timeout: 1h
  quiet: 1s
rules:
  - name: deploys
    action: deploy
    decision: ask
    approvers: [carol]
    authenticated: true
  - name: agent-tools
    action: "re:agent\\\\..*"
    decision: ask
"""


@dataclass
class Setup:
    base: Path
    vault: Path
    sock: Path
    url: str
    service: User
    agent: User
    person: User
    token_file: Path
    server: subprocess.Popen[str]


@pytest.fixture(scope="module")
def setup() -> Iterator[Setup]:
    base = Path(tempfile.mkdtemp(prefix="hv-sep-", dir="/tmp"))
    base.chmod(0o755)
    service, agent, person = (_user(n, base / n) for n in USERS)
    vault = base / service.name / "vault"
    run = base / "run"  # the socket's folder: the service writes it, everyone may connect
    run.mkdir(mode=0o755)
    os.chown(run, service.uid, service.gid)
    service.run("init", str(vault))
    (vault / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    os.chown(vault / "hitl-vault.yaml", service.uid, service.gid)
    vault.chmod(0o700)
    service.run("--vault", str(vault), "people", "add", "carol", "--uid", str(person.uid))
    minted = service.run(
        "--vault", str(vault), "token", "add", "builder", "--role", "agent", "--json"
    )
    token_file = base / agent.name / "token"
    token_file.write_text(json.loads(minted.stdout)["token"], encoding="utf-8")
    token_file.chmod(0o600)
    os.chown(token_file, agent.uid, agent.gid)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    sock = run / "hitl-vault.sock"
    server = subprocess.Popen(
        [
            PYTHON,
            "-m",
            "hitl_vault",
            "--vault",
            str(vault),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
            "--socket",
            str(sock),
        ],
        user=service.uid,
        group=service.gid,
        extra_groups=[],
        env=_env(service, None),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd="/",
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as answer:
                if answer.status == 200 and sock.exists():
                    break
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            server.kill()
            out = server.stdout.read() if server.stdout else ""
            raise AssertionError(f"hitl-vault serve did not start:\n{out}")
        time.sleep(0.05)
    try:
        yield Setup(base, vault, sock, url, service, agent, person, token_file, server)
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        if server.stdout is not None:
            server.stdout.close()
        shutil.rmtree(base, ignore_errors=True)


def _as_agent(s: Setup, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return s.agent.run("--server", s.url, "--token-file", str(s.token_file), *args, check=check)


def _note_says(s: Setup, request_id: str, text: str, timeout: float = 30) -> bool:
    """Whether the request's note (read as the service user) comes to hold ``text``: the
    daemon rewrites it once the note has been quiet for a while."""
    look = (
        "import pathlib, sys, time\n"
        f"deadline = time.monotonic() + {timeout}\n"
        "while time.monotonic() < deadline:\n"
        f"    for p in pathlib.Path({str(s.vault)!r}).rglob('*{request_id}*.md'):\n"
        f"        if {text!r} in p.read_text(encoding='utf-8'): sys.exit(0)\n"
        "    time.sleep(0.05)\n"
        "sys.exit(1)\n"
    )
    return s.service.python("-c", look, check=False).returncode == 0


def _show(s: Setup, request_id: str) -> dict[str, object]:
    done = s.service.run("--vault", str(s.vault), "show", request_id, "--json")
    shown: dict[str, object] = json.loads(done.stdout)
    return shown


def test_an_agent_asks_and_waits_through_the_service_but_cannot_read_the_vault(
    setup: Setup,
) -> None:
    """The agent submits with its token (requested_by is the token's name), and its own
    process cannot list the vault or read the journal."""
    s = setup
    assert (s.vault.stat().st_mode & 0o777) == 0o700
    submitted = json.loads(_as_agent(s, "submit", "deploy", "-p", "env=prod", "--json").stdout)
    assert submitted["status"] == "pending"
    assert submitted["requested_by"] == "builder"
    peek = s.agent.python("-c", f"import os; os.listdir({str(s.vault)!r})", check=False)
    assert peek.returncode != 0 and "PermissionError" in peek.stderr
    journal = s.agent.python(
        "-c", f"open({str(s.vault / '.hitl' / 'journal.db')!r}, 'rb')", check=False
    )
    assert journal.returncode != 0 and "PermissionError" in journal.stderr


def test_an_agent_token_cannot_approve(setup: Setup) -> None:
    """An agent's token asks and never answers: approving over the API is refused (403)
    and the request stays pending."""
    s = setup
    request = json.loads(_as_agent(s, "submit", "deploy", "-p", "env=stage", "--json").stdout)
    refused = _as_agent(s, "approve", str(request["id"]), check=False)
    assert refused.returncode != 0
    assert "403" in refused.stderr or "not allowed" in refused.stderr.lower()
    assert _show(s, str(request["id"]))["status"] == "pending"


def test_nothing_the_agent_writes_on_its_own_disk_fools_its_gate(setup: Setup) -> None:
    """An agent that writes a vault of its own, rules that allow everything and an
    approved note, still gets its call held by the service's gate."""
    s = setup
    fake = s.agent.home / "vault"
    s.agent.run("init", str(fake))
    s.agent.python(
        "-c",
        f"open({str(fake / 'hitl-vault.yaml')!r}, 'w').write('defaults: {{decision: allow}}\\n')",
    )
    call = json.dumps(
        {
            "session_id": "s1",
            "hook_event_name": "PreToolUse",
            "tool_name": "Bash",
            "tool_input": {"command": "deploy --prod"},
            "cwd": str(fake),
        }
    )
    env = {"HITL_VAULT": str(fake), "HITL_VAULT_TOKEN": s.token_file.read_text()}
    done = subprocess.run(
        [PYTHON, "-m", "hitl_vault", "gate", "--server", s.url, "--wait", "0"],
        input=call,
        user=s.agent.uid,
        group=s.agent.gid,
        extra_groups=[],
        env=_env(s.agent, env),
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
    )
    assert '"allow"' not in done.stdout, done.stdout
    assert done.returncode in (0, 2), done.stderr


def test_a_person_decides_through_the_socket_and_it_counts_as_proven(setup: Setup) -> None:
    """carol, a third OS user mapped in people, approves with the CLI through the service's
    socket; under ``authenticated: true`` that approval counts, recorded ``via socket``."""
    s = setup
    request = json.loads(_as_agent(s, "submit", "deploy", "-p", "env=qa", "--json").stdout)
    request_id = str(request["id"])
    s.person.run("--server", f"unix:{s.sock}", "approve", request_id)
    shown = _show(s, request_id)
    assert shown["status"] in ("approved", "executing", "executed")
    assert shown["decided_by"] == "carol"
    assert _note_says(s, request_id, "via socket")


def test_a_claimed_name_does_not_count_where_proof_is_required(setup: Setup) -> None:
    """The service's own user approving ``--by carol`` directly (no proof) leaves the
    request pending under ``authenticated: true``; an unmapped user's socket is refused."""
    s = setup
    request = json.loads(_as_agent(s, "submit", "deploy", "-p", "env=dev", "--json").stdout)
    request_id = str(request["id"])
    claimed = s.service.run("--vault", str(s.vault), "approve", request_id, "--by", "carol",
                            check=False)  # fmt: skip
    assert claimed.returncode != 0
    assert _show(s, request_id)["status"] == "pending"
    stranger = s.agent.run("--server", f"unix:{s.sock}", "approve", request_id, check=False)
    assert stranger.returncode != 0
    assert _show(s, request_id)["status"] == "pending"
