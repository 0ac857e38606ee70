"""hitl-vault serve benchmarks: the HTTP service against the in-process Vault, on one machine.

Run:  python tests/benchmarks/serve_bench.py [--quick] [--rates 25,50,100,200]

Not a pytest module. A real ``hitl-vault serve`` process on 127.0.0.1 (an ephemeral port)
over a temporary vault; everything it starts is stopped here.

Sections (the goals are issue 25's)
  1. submit     requests/s: POST /api/v1/requests on one keep-alive connection against
                Vault.submit in this process, interleaved rounds on the same served vault,
                each begun with the service quiet (goal: HTTP at least half the Vault's
                rate); and the serve process's CPU time (user + system, from /proc) per
                HTTP submit
  2. wake       a decision over the API -> a long-poll already waiting on the request
                returns (goal: median at most 10 ms)
  3. load       note-save of ``status: approved`` -> a waiting long-poll returns, idle and
                with 200 open long-polls plus a client submitting 200 a second
                (goal: loaded median within 1.5x of idle), the two taken in turns of ten,
                each save after a pause drawn at random (PAUSES);
                with ``--rates``, also at each of those submit rates, with the serve
                process's CPU use meanwhile
  4. waits      1,000 open long-polls: the serve process's VmRSS (goal: at most 150 MB)
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import os
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hitl_vault import Vault
from hitl_vault.access import tokens
from hitl_vault.cli.template import init_vault
from hitl_vault.identity import Role

# Section 3 takes its idle and loaded samples in turns of this many each.
TURN = 10
# Section 3's pause before each save, drawn from here: at fixed pauses the saves kept step
# with the daemon's rewrite of the note saved two before (once quiet, 0.2 s after its save),
# and a loaded turn's slightly longer round put every save inside that rewrite (see
# docs/speed.md). Drawn, a save meets a rewrite as often as a human's would, idle or loaded.
PAUSES = random.Random(25)

RULES = "defaults:\n  decision: ask\n  timeout: 1h\n  quiet: 0.2s\nrules: []\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


class Api:
    """One keep-alive connection to the service with one token."""

    def __init__(self, port: int, token: str, timeout: float = 90) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        try:
            self.conn.request(method, path, body=data, headers=self.headers)
        except (BrokenPipeError, ConnectionResetError):  # the server ended an idle keep-alive
            self.conn.close()  # the request never left: send it on a new connection
            self.conn.request(method, path, body=data, headers=self.headers)
        answer = self.conn.getresponse()
        raw = answer.read()
        return answer.status, json.loads(raw) if raw else None

    def submit(self, tag: str) -> str:
        status, body = self.call(
            "POST", "/api/v1/requests", {"action": "bench", "params": {"t": tag}}
        )
        assert status == 201, (status, body)
        return str(body["id"])

    def close(self) -> None:
        self.conn.close()


@contextmanager
def served(
    root: Path, command: tuple[str, ...] = (sys.executable, "-m", "hitl_vault")
) -> Iterator[tuple[subprocess.Popen[bytes], int, str, str]]:
    """A vault, an agent and an approver token, and ``hitl-vault serve`` on it (``command``:
    how ``hitl-vault`` is started)."""
    vault = root / "vault"
    init_vault(vault)
    (vault / "hitl-vault.yaml").write_text(RULES, encoding="utf-8")
    with Vault(vault) as v:
        store = v.engine.journal
        now = datetime.now(UTC)
        from hitl_vault.access.people import People

        People(store, by="bench", owner_uid=-1, send=lambda *a, **k: None).add(
            "carol", (), (), now=now
        )
        _, agent = tokens.mint(store, "bench-agent", Role.AGENT, now=now, by="bench")
        _, approver = tokens.mint(store, "carol", Role.APPROVER, now=now, by="bench")
    port = free_port()
    log = open(root / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            *command,
            "--vault",
            str(vault),
            "serve",
            "--listen",
            f"127.0.0.1:{port}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((root / "serve.log").read_text())
        time.sleep(0.05)
    try:
        yield proc, port, agent, approver
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def cpu_ms(pid: int) -> float:
    """The process's CPU time so far (user + system), in ms; nan where /proc has none."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def settle(pid: int, timeout: float = 5.0) -> None:
    """Until the serve process is quiet (under 10 ms of CPU in 200 ms), at most ``timeout``
    seconds: its daemon's steps after one round (the notes of another process's submits
    are looked at as they come) are not charged to the next."""
    deadline = time.monotonic() + timeout
    used = cpu_ms(pid)
    while time.monotonic() < deadline:
        time.sleep(0.2)
        now = cpu_ms(pid)
        if now - used < 10:
            return
        used = now


