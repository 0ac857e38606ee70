"""A real `hitl-vault serve` for the tests of its doors (the gate over HTTP, the Unix
socket, the --server CLI): a vault with rules, the test's own OS user mapped to the person
``alice``, an agent token, and the service as a subprocess on 127.0.0.1 and a Unix socket."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from hitl_vault.access.tokens import mint
from hitl_vault.identity import Person, Role
from hitl_vault.times import utcnow
from hitl_vault.vault import Vault

from .helpers import COMMAND

RULES = """\
defaults: {decision: ask, timeout: 1h}
rules:
  - {name: reads, action: Read, decision: allow}
  - {name: no-rm, action: Bash, params: {command: "re:rm .*"}, decision: block, reason: no rm}
"""


@dataclass
class Served:
    """The service and what a test needs to talk to it."""

    vault: Path
    socket: Path
    url: str = ""
    agent_token: str = ""
    approver_token: str = ""
    process: subprocess.Popen[bytes] | None = None
    log: Path | None = None

    def map_me(self, name: str = "alice", *, disabled: bool = False) -> None:
        """This OS user is ``name`` in people (written to the store directly: `people add`
        refuses the service's own uid and root, which is who runs the tests)."""
        with Vault(self.vault) as v:
            person = Person(name, uids=(os.getuid(),), disabled=disabled)
            v.engine.journal.save_person(person, utcnow(), "test", "person changed")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)


def serving(rules: str = RULES) -> Iterator[Served]:
    """Start the service (for a module-scoped fixture); stop it and clean up after."""
    from hitl_vault.cli.template import init_vault

    # Short (AF_UNIX paths have ~100 bytes) and traversable by any user (0755).
    home = Path(tempfile.mkdtemp(prefix="hv-"))
    home.chmod(0o755)
    vault = home / "vault"
    init_vault(vault)
    (vault / "hitl-vault.yaml").write_text(rules, encoding="utf-8")
    served = Served(vault, home / "run" / "hv.sock")
    served.map_me()
    with Vault(vault) as v:
        store, now = v.engine.journal, utcnow()
        _, served.agent_token = mint(store, "ci-bot", Role.AGENT, now=now, by="test")
        _, served.approver_token = mint(store, "alice", Role.APPROVER, now=now, by="test")
    # --no-mcp: these tests use the REST API, the gate and the socket, and a start that
    # loads the MCP SDK costs a second of CPU (tests/test_mcp_http.py serves /mcp).
    argv = [str(COMMAND), "--vault", str(vault), "serve", "--listen", "127.0.0.1:0",
            "--socket", str(served.socket), "--no-mcp"]  # fmt: skip
    served.log = home / "serve.log"
    with open(served.log, "wb") as log:  # a file, not a pipe nobody drains
        served.process = subprocess.Popen(argv, stderr=log, stdin=subprocess.DEVNULL)
    try:
        served.url = _started(served)
        yield served
    finally:
        served.stop()
        shutil.rmtree(home, ignore_errors=True)


def _started(served: Served, timeout: float = 30.0) -> str:
    """The service's URL, once it says it serves and its socket is there."""
    assert served.process is not None and served.log is not None
    deadline = time.monotonic() + timeout
    said = ""
    while time.monotonic() < deadline and served.process.poll() is None:
        said = served.log.read_text(encoding="utf-8", errors="replace")
        found = re.search(r"on (http://127\.0\.0\.1:\d+)", said)
        if found and served.socket.exists():
            return found.group(1)
        time.sleep(0.05)  # polling a log file: no event to wait on
    served.stop()
    said = served.log.read_text(encoding="utf-8", errors="replace")
    raise AssertionError(f"hitl-vault serve did not start:\n{said}")
