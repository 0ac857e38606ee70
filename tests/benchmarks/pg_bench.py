"""hitl-vault on PostgreSQL: the service's speed on the server journal against SQLite's.

Run:  python tests/benchmarks/pg_bench.py [--quick] [--no-tcp]

Not a pytest module. Needs the postgres extra (``pip install -e '.[test]'`` has it). The
server is the one ``$HITL_VAULT_TEST_PG`` names, as is; else a throwaway PostgreSQL 15 that
tests/pgserver.py starts here, restarted durable (``fsync``, ``synchronous_commit`` and
``full_page_writes`` on, as a real server runs, where the suite's is not) and listening on a
Unix socket and on 127.0.0.1, then stopped and removed at the end. Each journal is a schema
of its own there (``fresh_journal``). A real ``hitl-vault serve`` on 127.0.0.1 (an
ephemeral port) serves a fresh vault for each journal; everything started here is stopped
here.

Columns: the SQLite journal in ``.hitl/``; PostgreSQL over its Unix socket; over TCP to
127.0.0.1 (left out with ``--no-tcp``, or when the server was given).

Sections 1-3, on every journal
  1. submit     requests/s: POST /api/v1/requests on one keep-alive connection, and
                Vault.submit in this process, interleaved rounds on the same served vault
                (issue 25's goal, for one host: HTTP at least half the Vault's rate)
  2. wake       a decision over the API -> a long-poll already waiting on the request
                returns: median, p90 (issue 25's goal, for one host: median <= 10 ms)
  3. burst      N submits at once over 8 connections, then N approvals at once over 8
                connections; from the first approval until every request is executed
                (its ``run:`` action is /bin/true), as long-polls waiting on each see it

Then, on the last PostgreSQL journal (TCP if there is one), two ``serve`` processes on one
vault folder and one journal, as two hosts (one leads by the lease, the other follows):
  4. across     a decision through one host -> a long-poll already waiting on the other
                returns, both ways; and both on the follower, for comparison
                (issue 28's goal: median across hosts <= 50 ms)
  5. takeover   kill -9 of the leader's process group at a random moment of its renewals ->
                the other's /healthz says it leads, with the default lease; and -> a
                request approved through it just after the kill is executed
                (issue 28's goal: within 15 s). The killed host is started again to follow,
                and the next round kills the new leader
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hitl_vault import Vault
from hitl_vault.access import tokens
from hitl_vault.access.people import People
from hitl_vault.cli.template import init_vault
from hitl_vault.identity import Role
from hitl_vault.journal.pg_url import JOURNAL_ENV

if __name__ == "__main__":  # run as a script: tests/ is a package of the project's root
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests import pgserver
from tests.benchmarks.serve_bench import (
    Api,
    _poll,
    bench_submit,
    bench_wake,
    free_port,
    med,
    pct,
)

RULES = (
    "defaults:\n  decision: ask\n  timeout: 1h\n  quiet: 0.2s\nrules: []\n"
    "actions:\n  bench:\n    run: [/bin/true]\n    timeout: 60s\n"
)
CONNECTIONS = 8  # the burst's clients
# A host's lease settings: unset for every serve started here, so it runs the default lease.
LEASE_VARS = ("HITL_VAULT_LEASE", "HITL_VAULT_LEASE_RENEW")


@dataclass(frozen=True)
class Journal:
    """One column: a name, the journal's URL (None: the SQLite file in ``.hitl/``), and
    the server's, where more journals are made."""

    name: str
    url: str | None
    server: str | None = None


@contextmanager
def journal_env(url: str | None) -> Iterator[None]:
    """``$HITL_VAULT_JOURNAL`` set to ``url`` (unset for None) in this process meanwhile."""
    before = os.environ.pop(JOURNAL_ENV, None)
    if url is not None:
        os.environ[JOURNAL_ENV] = url
    try:
        yield
    finally:
        os.environ.pop(JOURNAL_ENV, None)
        if before is not None:
            os.environ[JOURNAL_ENV] = before


# --------------------------------------------------------------------------- the server


@contextmanager
def pg_server(tcp: bool) -> Iterator[tuple[str, str | None, str]]:
    """(socket URL, TCP URL or None, how it runs): the given server, or one started here."""
    given = os.environ.get(pgserver.TEST_PG_ENV)
    if given:
        yield given, None, f"given in ${pgserver.TEST_PG_ENV}, as it is"
        return
    server = pgserver.start()
    try:
        port = free_port()
        listen = f"listen_addresses='127.0.0.1' -p {port}" if tcp else "listen_addresses=''"
        options = (
            f"-k {server.folder} -c {listen} -c fsync=on -c synchronous_commit=on "
            "-c full_page_writes=on -c max_connections=200"
        )
        pgserver._run(
            ["pg_ctl", "restart", "-D", "data", "-l", "log", "-w", "-t", "60", "-m", "fast",
             "-o", options],
            server.folder,
        )  # fmt: skip
        socket_url = f"{server.url}&port={port}" if tcp else server.url
        tcp_url = f"postgresql://hitl@127.0.0.1:{port}/postgres" if tcp else None
        yield socket_url, tcp_url, "started here: fsync, synchronous_commit, full_page_writes on"
    finally:
        server.stop()


