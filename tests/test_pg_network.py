"""The journal on PostgreSQL when the network or the server fails.

A CLI on a host whose journal is on a server leaves new notes to the leader; two ``hitl-vault
serve`` hosts (as in tests/test_pg_failover.py, whose helpers these reuse) each reach the
server through a small proxy of their own, which the test cuts (every connection through it
closed, every new one refused: a firewall's reject) and heals.
"""

from __future__ import annotations

import json
import os
import random
import selectors
import shutil
import socket
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import closing, suppress
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from hitl_vault.access.tokens import mint
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.identity import Person, Role
from hitl_vault.journal.pg import PgJournal
from hitl_vault.journal.pg_url import JOURNAL_ENV
from hitl_vault.model import Kind
from hitl_vault.times import utcnow
from hitl_vault.vault import Vault

from . import pgserver
from .helpers import eventually
from .pgserver import fresh_journal
from .test_cli import submitted
from .test_pg_failover import (
    RAN,
    RULES,
    Cluster,
    Host,
    _approving,
    _check_ran_once,
    _follows,
)

# Approvals while the leader is cut off (the stress step of ``.ci/run``: 200).
APPROVALS = int(os.environ.get("HITL_PG_NETWORK_APPROVALS", "4"))
# Long-polls open while the server restarts (the stress step of ``.ci/run``: 200).
POLLS = int(os.environ.get("HITL_PG_RESTART_POLLS", "10"))
# An action asked about and decided, with nothing to run (no executor).
MEMO = """\
  - {name: memo, action: memo, decision: ask}
"""


