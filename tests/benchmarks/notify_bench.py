"""hitl-vault notification benchmark: a healthy target beside one that never answers.

Run:  python tests/benchmarks/notify_bench.py [--requests N]

Not a pytest module. Two targets in ``notify:``: first a TCP server on 127.0.0.1 that
accepts every connection and never answers a byte (the "hanging" one), then a
``json://`` receiver on 127.0.0.1 that answers at once (the "healthy" one). N requests
(20 by default) are submitted one after another; for each, how long from its submit
until the healthy receiver has the message. Twice: a daemon in a thread of this process
(``Daemon.run_forever``), and a ``hitl-vault run`` subprocess told by the journal.
Goal (issue 26): the healthy target hears of each request in under 2 s.
Everything runs in a temporary directory, removed at the end; what is started is stopped.
"""

from __future__ import annotations

import argparse
import http.server
import json
import logging
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

from hitl_vault import Vault
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.loop import Daemon

GOAL = 2.0  # seconds, the slowest request's


class Hanging:
    """Accepts every connection and never answers."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.server.settimeout(0.05)
        self.port = self.server.getsockname()[1]
        self.held: list[socket.socket] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            with suppress(TimeoutError):
                self.held.append(self.server.accept()[0])

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(10)
        self.server.close()
        for conn in self.held:
            conn.close()


class Healthy(http.server.ThreadingHTTPServer):
    """Answers every POST at once; notes when each title first arrived."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Answer)
        self.port = self.server_address[1]
        self.at: dict[str, float] = {}
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.shutdown()
        self.thread.join(10)
        self.server_close()


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        payload = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        server: Any = self.server
        with server.lock:
            server.at.setdefault(str(payload.get("title")), time.monotonic())
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, format: str, *args: Any) -> None:
        pass


def new_vault(parent: Path, name: str, hanging: int, healthy: int) -> Path:
    root = parent / name
    init_vault(root)
    with open(root / "hitl-vault.yaml", "a", encoding="utf-8") as rules:
        rules.write(
            "\nnotify:\n"
            f"  - url: json://127.0.0.1:{hanging}/hook\n"
            f"  - url: json://127.0.0.1:{healthy}/hook\n"
        )
    return root


def submit_and_time(vault: Vault, healthy: Healthy, n: int, tag: str) -> list[float]:
    """Submit ``n`` requests in a row; seconds from each submit until the healthy receiver
    had its message (inf for one that never came within 60 s)."""
    made: dict[str, float] = {}
    for i in range(n):
        summary = f"notify bench {tag} {i}"
        vault.submit("payment", {"amount": 1000 + i}, summary=summary, requested_by="bench")
        made[f"[high] {summary} — waiting for approval"] = time.monotonic()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not made.keys() <= healthy.at.keys():
        time.sleep(0.005)
    return [healthy.at.get(title, float("inf")) - at for title, at in made.items()]


@contextmanager
def in_process(root: Path) -> Iterator[Vault]:
    with Vault(root) as vault, Daemon(vault.engine) as daemon:
        ready = threading.Event()
        runner = threading.Thread(target=daemon.run_forever, args=(ready,))
        runner.start()
        try:
            ready.wait(30)
            yield vault
        finally:
            daemon.stop()
            runner.join(60)


@contextmanager
def subprocess_daemon(root: Path, log: Path) -> Iterator[Vault]:
    script = Path(sys.executable).with_name("hitl-vault")
    argv = [str(script)] if script.exists() else [sys.executable, "-m", "hitl_vault"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*argv, "--vault", str(root), "run"], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while "watching" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"hitl-vault run did not start:\n{log.read_text()}")
            time.sleep(0.02)
        with Vault(root) as vault:
            yield vault
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def report(name: str, late: list[float]) -> bool:
    heard = sum(1 for t in late if t != float("inf"))
    worst = max(late)
    ms = sorted(t * 1000 for t in late if t != float("inf"))
    p95 = ms[min(len(ms) - 1, int(0.95 * len(ms)))] if ms else float("inf")
    ok = worst < GOAL
    print(
        f"  {name:<22} heard {heard}/{len(late)}  median {statistics.median(ms):7.1f} ms  "
        f"p95 {p95:7.1f} ms  max {worst * 1000:7.1f} ms  "
        f"[{'PASS' if ok else 'FAIL'}: goal max < {GOAL:g} s]"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20)
    args = parser.parse_args()
    # The hanging target's failed tries are logged as warnings; the figures are the point.
    logging.getLogger("hitl_vault").setLevel(logging.ERROR)
    tmp = Path(tempfile.mkdtemp(prefix="hitl-notify-bench-"))
    results = []
    try:
        print(f"notify: a healthy json:// target beside a hanging one, {args.requests} requests")
        for name in ("daemon thread", "hitl-vault run process"):
            hanging, healthy = Hanging(), Healthy()
            try:
                root = new_vault(tmp, name.replace(" ", "-"), hanging.port, healthy.port)
                daemon = (
                    in_process(root)
                    if "thread" in name
                    else subprocess_daemon(root, tmp / "run.log")
                )
                with daemon as vault:
                    late = submit_and_time(vault, healthy, args.requests, name)
                    hanging.close()  # a send still in flight to it ends at once
            finally:
                hanging.close()
                healthy.close()
            results.append(report(name, late))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
