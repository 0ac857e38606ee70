"""Helpers for tests that edit notes as humans and editors do."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from hitl_vault.model import Status
from hitl_vault.times import utcnow

if TYPE_CHECKING:
    from hitl_vault.daemon import Daemon


def set_status(path: Path, word: str, **extra: str) -> None:
    """Edit a note as a human would in VS Code: truncate and rewrite in place."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^status:.*$", f"status: {word}", text, count=1)
    for key, value in extra.items():
        text = re.sub(rf"(?m)^{key}:.*$", f"{key}: {value}", text, count=1)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def save_by_rename(path: Path, text: str) -> None:
    """Save as editors and sync tools do: write a temp file, then rename it over the note."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def eventually(check: Callable[[], object], timeout: float = 10.0) -> object:
    """Wait for a condition with a generous timeout (never a fixed sleep as the assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        time.sleep(0.01)


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> datetime:
        self.now += delta
        return self.now


def ended(daemon: Daemon, clock: Clock, request_id: str, status: Status | None = None) -> None:
    """Step until the request's action has ended and its outcome is journaled (by a step)."""

    def done() -> bool:
        daemon.run_once(clock.now)
        now = daemon.vault.journal.status_of(request_id)
        return now is status if status else now not in (Status.APPROVED, Status.EXECUTING)

    eventually(done)


T = TypeVar("T")


def returns_within(call: Callable[[], T], what: str, timeout: float = 10.0) -> T:
    """``call()``'s result, or its exception raised here; fails if it has not returned in time.

    For calls that must never block (reading a pipe, stopping a loop): a hang
    becomes a failure naming ``what``, not a suite that never ends.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as e:  # raised again in the test's thread
            error.append(e)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise AssertionError(f"{what} did not return within {timeout}s")
    if error:
        raise error[0]
    return result[0]


class DaemonProcess:
    """A real ``hitl-vault run`` in its own process, with its log kept for assertions."""

    def __init__(self, vault: Path, *args: str) -> None:
        self.vault = vault
        self.args = args
        self.log_path = vault.parent / f"daemon-{vault.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> DaemonProcess:
        start_at = self.log_path.stat().st_size if self.log_path.exists() else 0
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it while it runs
        try:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "hitl_vault", "--vault", str(self.vault), "run", *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        eventually(lambda: "watching " in self.log()[start_at:] or self.proc.poll() is not None,
                   timeout)  # fmt: skip
        if self.proc.poll() is not None:
            raise AssertionError(f"daemon exited {self.proc.returncode}:\n{self.log()}")
        return self

    def log(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, as a service manager would; returns the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no cleanup, as in a crash or an OOM kill."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(30)

    def __enter__(self) -> DaemonProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill()
