"""Two ``hitl-vault serve`` processes on one PostgreSQL journal, sharing one vault folder
(two services on one host: the lease, not a file lock, decides who leads), the leader
killed with -9 or frozen with SIGSTOP while approvals come in over the API.

Each action's program appends its request's id and idempotency key to ``ran.log`` before
it does its (short) work, so the log says what ran and how often. The lease is a second
long, renewed every quarter second. ``HITL_PG_FAILOVER_APPROVALS`` (the stress step of
``.ci/run``) approves more requests per round.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hitl_vault.access.tokens import mint
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.workers import INTERRUPTED
from hitl_vault.identity import Person, Role
from hitl_vault.journal.pg_url import JOURNAL_ENV
from hitl_vault.model import Status
from hitl_vault.times import utcnow
from hitl_vault.vault import Vault

from .helpers import COMMAND, eventually
from .pgserver import fresh_journal

APPROVALS = int(os.environ.get("HITL_PG_FAILOVER_APPROVALS", "12"))
LEASE = 1.0
ENV = {"HITL_VAULT_LEASE": "1s", "HITL_VAULT_LEASE_RENEW": "250ms"}

# The action's program: say what ran (before doing anything), then work a moment.
RAN = """\
import json, os, sys, time
asked = json.load(sys.stdin)
line = f"{asked['id']} {asked['idempotency_key']}\\n".encode()
fd = os.open("ran.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
os.write(fd, line)
os.close(fd)
time.sleep(0.3)
print("done")
"""

RULES = f"""\
defaults: {{decision: ask, timeout: 1h, quiet: 200ms}}
rules:
  - {{name: all, action: [pay, sync], decision: ask}}
actions:
  pay:
    run: [{json.dumps(sys.executable)}, ran.py]
    timeout: 20s
    idempotent: false
  sync:
    run: [{json.dumps(sys.executable)}, ran.py]
    timeout: 2s
    idempotent: true
"""


@dataclass
class Host:
    """One ``hitl-vault serve`` process."""

    name: str
    home: Path
    process: subprocess.Popen[bytes] | None = None
    url: str = ""
    said: int = 0  # bytes of its log written before this run
    journal: str = ""  # its own URL for the journal (a proxy's), else the cluster's

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=timeout) as answer:
            body: dict[str, Any] = json.load(answer)
        return body

    def call(self, path: str, body: dict[str, Any], token: str) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}{path}", json.dumps(body).encode(), method="POST",
            headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=30) as answer:
            made: dict[str, Any] = json.load(answer)
        return made


@dataclass
class Cluster:
    """Two hosts on one vault folder and one journal, and what the tests need to ask."""

    root: Path
    journal: str
    agent: str
    approver: str
    hosts: list[Host] = field(default_factory=list)
    asked: set[str] = field(default_factory=set)  # every request asked for, by any test
    noted: dict[str, str | None] = field(default_factory=dict)  # where the API put its note

    def start(self, host: Host) -> None:
        log = host.home / f"{host.name}.log"
        host.said = log.stat().st_size if log.exists() else 0  # what an earlier run wrote
        # --no-mcp: the hosts are asked over the REST API; loading the SDK costs a second.
        argv = [str(COMMAND), "--vault", str(self.root), "serve", "--listen", "127.0.0.1:0",
                "--socket", str(host.home / f"{host.name}.sock"), "--no-mcp"]  # fmt: skip
        env = {**os.environ, JOURNAL_ENV: host.journal or self.journal, **ENV}
        with open(log, "ab") as out:
            host.process = subprocess.Popen(argv, stderr=out, stdin=subprocess.DEVNULL, env=env)

    def wait_started(self, host: Host) -> None:
        log = host.home / f"{host.name}.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            said = log.read_bytes()[host.said :].decode(errors="replace")
            found = re.search(r"on (http://127\.0\.0\.1:\d+)", said)
            if found:
                host.url = found.group(1)
                return
            assert host.process is not None and host.process.poll() is None, log.read_text()
            time.sleep(0.05)  # polling a log file: no event to wait on
        raise AssertionError(f"{host.name} did not start:\n{log.read_text()}")

    def running(self) -> list[Host]:
        """Start whichever host is not running, and wait until both serve."""
        stopped = [h for h in self.hosts if h.process is None or h.process.poll() is not None]
        for host in stopped:
            self.start(host)
        for host in stopped:
            self.wait_started(host)
        return self.hosts

    def leader(self, among: list[Host] | None = None) -> Host:
        """The one host that says it leads (waiting for an election)."""

        def one() -> Host | None:
            leading = [h for h in among or self.hosts if h.health()["role"] == "leader"]
            return leading[0] if len(leading) == 1 else None

        found = eventually(one, timeout=20)
        assert isinstance(found, Host)
        return found

    def ask(self, via: Host, action: str, n: int) -> str:
        made = via.call("/api/v1/requests", {"action": action, "params": {"n": n}}, self.agent)
        assert made["status"] == "pending", made
        self.asked.add(made["id"])
        self.noted[made["id"]] = made["path"]
        return str(made["id"])

    def approve(self, via: Host, rid: str) -> None:
        decided = via.call(f"/api/v1/requests/{rid}/decision", {"decision": "approve"},
                           self.approver)  # fmt: skip
        assert decided["status"] in ("approved", "executing", "executed"), decided

    def ran(self) -> Counter[str]:
        """How often each request's action started, checking each used its own id as key."""
        log = self.root / "ran.log"
        lines = log.read_text().split("\n") if log.exists() else []
        pairs = [line.split() for line in lines if line]
        assert all(rid == key for rid, key in pairs), pairs
        return Counter(rid for rid, _ in pairs)


@pytest.fixture(scope="module")
def cluster(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    home = Path(tmp_path_factory.mktemp("two-hosts"))
    root = home / "vault"
    init_vault(root)
    (root / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    (root / "ran.py").write_text(RAN, encoding="utf-8")
    journal = fresh_journal(pg_url)
    os.environ[JOURNAL_ENV] = journal
    try:
        with Vault(root) as vault:
            store, now = vault.engine.journal, utcnow()
            _, agent = mint(store, "ci-bot", Role.AGENT, now=now, by="test")
            store.save_person(Person("alice"), now, "test", "person added")
            _, approver = mint(store, "alice", Role.APPROVER, now=now, by="test")
        made = Cluster(root, journal, agent, approver, [Host("a", home), Host("b", home)])
        try:
            made.running()
            yield made
        finally:
            for host in made.hosts:  # the journal is thrown away: no need to stop gracefully
                if host.process is not None and host.process.poll() is None:
                    host.process.kill()
                    host.process.wait(20)
    finally:
        del os.environ[JOURNAL_ENV]


def _settled(cluster: Cluster, ids: list[str]) -> dict[str, Any]:
    """Every request finished (executed or failed), as the journal says."""
    with Vault(cluster.root) as vault:
        done = {rid: vault.get(rid) for rid in ids}
    final = {Status.EXECUTED, Status.FAILED}
    assert all(r.status in final for r in done.values()), {
        rid: r.status for rid, r in done.items() if r.status not in final
    }
    return done


def _check_ran_once(cluster: Cluster, ids: list[str], idempotent: set[str]) -> None:
    """Executed non-idempotent actions ran exactly once, interrupted ones at most once,
    idempotent ones at least once, and nothing ran that was not one of ``ids``."""
    done = eventually(lambda: _quietly(_settled, cluster, ids), timeout=40 + 0.1 * len(ids))
    assert isinstance(done, dict)
    ran = cluster.ran()
    assert set(ran) <= cluster.asked, set(ran) - cluster.asked  # nothing unknown ran
    for rid, request in done.items():
        if rid in idempotent:  # run again after a takeover, with the same key: at least once
            assert ran[rid] >= 1, rid
            if request.status is Status.FAILED:  # its own run failed: over its timeout, busy
                assert (request.error or "").startswith("timed out"), (rid, request.error)
        elif request.status is Status.FAILED:
            assert request.error == INTERRUPTED, (rid, request.error)
            assert ran[rid] <= 1, (rid, ran[rid])
        else:
            assert ran[rid] == 1, (rid, ran[rid])
        assert request.decided_by == "alice", rid
    with Vault(cluster.root) as vault:  # every note written (by a leader), as the journal says
        assert eventually(lambda: vault.verify() == [], timeout=20)
        for rid in ids:
            path = vault.get(rid).path
            assert path is not None and (cluster.root / path).is_file(), (rid, path)


def _follows(health: dict[str, Any], term: int) -> bool:
    # A follower that has not read the lease since it woke says no term yet.
    seen = health["term"]
    return bool(health["role"] == "follower" and seen is not None and seen >= term)


def _quietly(check: Any, *args: Any) -> Any:
    """``check(*args)``, or None while its assertion fails (for ``eventually``)."""
    try:
        return check(*args)
    except AssertionError:
        return None


def _approving(
    cluster: Cluster, via: Host, count: int, first: int = 0, every: int = 3
) -> tuple[list[str], set[str]]:
    """Ask for ``count`` actions (one in ``every`` idempotent) and approve each, through
    ``via``."""
    ids, idempotent = [], set()
    for n in range(first, first + count):
        action = "sync" if n % every == 0 else "pay"
        rid = cluster.ask(via, action, n)
        cluster.approve(via, rid)
        ids.append(rid)
        if action == "sync":
            idempotent.add(rid)
    return ids, idempotent


@pytest.mark.slow
@pytest.mark.process
def test_the_other_host_leads_within_the_lease_after_kill_9_and_nothing_runs_twice(
    cluster: Cluster,
) -> None:
    """The leader killed with -9 at a random moment while approvals come in: the other leads
    within the lease, every request finishes, each ran once (interrupted ones at most once),
    nothing ran unapproved, and verify is clean."""
    hosts = cluster.running()
    leader = cluster.leader()
    survivor = next(h for h in hosts if h is not leader)
    assert survivor.health()["role"] == "follower"
    term = leader.health()["term"]
    assert survivor.health()["term"] == term
    assert leader.process is not None
    killed = threading.Event()
    killed_at: list[float] = []

    led_at: list[float] = []

    def kill() -> None:
        time.sleep(random.uniform(0.0, 0.05 * APPROVALS))  # a moment while approvals come in
        assert leader.process is not None
        leader.process.send_signal(signal.SIGKILL)
        killed_at.append(time.monotonic())
        killed.set()
        # When the survivor leads, seen as it happens (the approvals go on meanwhile, and a
        # long run of them would otherwise be counted in the takeover's time).
        eventually(lambda: survivor.health()["role"] == "leader", timeout=30)
        led_at.append(time.monotonic())

    killer = threading.Thread(target=kill)
    killer.start()
    ids, idempotent = _approving(cluster, survivor, APPROVALS, 0)
    killer.join()
    leader.process.wait(10)
    now_leading = cluster.leader([survivor])
    assert led_at, "the survivor was never seen leading"
    took = led_at[0] - killed_at[0]
    assert now_leading.health()["term"] > term
    assert took < LEASE + 3, f"took {took:.1f} s to lead after the kill"
    _check_ran_once(cluster, ids, idempotent)


@pytest.mark.slow
@pytest.mark.process
def test_a_frozen_leader_is_replaced_and_rejoins_as_a_follower(cluster: Cluster) -> None:
    """The leader frozen (SIGSTOP) for three leases: its successor leads and runs what is
    approved meanwhile under its own term; resumed, the old leader stops acting, runs
    nothing twice and follows."""
    cluster.running()
    frozen = cluster.leader()
    other = next(h for h in cluster.hosts if h is not frozen)
    old = frozen.health()["term"]
    before, idempotent = _approving(cluster, other, 3, 1, every=1000)
    assert [cluster.noted[rid] for rid in before] == [None] * 3  # a follower writes no note
    assert frozen.process is not None
    frozen.process.send_signal(signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        successor = cluster.leader([other])
        new = successor.health()["term"]
        assert new > old
        during, more = _approving(cluster, other, 4, 1001, every=1000)
        done = eventually(lambda: _quietly(_settled, cluster, during), timeout=30)
        assert isinstance(done, dict)
        time.sleep(max(0.0, 3 * LEASE - (time.monotonic() - stopped)))  # frozen 3 leases
    finally:
        frozen.process.send_signal(signal.SIGCONT)
    eventually(lambda: _follows(frozen.health(), new), timeout=10)
    assert other.health()["role"] == "leader" and other.health()["term"] == new
    with Vault(cluster.root) as vault:  # what was approved after the election: the new term's
        store = vault.engine.journal
        for rid in during:
            row = store._db.read_one(  # type: ignore[attr-defined]
                "SELECT claimed_term FROM requests WHERE id = %s", (rid,)
            )
            assert row[0] >= new, (rid, row)
    _check_ran_once(cluster, before + during, idempotent | more)
