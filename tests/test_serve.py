"""``hitl-vault serve`` as a user runs it: what it refuses at start, what it records, and a
real process killed with -9 while clients wait (nothing decided is lost, and a restarted
service answers the same requests), then stopped with SIGTERM (exit 0); at start it warns
of rules that count names anyone can claim."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from hitl_vault import Client, Vault
from hitl_vault.cli.main import cli
from hitl_vault.cli.template import init_vault
from hitl_vault.errors import ServiceError
from hitl_vault.identity import Person, Role
from hitl_vault.times import utcnow

RULES = """\
defaults:
  decision: ask
rules:
  - name: two-people
    action: release
    approvers: [alice, bob]
    quorum: 2
    decision: ask
"""


def test_serve_refuses_a_remote_address_without_allow_remote(tmp_path: Path) -> None:
    """A non-loopback --listen needs --allow-remote: exit 2 and the reason, nothing started."""
    init_vault(tmp_path / "v")
    result = CliRunner().invoke(
        cli, ["--vault", str(tmp_path / "v"), "serve", "--listen", "0.0.0.0:8787"]
    )
    assert result.exit_code == 2
    assert "--allow-remote" in result.output and "TLS reverse proxy" in result.output


@pytest.mark.parametrize(
    ("option", "said"),
    [
        (["--listen", "8787"], "is not HOST:PORT"),
        (["--listen", "127.0.0.1:²"], "is not HOST:PORT"),
        (["--public-url", "http://vault.example.com"], "unencrypted"),
        (["--public-url", "http://evil.localhost"], "unencrypted"),
        (["--listen", "evil.localhost:8787"], "--allow-remote"),
        (["--public-url", "vault.example.com"], "not an http(s) URL"),
        (["--trusted-proxy", "proxy.local"], "not an IP address"),
    ],
)
def test_serve_names_the_bad_option(tmp_path: Path, option: list[str], said: str) -> None:
    """Each bad option is exit 2 with a message naming it and the fix."""
    result = CliRunner().invoke(cli, ["--vault", str(tmp_path), "serve", *option])
    assert result.exit_code == 2 and option[0] in result.output and said in result.output


def test_the_public_url_change_is_journaled_as_the_os_user_not_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The public URL's change is recorded by the OS user running serve; $USER, which any
    caller sets, is not believed."""
    from hitl_vault.access.names import os_user
    from hitl_vault.cli.serve import _record

    init_vault(tmp_path / "v")
    for variable in ("USER", "LOGNAME", "LNAME", "USERNAME"):
        monkeypatch.setenv(variable, "mallory")
    with Vault(tmp_path / "v") as vault:
        assert _record(vault, "https://vault.example.com") == "https://vault.example.com"
        changed = [e for e in vault.engine.journal.service_log() if e.subject == "public_url"]
    assert [e.by for e in changed] == [os_user()] and os_user() != "mallory"


@dataclass
class Running:
    """A ``hitl-vault serve`` process, its stderr gathered as it comes."""

    process: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)
    port: int = 0
    reader: threading.Thread = field(init=False)

    def __post_init__(self) -> None:
        self.reader = threading.Thread(target=self.read)
        self.reader.start()

    def read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)
            found = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
            if "/mcp" in line:  # the last of the lines it prints at start
                self.started.set()
        self.started.set()

    def stop(self) -> None:
        """Killed if it still runs; its stderr read to the end and closed."""
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self.reader.join(10)
        assert self.process.stderr is not None
        self.process.stderr.close()


def start(root: Path, *options: str) -> Running:
    command = [sys.executable, "-m", "hitl_vault", "--vault", str(root), "serve"]
    process = subprocess.Popen(
        [*command, "--listen", "127.0.0.1:0", *options], stderr=subprocess.PIPE, text=True
    )
    running = Running(process)
    assert running.started.wait(30) and running.port, "".join(running.lines)
    return running


def mint(root: Path, name: str, role: Role) -> str:
    from hitl_vault.access.tokens import mint as minted

    with Vault(root) as vault:
        journal, now = vault.engine.journal, utcnow()
        if role is Role.APPROVER:
            journal.save_person(Person(name), now, "test", "person added")
        _, secret = minted(
            journal, name, role, actions=None, expires=timedelta(days=1), now=now,
            by="test",
        )  # fmt: skip
    return secret


