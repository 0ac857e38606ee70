"""Deciding from the phone: the decision page a signed link opens, and its form's decision,
against a real ``hitl-vault serve`` on one machine.

Run:  python tests/benchmarks/phone_bench.py [--quick]

Not a pytest module. A real ``hitl-vault serve`` process on 127.0.0.1 (an ephemeral port)
over a temporary vault with two actions whose ``run:`` executors write their own first
moment (the wall clock) where the bench watches: ``bench`` runs bash, which reads
``$EPOCHREALTIME`` first thing (a start of about a millisecond: what is timed is the
service's path), and ``bench-py`` a Python script under ``-S``, whose interpreter start is
added to the service's path (shown, with that start alone, to say what bounds it).
Everything it starts is stopped here. Links are made in this process with the store's key
(:func:`hitl_vault.access.links.mint`), as the daemon makes them for a person's messages.
Each request is a new connection, as a phone opening a link makes one. Requests are made
(and their notes written by the service's daemon) before any is timed, and decisions come
half a second apart, as a person's taps do: what is timed is the link's path, not the
daemon catching up with a burst of new requests.

Sections (the goals are issue 26's)
  1. page      link GET -> the whole decision page (200) is read
               (goal: median at most 20 ms)
  2. decide    the page's form POSTed (CSRF token, decision, reason; ``Origin: null`` as a
               browser sends it) -> the executor's own first moment, read from the file it
               writes (goal: median at most 20 ms); also shown: POST -> the answer page
               read, the same with the Python executor, and that executor's start alone
               (Popen -> its first moment)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlencode

from hitl_vault import Vault
from hitl_vault.access import links
from hitl_vault.access.people import People
from hitl_vault.cli.template import init_vault

GOAL_MS = 20.0
SETTLE = 0.5  # s: the daemon's quiet period (0.2 s) and its note writing, done
PERSON = "carol"
RULES = """\
defaults:
  decision: ask
  timeout: 1h
  quiet: 0.2s
rules: []
actions:
  bench:
    run: {sh}
    timeout: 30s
    idempotent: false
  bench-py:
    run: {py}
    timeout: 30s
    idempotent: false
"""
# The executors: their first moment, written where the bench watches (atomically, by request).
SHELL = (
    't=$EPOCHREALTIME; out=$1; printf %s "$t" > "$out/.$HITL_REQUEST_ID"; '
    'mv "$out/.$HITL_REQUEST_ID" "$out/$HITL_REQUEST_ID"; cat > /dev/null; echo ok'
)
EXECUTOR = """\
import os, sys, time
t = time.time()
out = sys.argv[1]
rid = os.environ["HITL_REQUEST_ID"]
sys.stdin.read()
tmp = os.path.join(out, "." + rid)
with open(tmp, "w") as f:
    f.write(repr(t))
os.rename(tmp, os.path.join(out, rid))
print("ok")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def med(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] if ordered else float("nan")


def verdict(value: float) -> str:
    return "ok" if value <= GOAL_MS else "MISSED"


def fetch(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, str]:
    """One request on a new connection, as a phone opening a link: status and body."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {}
    if body is not None:
        headers = {"Content-Type": "application/x-www-form-urlencoded", "Origin": "null"}
    conn.request(method, path, body=body, headers=headers)
    answer = conn.getresponse()
    text = answer.read().decode("utf-8")
    conn.close()
    return answer.status, text


@contextmanager
def served(root: Path) -> Iterator[tuple[Path, int, Path, Path]]:
    """A vault with the bench executor and a person, and ``hitl-vault serve`` on it: the
    vault, the port, the executor's folder of start times and its script."""
    vault, out, script = root / "vault", root / "started", root / "executor.py"
    out.mkdir()
    script.write_text(EXECUTOR, encoding="utf-8")
    init_vault(vault)
    sh = json.dumps([shutil.which("bash") or "/bin/bash", "-c", SHELL, "bench", str(out)])
    py = json.dumps([sys.executable, "-S", str(script), str(out)])
    (vault / "hitl-vault.yaml").write_text(RULES.format(sh=sh, py=py), encoding="utf-8")
    with Vault(vault) as v:
        People(v.engine.journal, by="bench", owner_uid=-1, send=lambda *a, **k: None).add(
            PERSON, (), (), now=datetime.now(UTC)
        )
    port = free_port()
    log = open(root / "serve.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "hitl_vault", "--vault", str(vault), "serve",
         "--listen", f"127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while True:
        try:
            if fetch(port, "GET", "/healthz")[0] == 200:
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit((root / "serve.log").read_text())
        time.sleep(0.05)
    try:
        yield vault, port, out, script
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def pending_links(vault: Path, n: int, tag: str, action: str = "bench") -> list[tuple[str, str]]:
    """``n`` pending requests for ``action``, each with its id and the person's link's secret,
    once the service's daemon has written their notes and is idle again (a link is opened
    from a message, well after the request was made)."""
    made = []
    with Vault(vault) as v:
        store = v.engine.journal
        for i in range(n):
            request = v.submit(action, {"t": f"{tag}{i}"}, summary=f"bench {tag}{i}")
            made.append((request.id, links.mint(store, request, PERSON, now=datetime.now(UTC))))
    deadline = time.monotonic() + 60
    for request_id, _ in made:
        while not list((vault / "Pending_Approval").glob(f"*{request_id}*.md")):
            if time.monotonic() > deadline:
                raise SystemExit(f"the daemon never wrote the note of {request_id}")
            time.sleep(0.01)
    time.sleep(SETTLE)
    return made


def bench_page(port: int, made: list[tuple[str, str]]) -> list[float]:
    """Link GET -> the page read, in ms."""
    times = []
    for _, secret in made:
        t = time.perf_counter()
        status, page = fetch(port, "GET", f"/d/{secret}")
        times.append((time.perf_counter() - t) * 1000)
        assert status == 200 and 'name="csrf"' in page, (status, page[:500])
    return times


def started_at(out: Path, request_id: str, timeout: float = 30) -> float:
    """The executor's own first moment (time.time()) for ``request_id``, once written."""
    target = out / request_id
    deadline = time.monotonic() + timeout
    while not target.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"the executor never started for {request_id}")
        time.sleep(0.0002)
    return float(target.read_text())