def server_facts(url: str) -> str:
    import psycopg

    with psycopg.connect(url) as conn:
        version = conn.execute("SHOW server_version").fetchone()
        settings = conn.execute(
            "SELECT string_agg(name || '=' || setting, ', ' ORDER BY name) FROM pg_settings "
            "WHERE name IN ('fsync', 'synchronous_commit', 'full_page_writes')"
        ).fetchone()
    return f"PostgreSQL {version[0] if version else '?'} ({settings[0] if settings else '?'})"


# --------------------------------------------------------------------------- the service


@dataclass
class Served:
    """A ``hitl-vault serve`` process on a vault, with an agent's and an approver's token."""

    proc: subprocess.Popen[bytes]
    port: int
    agent: str
    approver: str
    vault: Path


def new_vault(root: Path, url: str | None) -> tuple[Path, str, str]:
    """A vault on the journal ``url``, its person ``carol``; an agent and an approver token."""
    vault = root / "vault"
    init_vault(vault)
    (vault / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    with journal_env(url), Vault(vault) as v:
        store = v.engine.journal
        now = datetime.now(UTC)
        People(store, by="bench", owner_uid=-1, send=lambda *a, **k: None).add(
            "carol", (), (), now=now
        )
        _, agent = tokens.mint(store, "bench-agent", Role.AGENT, now=now, by="bench")
        _, approver = tokens.mint(store, "carol", Role.APPROVER, now=now, by="bench")
    return vault, agent, approver


def start_serve(vault: Path, url: str | None, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    """``hitl-vault serve`` on ``vault`` (journal ``url``), once its /healthz answers 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in (JOURNAL_ENV, *LEASE_VARS)}
    if url is not None:
        env[JOURNAL_ENV] = url
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hitl_vault", "--vault", str(vault), "serve",
             "--listen", f"127.0.0.1:{port}"],
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while health(port) is None:
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise SystemExit(f"serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    return proc, port


def health(port: int) -> dict[str, Any] | None:
    """/healthz's answer, or None if it does not answer 200."""
    import http.client

    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        answer = conn.getresponse()
        body = answer.read()
        conn.close()
    except OSError:
        return None
    return json.loads(body) if answer.status == 200 else None


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


@contextmanager
def served(root: Path, url: str | None) -> Iterator[Served]:
    root.mkdir(parents=True)
    vault, agent, approver = new_vault(root, url)
    proc, port = start_serve(vault, url, root / "serve.log")
    try:
        yield Served(proc, port, agent, approver, vault)
    finally:
        stop(proc)


# --------------------------------------------------------------------------- 3. burst


async def _until_executed(port: int, token: str, request_id: str) -> str:
    """Long-polls on the request (each from the status it was seen in) until it is final."""
    since = "pending"
    while True:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        ask = (
            f"GET /api/v1/requests/{request_id}?wait=60&status={since} HTTP/1.1\r\n"
            f"Host: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
        )
        writer.write(ask.encode())
        await writer.drain()
        raw = await reader.read()
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), raw[:300]
        status = str(json.loads(body)["status"])
        if status in ("executed", "failed", "rejected", "expired", "cancelled", "interrupted"):
            return status
        since = status


def _watch(port: int, token: str, ids: list[str], out: dict[str, Any], ready: Any) -> None:
    async def main() -> None:
        tasks = [asyncio.create_task(_until_executed(port, token, i)) for i in ids]
        await asyncio.sleep(1.0)  # every long-poll has reached the server
        ready.set()
        out["statuses"] = await asyncio.gather(*tasks)
        out["done"] = time.perf_counter()

    asyncio.run(main())


def _spread(port: int, token: str, jobs: list[Any], one: Callable[[Api, Any], Any]) -> list[Any]:
    """``one(api, job)`` for each job, on CONNECTIONS keep-alive connections at once."""
    shares = [jobs[k::CONNECTIONS] for k in range(CONNECTIONS)]

    def run(share: list[Any]) -> list[Any]:
        api = Api(port, token)
        try:
            return [one(api, job) for job in share]
        finally:
            api.close()

    with ThreadPoolExecutor(CONNECTIONS) as pool:
        return [x for part in pool.map(run, shares) for x in part]


def _approve(api: Api, request_id: str) -> None:
    status, body = api.call(
        "POST", f"/api/v1/requests/{request_id}/decision", {"decision": "approve"}
    )
    assert status == 200, (status, body)


def bench_burst(s: Served, n: int) -> dict[str, float]:
    t = time.perf_counter()
    ids = _spread(s.port, s.agent, [f"b{i}" for i in range(n)], lambda api, tag: api.submit(tag))
    submitted = time.perf_counter() - t
    out: dict[str, Any] = {}
    ready = threading.Event()
    watcher = threading.Thread(target=_watch, args=(s.port, s.agent, ids, out, ready))
    watcher.start()
    ready.wait(60)
    t = time.perf_counter()
    _spread(s.port, s.approver, ids, _approve)
    approved = time.perf_counter() - t
    watcher.join(300)
    statuses = out.get("statuses", [])
    bad = len(statuses) - statuses.count("executed") if statuses else n
    assert not bad, f"{bad} of {n} requests did not end executed: {set(statuses)}"
    return {
        "submit/s": n / submitted,
        "approve/s": n / approved,
        "executed s": out["done"] - t,
    }


# --------------------------------------------------------------------------- 4, 5. two hosts


@contextmanager
def two_hosts(root: Path, url: str) -> Iterator[tuple[Served, Served]]:
    """Two ``serve`` processes on one vault folder and one journal, as two hosts: (the
    leader, the follower), each answering on a port of its own."""
    with served(root, url) as a:
        proc, port = start_serve(a.vault, url, root / "serve-b.log")
        b = Served(proc, port, a.agent, a.approver, a.vault)
        try:
            leader = wait_for_leader([a, b], 60)
            yield (a, b) if leader is a else (b, a)
        finally:
            stop(b.proc)


def wait_for_leader(hosts: list[Served], seconds: float) -> Served:
    """The host whose /healthz says it leads (SystemExit if none does within ``seconds``)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for host in hosts:
            said = health(host.port)
            if said is not None and said.get("role") == "leader":
                return host
        time.sleep(0.02)
    raise SystemExit(f"no host leads after {seconds} s: {[health(h.port) for h in hosts]}")


def bench_across(decide_on: Served, wait_on: Served, n: int) -> list[float]:
    """A decision through one host -> a long-poll already waiting on the other returns."""
    asker, decider = Api(wait_on.port, wait_on.agent), Api(decide_on.port, decide_on.approver)
    latencies = []
    for i in range(n):
        request_id = asker.submit(f"x{i}")
        returned: list[float] = []
        poller = threading.Thread(
            target=_poll, args=(wait_on.port, wait_on.agent, request_id, returned)
        )
        poller.start()
        time.sleep(0.03)  # let the long-poll reach the server and wait
        t = time.perf_counter()
        _approve(decider, request_id)
        poller.join(60)
        latencies.append((returned[0] - t) * 1000)
    asker.close()
    decider.close()
    return latencies


def bench_takeover(root: Path, url: str, rounds: int) -> list[tuple[float, float]]:
    """kill -9 of the leader (at a random moment of its renewals) -> the other host's
    /healthz says it leads; and -> an approval made through it just after the kill is
    executed. One pair of seconds per round; the killed host is started again, to follow."""
    results = []
    with two_hosts(root, url) as (leader, follower):
        hosts = [leader, follower]
        for r in range(rounds):
            time.sleep(random.uniform(0, 3))
            api = Api(follower.port, follower.agent)
            request_id = api.submit(f"takeover{r}")
            api.close()
            t = time.perf_counter()
            os.killpg(leader.proc.pid, signal.SIGKILL)
            leader.proc.wait(10)
            decider = Api(follower.port, follower.approver)
            _approve(decider, request_id)
            decider.close()
            out: dict[str, Any] = {}
            ready = threading.Event()
            watcher = threading.Thread(
                target=_watch, args=(follower.port, follower.agent, [request_id], out, ready)
            )
            watcher.start()
            wait_for_leader([follower], 60)
            led = time.perf_counter() - t
            watcher.join(120)
            assert out.get("statuses") == ["executed"], out
            results.append((led, out["done"] - t))
            log = root / f"serve-{r}.log"
            proc, port = start_serve(leader.vault, url, log)
            dead = hosts.index(leader)
            hosts[dead] = Served(proc, port, leader.agent, leader.approver, leader.vault)
            leader, follower = follower, hosts[dead]
        for host in hosts:
            stop(host.proc)
    return results


# --------------------------------------------------------------------------- main


def measure(journal: Journal, root: Path, sizes: tuple[int, int, int, int]) -> dict[str, Any]:
    n, rounds, m, burst = sizes
    with served(root, journal.url) as s, journal_env(journal.url):
        submit = bench_submit(s.vault, s.port, s.agent, n, rounds, s.proc.pid)
        wake = bench_wake(s.port, s.agent, s.approver, m)
        b = bench_burst(s, burst)
    return {**submit, "wake": wake, **b}


def show(rows: dict[str, dict[str, Any]], burst: int) -> None:
    names = list(rows)
    width = 24

    def line(label: str, cell: Callable[[dict[str, Any]], str], verdict: str = "") -> None:
        cells = "".join(f"{cell(rows[name]):>{width}}" for name in names)
        print(f"  {label:<34}{cells}  {verdict}")

    print(f"  {'':<34}" + "".join(f"{name:>{width}}" for name in names))
    line("1. submit over HTTP /s", lambda r: f"{r['http/s']:.0f}")
    line("   Vault.submit /s", lambda r: f"{r['vault/s']:.0f}")
    ratios = {k: r["http/s"] / r["vault/s"] for k, r in rows.items()}
    line(
        "   HTTP / Vault (goal >= 0.5)",
        lambda r: f"{r['http/s'] / r['vault/s']:.2f}",
        ok(all(x >= 0.5 for x in ratios.values())),
    )
    line(
        "2. wake ms median, p90 (goal <= 10)",
        lambda r: f"{med(r['wake']):.1f}, {pct(r['wake'], 0.9):.1f}",
        ok(all(med(r["wake"]) <= 10 for r in rows.values())),
    )
    line(f"3. burst of {burst}: submits /s", lambda r: f"{r['submit/s']:.0f}")
    line("   approvals /s", lambda r: f"{r['approve/s']:.0f}")
    line("   approvals -> all executed s", lambda r: f"{r['executed s']:.2f}")
    line("   executed /s", lambda r: f"{burst / r['executed s']:.0f}")


def hosts(journal: Journal, tmp: Path, n: int, rounds: int) -> None:
    assert journal.server is not None
    with two_hosts(tmp / "hosts", pgserver.fresh_journal(journal.server)) as (leader, follower):
        to_follower = bench_across(leader, follower, n)
        to_leader = bench_across(follower, leader, n)
        here = bench_across(follower, follower, n)
    both = to_follower + to_leader
    for label, values in (
        ("decision on the leader, wait on the follower", to_follower),
        ("decision on the follower, wait on the leader", to_leader),
        ("both on the follower (no host between)", here),
    ):
        print(f"  4. across  {label}: median {med(values):.1f} ms, p90 {pct(values, 0.9):.1f} ms")
    print(
        f"             across hosts: median {med(both):.1f} ms (goal <= 50) {ok(med(both) <= 50)}"
    )
    taken = bench_takeover(tmp / "takeover", pgserver.fresh_journal(journal.server), rounds)
    led = [x for x, _ in taken]
    print(
        f"  5. takeover kill -9 of the leader -> the other leads (default lease): "
        f"{', '.join(f'{x:.1f}' for x in led)} s (goal <= 15) {ok(max(led) <= 15)}"
    )
    print(
        "             an approval made through it just after the kill, executed after "
        f"{', '.join(f'{y:.1f}' for _, y in taken)} s"
    )


def ok(met: bool) -> str:
    return "ok" if met else "MISSED"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--no-tcp", action="store_true", help="no column over TCP")
    args = parser.parse_args()
    sizes = (40, 2, 15, 100) if args.quick else (100, 5, 40, 400)
    tmp = Path(tempfile.mkdtemp(prefix="hv-pg-bench-"))
    load = os.getloadavg()[0]
    print(
        f"# hitl-vault on PostgreSQL: {os.cpu_count()} cores, load {load:.1f}, "
        f"Python {sys.version.split()[0]}"
    )
    try:
        with pg_server(not args.no_tcp) as (socket_url, tcp_url, how):
            print(f"# server: {server_facts(socket_url)}, {how}")
            journals = [Journal("SQLite", None)]
            for name, url in (("PostgreSQL socket", socket_url), ("PostgreSQL TCP", tcp_url)):
                if url is not None:
                    journals.append(Journal(name, pgserver.fresh_journal(url), url))
            rows = {j.name: measure(j, tmp / f"j{k}", sizes) for k, j in enumerate(journals)}
            show(rows, sizes[3])
            across = journals[-1]
            print(f"  two serve processes on one vault folder and one journal ({across.name}):")
            hosts(across, tmp, sizes[2], 1 if args.quick else 3)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"# load at the end {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