def _wait_into(client: Client, request_id: str, errors: list[BaseException]) -> None:
    try:
        client.wait(request_id, timeout=30)
    except BaseException as e:
        errors.append(e)


@pytest.mark.process
@pytest.mark.slow
def test_killed_with_waits_open_nothing_decided_is_lost_and_sigterm_exits_0(
    tmp_path: Path,
) -> None:
    """A new vault made at start; kill -9 with long-polls open: the clients get an error, the
    approval made before stands, a restarted service answers the same requests; SIGTERM
    then exits 0 at once, a long-poll open."""
    root = tmp_path / "vault"  # none yet: serve makes it from the template, as run does
    first = start(root, "--public-url", "https://vault.example.com")
    try:
        assert any(f"created a new vault at {root}" in line for line in first.lines)
        (root / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
        agent_token = mint(root, "bot", Role.AGENT)
        alice_token = mint(root, "alice", Role.APPROVER)
        _kill_and_restart(root, first, agent_token, alice_token)
    finally:
        first.stop()


def _kill_and_restart(root: Path, first: Running, agent_token: str, alice_token: str) -> None:
    assert any("public URL: https://vault.example.com" in line for line in first.lines)
    agent = Client(f"http://127.0.0.1:{first.port}", agent_token)
    decided, waited = agent.submit("deploy")["id"], agent.submit("deploy")["id"]
    Client(f"http://127.0.0.1:{first.port}", alice_token).approve(decided, "ok")
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            agent.wait(waited, timeout=30)
        except BaseException as e:
            errors.append(e)

    waiters = [threading.Thread(target=wait) for _ in range(3)]
    for thread in waiters:
        thread.start()
    first.process.kill()
    first.process.wait(10)
    for thread in waiters:
        thread.join(20)
    assert len(errors) == 3 and all(isinstance(e, ServiceError) for e in errors), errors

    second = start(root)
    try:
        again = Client(f"http://127.0.0.1:{second.port}", agent_token)
        assert again.get(decided)["status"] == "approved"
        assert again.get(waited)["status"] == "pending"
        assert any("public URL: https://vault.example.com" in line for line in second.lines)
        public = http.client.HTTPConnection("127.0.0.1", second.port, timeout=10)
        public.request("GET", "/healthz", headers={"Host": "vault.example.com"})
        answer = public.getresponse()
        assert (answer.status, answer.read()[:6]) == (200, b'{"ok":')  # the kept URL's host
        public.request("POST", "/mcp", b"{}", headers={"Content-Type": "application/json"})
        answer = public.getresponse()
        assert (answer.status, answer.read()) == (401, b'{"error": "unauthorized"}')  # mounted
        public.close()
        assert any(line.startswith("/mcp served") for line in second.lines)
        held: list[BaseException] = []
        holding = threading.Thread(target=lambda: _wait_into(again, waited, held))
        holding.start()
        time.sleep(0.2)  # the long-poll is open (it ends at the stop either way)
        stopped = time.monotonic()
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(20) == 0, "".join(second.lines)
        assert time.monotonic() - stopped < 5  # the open long-poll did not hold the stop up
        holding.join(20)
        assert held and isinstance(held[0], ServiceError)
        second.reader.join(10)
        warned = [line for line in second.lines if line.startswith("warning: ")]
        assert len(warned) == 1 and "rule two-people asks for 2 approvals" in warned[0]
    finally:
        second.stop()
    with Vault(root) as vault:
        assert vault.engine.journal.setting("public_url") == "https://vault.example.com"
        assert vault.engine.journal.setting("service_uid") == str(os.getuid())


def test_the_service_is_ready_only_once_its_daemon_watches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The service says it serves (Serving.ready, and the CLI's "serving ... on" line with
    it) only once its daemon watches the vault, the watcher and the notifier running, even
    when the daemon is slower to start than the HTTP server (made so here: half a second)."""
    from hitl_vault.daemon.loop import Daemon

    from .servers import serving

    start = Daemon.run_forever

    def slow_start(self: Daemon, ready: threading.Event | None = None) -> None:
        time.sleep(0.5)  # the race made certain: the HTTP server is up first
        start(self, ready)

    monkeypatch.setattr(Daemon, "run_forever", slow_start)
    with serving(tmp_path / "vault") as server:
        running = {t.name for t in threading.enumerate() if t.is_alive()}
        assert server.call("GET", "/healthz").status == 200
    assert {"hitl-notify", "hitl-vault-watcher"} <= running