def bench_submit(
    vault: Path, port: int, agent: str, n: int, rounds: int, pid: int
) -> dict[str, float]:
    api = Api(port, agent)
    http_rates, vault_rates, cpu = [], [], []
    with Vault(vault) as v:
        for r in range(rounds):
            settle(pid)
            t, used = time.perf_counter(), cpu_ms(pid)
            for i in range(n):
                api.submit(f"h{r}-{i}")
            http_rates.append(n / (time.perf_counter() - t))
            cpu.append((cpu_ms(pid) - used) / n)
            settle(pid)
            t = time.perf_counter()
            for i in range(n):
                v.submit("bench", {"t": f"v{r}-{i}"})
            vault_rates.append(n / (time.perf_counter() - t))
    api.close()
    return {"http/s": med(http_rates), "vault/s": med(vault_rates), "cpu": med(cpu)}


def _poll(port: int, token: str, request_id: str, out: list[float]) -> None:
    api = Api(port, token)
    status, body = api.call("GET", f"/api/v1/requests/{request_id}?wait=30")
    out.append(time.perf_counter())
    assert status == 200 and body["status"] != "pending", (status, body)
    api.close()


def bench_wake(port: int, agent: str, approver: str, n: int) -> list[float]:
    asker, decider = Api(port, agent), Api(port, approver)
    latencies = []
    for i in range(n):
        request_id = asker.submit(f"w{i}")
        returned: list[float] = []
        poller = threading.Thread(target=_poll, args=(port, agent, request_id, returned))
        poller.start()
        time.sleep(0.03)  # let the long-poll reach the server and wait
        t = time.perf_counter()
        status, body = decider.call(
            "POST", f"/api/v1/requests/{request_id}/decision", {"decision": "approve"}
        )
        assert status == 200, (status, body)
        poller.join(30)
        latencies.append((returned[0] - t) * 1000)
    return latencies


def note_of(vault: Path, request_id: str) -> Path:
    for _ in range(200):
        found = list((vault / "Pending_Approval").glob(f"*{request_id}*.md"))
        if found:
            return found[0]
        time.sleep(0.01)
    raise SystemExit(f"no note for {request_id}")


def save_approved(path: Path) -> None:
    raw = path.read_bytes()
    new = re.sub(rb"(?m)^status: pending$", b"status: approved", raw, count=1)
    with open(path, "r+b") as f:
        f.write(new)
        f.truncate()


def note_saves(vault: Path, port: int, agent: str, n: int) -> list[tuple[str, str, float, float]]:
    """``n`` note-saves, one at a time: a new request, its note saved with ``status:
    approved`` while a long-poll waits on it; for each, the request's id, its note's name,
    and the moments (``time.perf_counter``) of the save and of the long-poll's return."""
    api = Api(port, agent)
    taken = []
    for i in range(n):
        request_id = api.submit(f"s{i}")
        path = note_of(vault, request_id)
        time.sleep(0.05)  # the note settles; the daemon has written it
        returned: list[float] = []
        poller = threading.Thread(target=_poll, args=(port, agent, request_id, returned))
        poller.start()
        time.sleep(PAUSES.uniform(0.03, 0.33))  # (the long-poll is open by then)
        t = time.perf_counter()
        save_approved(path)
        poller.join(30)
        if returned:
            taken.append((request_id, path.stem, t, returned[0]))
    api.close()
    return taken


def note_save_latency(vault: Path, port: int, agent: str, n: int) -> list[float]:
    """:func:`note_saves`' latencies, save -> long-poll returned (ms)."""
    return [(back - saved) * 1000 for _, _, saved, back in note_saves(vault, port, agent, n)]


async def _hold(port: int, token: str, ids: list[str], stop: float) -> None:
    """Keep a long-poll open on each id until ``stop`` (reopened when one returns)."""

    async def one(request_id: str) -> None:
        while time.monotonic() < stop:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(
                f"GET /api/v1/requests/{request_id}?wait=20 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"Authorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            with suppress(TimeoutError):
                await asyncio.wait_for(reader.read(), timeout=max(0.1, stop - time.monotonic()))
            writer.close()

    await asyncio.gather(*(one(i) for i in ids))


async def _submit_at(port: int, token: str, rate: float, stop: float) -> None:
    gap, n = 1 / rate, 0
    start = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    while time.monotonic() < stop:
        body = json.dumps({"action": "bench", "params": {"load": n}}).encode()
        writer.write(
            b"POST /api/v1/requests HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\n"
            + f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"(?i)content-length: (\d+)", head).group(1))  # type: ignore[union-attr]
        await reader.readexactly(length)
        n += 1
        await asyncio.sleep(max(0, start + n * gap - time.monotonic()))
    writer.close()


def _load(port: int, token: str, ids: list[str], rate: float, seconds: float) -> None:
    stop = time.monotonic() + seconds

    async def main() -> None:
        await asyncio.gather(_hold(port, token, ids, stop), _submit_at(port, token, rate, stop))

    asyncio.run(main())