def bench_decide(port: int, out: Path, made: list[tuple[str, str]]) -> tuple[list[float], ...]:
    """The form POSTed -> the executor starts, and -> the answer read, in ms."""
    to_start, to_answer = [], []
    for request_id, secret in made:
        status, page = fetch(port, "GET", f"/d/{secret}")
        found = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
        assert status == 200 and found, (status, page[:500])
        form = urlencode({"csrf": found.group(1), "decision": "approve", "reason": ""}).encode()
        t_wall, t = time.time(), time.perf_counter()
        status, answer = fetch(port, "POST", f"/d/{secret}", form)
        to_answer.append((time.perf_counter() - t) * 1000)
        assert status == 200 and "via link" in answer, (status, answer[:500])
        to_start.append((started_at(out, request_id) - t_wall) * 1000)
        time.sleep(SETTLE)  # the daemon files the note; a person's next tap comes later
    return to_start, to_answer


def spawn_floor(script: Path, out: Path, n: int) -> list[float]:
    """Popen of the executor alone -> its first moment, in ms: what no service can beat."""
    times = []
    for i in range(n):
        rid = f"floor-{os.getpid()}-{i}"
        t = time.time()
        proc = subprocess.Popen(
            [sys.executable, "-S", str(script), str(out)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            env={**os.environ, "HITL_REQUEST_ID": rid}, start_new_session=True,
        )  # fmt: skip
        proc.communicate(b"{}")
        times.append((float((out / rid).read_text()) - t) * 1000)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    args = parser.parse_args()
    n, warm = (15, 3) if args.quick else (60, 5)
    tmp = Path(tempfile.mkdtemp(prefix="hv-phone-bench-"))
    print(f"# hitl-vault phone benchmarks: {os.cpu_count()} cores, Python {sys.version.split()[0]}")
    try:
        with served(tmp) as (vault, port, out, script):
            made = pending_links(vault, warm + n, "p")
            page = bench_page(port, made)[warm:]
            print(
                f"1. page     link GET -> decision page: median {med(page):.1f} ms, "
                f"p90 {pct(page, 0.9):.1f} ms (goal <= {GOAL_MS:.0f}) {verdict(med(page))}"
            )
            made = pending_links(vault, warm + n, "d")
            to_start, to_answer = (times[warm:] for times in bench_decide(port, out, made))
            made = pending_links(vault, warm + n, "y", "bench-py")
            to_python = bench_decide(port, out, made)[0][warm:]
            floor = spawn_floor(script, out, n)
            print(
                f"2. decide   form POST -> executor starts: median {med(to_start):.1f} ms, "
                f"p90 {pct(to_start, 0.9):.1f} ms (goal <= {GOAL_MS:.0f}) "
                f"{verdict(med(to_start))}\n"
                f"             POST -> answer page read: median {med(to_answer):.1f} ms\n"
                f"             with a Python executor (-S): median {med(to_python):.1f} ms; "
                f"its start alone (Popen -> its first moment): median {med(floor):.1f} ms"
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