@pytest.mark.slow
def test_a_cli_leaves_new_notes_to_the_leader_while_a_lease_is_live(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a host whose journal is on a server, ``submit`` writes no note while another
    process leads (the leader writes it from the journal), and writes it when none leads."""
    root = tmp_path / "vault"
    init_vault(root)
    url = fresh_journal(pg_url)
    monkeypatch.setenv(JOURNAL_ENV, url)
    args = ("payment", "-p", "amount=1500", "-p", "recipient=v@x.y")
    with closing(PgJournal(url)) as other:
        lease = other.lease(30)
        term = lease.take()
        assert term is not None
        led = submitted(root, *args)
        assert led["status"] == "pending" and led["path"] is None
        assert not [p for p in root.rglob("*.md") if led["id"] in p.name]
        lease.release(term)
        lease.close()
    alone = submitted(root, *args)
    assert alone["path"] is not None and (root / alone["path"]).is_file()


@pytest.mark.slow
def test_a_deposed_leaders_notifier_cannot_mark_what_it_sent(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The notifier's sending threads write as the leader's term: once another term leads,
    the old leader's mark on a notification is refused and it stays due for the new one."""
    root = tmp_path / "vault"
    init_vault(root)
    url = fresh_journal(pg_url)
    monkeypatch.setenv(JOURNAL_ENV, url)
    with Vault(root) as vault, closing(PgJournal(url)) as other:
        store = vault.engine.journal
        assert isinstance(store, PgJournal)
        rid = vault.submit("payment", {"amount": 1500, "recipient": "v@x.y"}).id
        ours, theirs = store.lease(0.25), other.lease(0.25)
        old = eventually(ours.take, timeout=10)
        assert isinstance(old, int)
        store.enqueue([(rid, "pending", "json://127.0.0.1:9/gone")], utcnow())
        [item] = store.outgoing()
        daemon = Daemon(vault.engine, takeover=True)
        daemon.notifier.as_owner = lambda: store.owner(old)  # as daemon/leader.py sets it
        assert eventually(theirs.take, timeout=10) == old + 1
        sent: list[bool] = []  # sent from a thread of its own, as the notifier's lanes do
        sender = threading.Thread(target=lambda: sent.append(daemon.notifier._send(item)))
        sender.start()
        sender.join(10)
        daemon.close()
        ours.close()
        theirs.close()
        assert sent == [False]
        assert [(i.id, i.attempts) for i in store.outgoing()] == [(item.id, 0)]


class Proxy:
    """A Unix socket that forwards each connection to the server, until :meth:`cut`. One
    thread carries every connection (started with the module's hosts, so no test leaves it)."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        query = dict(parse_qsl(parts.query))
        host = query.get("host") or parts.hostname or "/tmp"
        port = int(query.get("port") or parts.port or 5432)
        self._to: Any = f"{host}/.s.PGSQL.{port}" if host.startswith("/") else (host, port)
        self.folder = tempfile.mkdtemp(prefix="pgp-")  # short: a socket's path has a limit
        query.update(host=self.folder, port="5432")
        user = f"{parts.username}@" if parts.username else ""
        self.url = urlunsplit((parts.scheme, user, parts.path, urlencode(query), ""))
        self._listener = socket.socket(socket.AF_UNIX)
        self._listener.bind(f"{self.folder}/.s.PGSQL.5432")
        self._listener.listen(64)
        self._listener.setblocking(False)
        self._select = selectors.DefaultSelector()
        self._select.register(self._listener, selectors.EVENT_READ, None)
        self.is_cut = False
        self._to_cut = threading.Event()  # asked to close every connection
        self._done = threading.Event()  # set when the loop has done what was asked
        self._closing = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._closing:
            for key, _ in self._select.select(0.05):
                if key.data is None:
                    self._accept()
                else:
                    self._forward(key.fileobj, key.data)  # type: ignore[arg-type]
            if self._to_cut.is_set():
                for key in list(self._select.get_map().values()):
                    if key.data is not None:
                        self._drop(key.fileobj)  # type: ignore[arg-type]
                self._to_cut.clear()
                self._done.set()
        self._select.close()
        self._listener.close()

    def _accept(self) -> None:
        with suppress(BlockingIOError):
            near, _ = self._listener.accept()
            if self.is_cut:
                near.close()
                return
            family = socket.AF_UNIX if isinstance(self._to, str) else socket.AF_INET
            far = socket.socket(family)
            try:
                far.connect(self._to)
            except OSError:
                near.close()
                far.close()
                return
            self._select.register(near, selectors.EVENT_READ, far)
            self._select.register(far, selectors.EVENT_READ, near)

    def _forward(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            chunk = source.recv(65536)
            if chunk:
                sink.sendall(chunk)
                return
        except OSError:
            pass
        self._drop(source)

    def _drop(self, end: socket.socket) -> None:
        """Close a connection, both its ends."""
        try:
            ends = (end, self._select.get_key(end).data)
        except (KeyError, ValueError):  # closed already, with its other end
            return
        for one in ends:
            with suppress(KeyError, ValueError):
                self._select.unregister(one)
            with suppress(OSError):
                one.shutdown(socket.SHUT_RDWR)
            one.close()

    def cut(self) -> None:
        """Close every connection through it, and refuse new ones."""
        self.is_cut = True
        self._done.clear()
        self._to_cut.set()
        assert self._done.wait(10), "the proxy did not cut its connections"

    def heal(self) -> None:
        self.is_cut = False

    def close(self) -> None:
        self._closing = True
        self._thread.join(10)
        shutil.rmtree(self.folder, ignore_errors=True)


def _post(host: Host, path: str, body: dict[str, Any], token: str) -> tuple[int, Any]:
    """The status and body of one API call, whatever the status."""
    request = urllib.request.Request(
        f"{host.url}{path}", json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def server(pg_url: str) -> Iterator[pgserver.Server]:
    """A server of this module's own, which a test restarts (``pg_url`` says whether one
    can be started here, and skips saying why if not)."""
    own = pgserver.start()
    try:
        yield own
    finally:
        own.stop()


@pytest.fixture(scope="module")
def proxied(
    server: pgserver.Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Cluster, dict[str, Proxy]]]:
    """Two hosts, each reaching the journal through a proxy of its own."""
    home = Path(tmp_path_factory.mktemp("cut-off"))
    root = home / "vault"
    init_vault(root)
    (root / "hitl-vault.yaml").write_text(
        RULES.replace("actions:", MEMO + "actions:"), encoding="utf-8"
    )
    (root / "ran.py").write_text(RAN, encoding="utf-8")
    journal = fresh_journal(server.url)
    proxies = {name: Proxy(journal) for name in ("a", "b")}
    os.environ[JOURNAL_ENV] = journal
    try:
        with Vault(root) as vault:
            store, now = vault.engine.journal, utcnow()
            _, agent = mint(store, "ci-bot", Role.AGENT, now=now, by="test")
            store.save_person(Person("alice"), now, "test", "person added")
            _, approver = mint(store, "alice", Role.APPROVER, now=now, by="test")
        hosts = [Host(name, home, journal=proxies[name].url) for name in ("a", "b")]
        made = Cluster(root, journal, agent, approver, hosts)
        try:
            made.running()
            yield made, proxies
        finally:
            for host in made.hosts:
                if host.process is not None and host.process.poll() is None:
                    host.process.kill()
                    host.process.wait(20)
            for proxy in proxies.values():
                proxy.close()
    finally:
        del os.environ[JOURNAL_ENV]


@pytest.mark.slow
@pytest.mark.process
def test_a_leader_cut_off_from_the_database_is_replaced_and_rejoins_when_healed(
    proxied: tuple[Cluster, dict[str, Proxy]],
) -> None:
    """The leader cut off from the database at a random moment while approvals come in: the
    other leads, the cut-off host answers 503 (never 500), and once healed it follows;
    every request finishes, each ran once (interrupted ones at most once), verify is clean."""
    cluster, proxies = proxied
    cluster.running()
    leader = cluster.leader()
    other = next(h for h in cluster.hosts if h is not leader)
    term = leader.health()["term"]
    cut = threading.Event()

    def cut_off() -> None:
        time.sleep(random.uniform(0.0, 0.05 * APPROVALS))  # a moment while approvals come in
        proxies[leader.name].cut()
        cut.set()

    cutter = threading.Thread(target=cut_off)
    cutter.start()
    # Idempotent ones too in the stress step: run again after the election, they add the
    # action's timeout and the kill's grace (4 s) to the test.
    ids, idempotent = _approving(cluster, other, APPROVALS, 0, every=3 if APPROVALS > 10 else 1000)
    cutter.join()
    try:
        assert cluster.leader([other]) is other
        new = other.health()["term"]
        assert new > term
        assert eventually(lambda: leader.health()["role"] == "follower", timeout=10)
        status, said = _post(leader, "/api/v1/requests", {"action": "pay"}, cluster.agent)
        assert status == 503, (status, said)
        status, said = _post(leader, f"/api/v1/requests/{ids[0]}/decision",
                             {"decision": "approve"}, cluster.approver)  # fmt: skip
        assert status == 503, (status, said)
    finally:
        proxies[leader.name].heal()
    assert eventually(lambda: _follows(leader.health(), new), timeout=20)
    later, more = _approving(cluster, leader, 2, 1000)  # the healed host serves again
    _check_ran_once(cluster, ids + later, idempotent | more)
    assert other.health() == {**other.health(), "role": "leader", "term": new}


@pytest.mark.slow
@pytest.mark.process
def test_a_follower_cut_off_answers_503_and_loses_nothing_it_acknowledged(
    proxied: tuple[Cluster, dict[str, Proxy]],
) -> None:
    """Submits keep coming to a follower while it is cut off from the database and healed:
    each is answered 201 or 503, never 500, and every 201 it gave is in the journal."""
    cluster, proxies = proxied
    cluster.running()
    follower = next(h for h in cluster.hosts if h is not cluster.leader())
    answers: list[tuple[int, Any]] = []
    healed = threading.Event()

    def submitting() -> None:
        n, deadline = 0, time.monotonic() + 60
        while time.monotonic() < deadline and (
            not healed.is_set() or sum(1 for s, _ in answers[-3:] if s == 201) < 3
        ):
            n += 1
            body = {"action": "pay", "params": {"n": 5000 + n}}
            answers.append(_post(follower, "/api/v1/requests", body, cluster.agent))

    sender = threading.Thread(target=submitting)
    sender.start()
    try:
        assert eventually(lambda: any(s == 201 for s, _ in answers), timeout=20)
        proxies[follower.name].cut()
        start = len(answers)
        assert eventually(lambda: any(s == 503 for s, _ in answers[start:]), timeout=20)
    finally:
        proxies[follower.name].heal()
        healed.set()
        sender.join(60)
    assert {s for s, _ in answers} == {201, 503}, {s for s, _ in answers}
    given = [said["id"] for s, said in answers if s == 201]
    with Vault(cluster.root) as vault:
        assert all(vault.get(rid).action == "pay" for rid in given)
        assert eventually(lambda: vault.verify() == [], timeout=30)  # the leader's notes too


def _get(host: Host, path: str, token: str, timeout: float = 90) -> tuple[int, Any]:
    """The status and body of one GET, whatever the status."""
    request = urllib.request.Request(
        f"{host.url}{path}", headers={"Authorization": f"Bearer {token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def _approve(cluster: Cluster, via: Host, rid: str) -> tuple[int, Any]:
    body = {"decision": "approve"}
    return _post(via, f"/api/v1/requests/{rid}/decision", body, cluster.approver)


def _until_not_503(call: Any) -> tuple[int, Any]:
    """``call()`` again while it answers 503 (the journal cannot be used just now), as a
    client is told to; any other answer is returned."""
    answer = eventually(lambda: (got := call())[0] != 503 and got, timeout=30)
    assert isinstance(answer, tuple)
    return answer


@pytest.mark.slow
@pytest.mark.process
def test_long_polls_open_while_the_database_restarts_all_return_the_decision(
    proxied: tuple[Cluster, dict[str, Proxy]], server: pgserver.Server
) -> None:
    """The server restarted (``pg_ctl restart -m fast``) while long-polls wait on both
    hosts: both reconnect, one leads, every poll returns its request's decision once,
    each request is decided once, and verify is clean."""
    cluster, _ = proxied
    hosts = cluster.running()
    ids = []
    for n in range(POLLS):
        via = hosts[n % 2]
        made = via.call("/api/v1/requests", {"action": "memo", "params": {"n": n}}, cluster.agent)
        assert made["status"] == "pending", made
        ids.append(made["id"])
    answers: dict[str, tuple[int, Any]] = {}

    def poll(n: int, rid: str) -> None:
        answers[rid] = _get(hosts[n % 2], f"/api/v1/requests/{rid}?wait=60", cluster.agent)

    polls = [threading.Thread(target=poll, args=(n, rid)) for n, rid in enumerate(ids)]
    for thread in polls:
        thread.start()
    time.sleep(1.0)  # let the polls reach their wait: nothing outside the server shows it
    assert not answers, answers  # all still waiting for a decision
    data = server.folder / "data"
    restart = ["pg_ctl", "restart", "-D", str(data), "-m", "fast", "-w", "-t", "60", "-l", "log"]
    pgserver._run(restart, server.folder)
    for n, rid in enumerate(ids):  # decided through the other host than the one polled
        status, said = _until_not_503(partial(_approve, cluster, hosts[(n + 1) % 2], rid))
        assert status == 200 and said["status"] == "approved", (status, said)
    for thread in polls:
        thread.join(90)
    assert sorted(answers) == sorted(ids)
    assert {rid: a[1]["status"] for rid, a in answers.items() if a[0] != 200} == {}
    assert {a[1]["status"] for a in answers.values()} == {"approved"}
    cluster.leader()  # both answer again, and one of them leads
    with Vault(cluster.root) as vault:
        for rid in ids:
            history = vault.get(rid).history
            moves = [t.to_status for t in history if t.kind is Kind.TRANSITION][1:]
            assert [str(m) for m in moves] == ["approved"], (rid, moves)
        assert eventually(lambda: vault.verify() == [], timeout=30)  # the leader's notes too