def under_load(
    vault: Path,
    port: int,
    agent: str,
    held: list[str],
    rate: float,
    m: int,
    pid: int,
    saves: Callable[[Path, int, str, int], list[float]] = note_save_latency,
) -> tuple[list[float], list[float], float]:
    """Section 3 at ``rate`` submits a second: note-save -> long-poll latencies idle, and
    with a long-poll open on each of ``held`` and the submits running, and the share of a
    core (%) the service used meanwhile. Interleaved: ``m`` of each, taken in turns of
    :data:`TURN` idle then :data:`TURN` loaded, so that a change in the machine's speed
    over the run weighs on both sides alike; ``saves(vault, port, agent, k)`` takes a turn's
    ``k`` saves."""
    idle: list[float] = []
    loaded: list[float] = []
    used = spent = 0.0
    for start in range(0, m, TURN):
        k = min(TURN, m - start)
        settle(pid)  # the last loaded turn's work done: idle is idle
        idle += saves(vault, port, agent, k)
        seconds = 2.5 + k * 0.4  # (a save takes 0.1-0.4 s: the submits outlast the turn)
        loader = mp.get_context("spawn").Process(
            target=_load, args=(port, agent, held, rate, seconds)
        )
        loader.start()
        time.sleep(1.5)  # the polls are open and the submits running
        cpu, t = cpu_ms(pid), time.perf_counter()
        loaded += saves(vault, port, agent, k)
        used, spent = used + cpu_ms(pid) - cpu, spent + (time.perf_counter() - t) * 1000
        loader.join(seconds + 30)
    return idle, loaded, used / spent * 100


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def _open_waits(port: int, token: str, ids: list[str], opened: Any, stop: Any) -> None:
    writers = []
    for request_id in ids:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(
            f"GET /api/v1/requests/{request_id}?wait=60 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Authorization: Bearer {token}\r\n\r\n".encode()
        )
        writers.append(writer)
    await asyncio.gather(*(w.drain() for w in writers))
    opened.set()
    while not stop.is_set():
        await asyncio.sleep(0.05)
    for w in writers:
        w.close()


def _waits(port: int, token: str, ids: list[str], opened: Any, stop: Any) -> None:
    asyncio.run(_open_waits(port, token, ids, opened, stop))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument(
        "--rates",
        type=lambda text: [float(r) for r in text.split(",")],
        default=[],
        help="also time section 3 at these submit rates (comma-separated, per second)",
    )
    args = parser.parse_args()
    n, rounds, m = (40, 2, 15) if args.quick else (100, 5, 40)
    tmp = Path(tempfile.mkdtemp(prefix="hv-serve-bench-"))
    print(f"# hitl-vault serve benchmarks: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    try:
        with served(tmp) as (proc, port, agent, approver):
            vault = tmp / "vault"
            s = bench_submit(vault, port, agent, n, rounds, proc.pid)
            ratio = s["http/s"] / s["vault/s"]
            print(
                f"1. submit   HTTP {s['http/s']:.0f}/s, Vault.submit {s['vault/s']:.0f}/s: "
                f"{ratio:.3f} of the Vault's rate (goal >= 0.5) "
                f"{'ok' if ratio >= 0.5 else 'MISSED'}; the service's CPU per HTTP submit "
                f"{s['cpu']:.2f} ms"
            )
            wake = bench_wake(port, agent, approver, m)
            print(
                f"2. wake     decision -> waiting long-poll returns: median {med(wake):.1f} ms, "
                f"p90 {pct(wake, 0.9):.1f} ms (goal <= 10) {'ok' if med(wake) <= 10 else 'MISSED'}"
            )
            api = Api(port, agent)
            held = [api.submit(f"held{i}") for i in range(200)]
            api.close()
            idle, loaded, busy = under_load(vault, port, agent, held, 200.0, m, proc.pid)
            factor = med(loaded) / med(idle)
            print(
                f"3. load     note-save -> decision: idle median {med(idle):.1f} ms, with 200 "
                f"long-polls + 200 submits/s {med(loaded):.1f} ms: {factor:.3f}x "
                f"(goal <= 1.5x) {'ok' if factor <= 1.5 else 'MISSED'}; the service used "
                f"{busy:.0f}% of a core meanwhile"
            )
            for rate in args.rates:
                idle, loaded, busy = under_load(vault, port, agent, held, rate, m, proc.pid)
                print(
                    f"   at {rate:.0f} submits/s: idle {med(idle):.1f} ms, loaded "
                    f"{med(loaded):.1f} ms: {med(loaded) / med(idle):.2f}x; the service used "
                    f"{busy:.0f}% of a core"
                )
            api = Api(port, agent)
            ids = [api.submit(f"wait{i}") for i in range(1000)]
            api.close()
            before = rss_mb(proc.pid)
            ctx = mp.get_context("spawn")
            opened, stop = ctx.Event(), ctx.Event()
            waiter = ctx.Process(target=_waits, args=(port, agent, ids, opened, stop))
            waiter.start()
            opened.wait(120)
            time.sleep(2)  # every wait has reached the server
            during = rss_mb(proc.pid)
            stop.set()
            waiter.join(60)
            print(
                f"4. waits    1,000 open long-polls: VmRSS {during:.0f} MB (before {before:.0f} "
                f"MB) (goal <= 150) {'ok' if during <= 150 else 'MISSED'}"
            )
    except BaseException:  # what the service said may tell why
        with suppress(OSError):
            print((tmp / "serve.log").read_text()[-4000:], file=sys.stderr)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
