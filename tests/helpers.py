"""Helpers for tests: notes edited as humans and editors do, waiting, and one vault's scaffold.

:class:`VaultHelper` is the scaffold the tests share (the ``helper`` fixture in
conftest.py gives one on ``vault_path``): the recording executor, the rules'
quiet period, the runs it logged, Dashboard.md's "Needs attention", the
``hitl-vault`` command as a subprocess and raw SQL into the journal.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from hitl_vault.model import Status
from hitl_vault.times import utcnow

if TYPE_CHECKING:
    from hitl_vault import Request, Vault
    from hitl_vault.daemon.loop import Daemon


def set_status(path: Path, word: str, **extra: str) -> None:
    """Edit a note as a human would in VS Code: truncate and rewrite in place."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^status:.*$", f"status: {word}", text, count=1)
    for key, value in extra.items():
        text = re.sub(rf"(?m)^{key}:.*$", f"{key}: {value}", text, count=1)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def add_param(note: Path, line: str) -> None:
    """A human adds ``line`` under ``params:`` (and nothing else)."""
    note.write_text(note.read_text().replace("params:\n", f"params:\n  {line}\n", 1))


def save_by_rename(path: Path, text: str) -> None:
    """Save as editors and sync tools do: write a temp file, then rename it over the note."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def eventually(check: Callable[..., object], timeout: float = 10.0) -> object:
    """Wait for a condition with a generous timeout (never a fixed sleep as the assertion).

    ``check`` is called with no argument; it is typed ``Callable[..., object]`` so that a
    lambda binding its loop variable as a default (``lambda r=r: ...``) type-checks.
    """
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
        now = daemon.engine.journal.status_of(request_id)
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
        proc = self.proc

        def watching_or_gone() -> bool:
            return b"watching " in self._log_bytes()[start_at:] or proc.poll() is not None

        eventually(watching_or_gone, timeout)
        if proc.poll() is not None:
            raise AssertionError(f"daemon exited {proc.returncode}:\n{self.log()}")
        return self

    def _log_bytes(self) -> bytes:
        try:
            return self.log_path.read_bytes()
        except FileNotFoundError:
            return b""

    def log(self) -> str:
        return self._log_bytes().decode("utf-8", errors="replace")

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


# --- one vault, as the tests drive it ------------------------------------------------------

TEMPLATE_QUIET = timedelta(seconds=2)  # the template's defaults.quiet
QUIET = timedelta(milliseconds=200)  # the quiet period VaultHelper.executor sets by default

# The start of an executor script that logs: ``append(name, line)`` adds a line to
# scripts/<name> in one O_APPEND write (runs at the same moment never mix their
# lines), and ``request`` is the request read from stdin.
LOG_PREAMBLE = """\
import json, os, sys, time
here = os.path.dirname(os.path.abspath(__file__))
def append(name, line):
    fd = os.open(os.path.join(here, name), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(fd, (line + "\\n").encode())
    os.close(fd)
request = json.load(sys.stdin)
"""
# The recording executor: appends each run's id to scripts/runs.log and prints
# "paid <amount>". A request with ``hold: true`` in its params first creates
# scripts/<id>.started, then stays running for 120 s (for a kill mid-action).
RECORD = (
    LOG_PREAMBLE
    + """\
append("runs.log", request["id"])
if request["params"].get("hold"):
    open(os.path.join(here, request["id"] + ".started"), "w").close()
    time.sleep(120)
print("paid", request["params"].get("amount"))
"""
)
COMMAND = Path(sys.executable).with_name("hitl-vault")  # the installed console script


class VaultHelper:
    """One vault folder as the tests set it up, drive it and read it back.

    Bound to a folder, not to an open :class:`~hitl_vault.Vault`: it works for a
    vault a daemon in another process is watching, or one not made yet.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    @property
    def rules(self) -> Path:
        """The vault's rules file, hitl-vault.yaml."""
        return self.root / "hitl-vault.yaml"

    @property
    def scripts(self) -> Path:
        """The vault's scripts/ folder, where executors live and write their logs."""
        return self.root / "scripts"

    # --- setting the vault up ------------------------------------------------------------

    def _edit_rules(self, old: str, new: str) -> None:
        text = self.rules.read_text()
        assert old in text, f"{self.rules} has no {old!r} to replace"
        self.rules.write_text(text.replace(old, new, 1))

    def set_quiet(self, quiet: timedelta) -> None:
        """Set the template's ``quiet: 2s`` (how long a note rests untouched) to ``quiet``."""
        self._edit_rules("quiet: 2s", f"quiet: {round(quiet.total_seconds() * 1000)}ms")

    def executor(self, name: str, script: str, *, quiet: timedelta | None = QUIET) -> Path:
        """Write ``script`` to scripts/<name> and make it the payment action's executor.

        It runs under this Python, without ``site`` (``-S``: a third less to start; the
        scripts use the standard library only). ``quiet`` also sets the quiet period (None
        keeps the template's 2 s). Returns the script's path.
        """
        path = self.scripts / name
        path.write_text(script)
        self._edit_rules(
            "run: [python3, scripts/pay.py]", f"run: [{sys.executable}, -S, scripts/{name}]"
        )
        if quiet is not None:
            self.set_quiet(quiet)
        return path

    def record_runs(self, *, quiet: timedelta | None = QUIET) -> Path:
        """Make :data:`RECORD` the payment executor (see :meth:`executor`); returns its log."""
        self.executor("record.py", RECORD, quiet=quiet)
        return self.scripts / "runs.log"

    # --- reading it back -----------------------------------------------------------------

    def runs(self, log: str = "runs.log") -> list[str]:
        """The ids (or lines) executors appended to scripts/<log>, in order; [] before any."""
        path = self.scripts / log
        return path.read_text().split() if path.exists() else []

    def attention(self, daemon: Daemon | None = None, clock: Clock | None = None) -> str:
        """The text under "## Needs attention" in Dashboard.md; fails if there is no such section.

        With an in-process ``daemon`` and its ``clock``, first steps it a second on, so
        it rewrites the dashboard (which it does at most once a second).
        """
        if daemon is not None:
            assert clock is not None, "stepping a daemon needs its clock"
            self._check_watches(daemon)
            daemon.run_once(clock.advance(timedelta(seconds=1)))
        text = (self.root / "Dashboard.md").read_text(encoding="utf-8")
        assert "## Needs attention\n" in text, f"Dashboard.md has no Needs attention:\n{text}"
        return needs_attention(text)

    def attention_lines(self) -> list[str]:
        """The "- " lines under Needs attention; [] while Dashboard.md lacks the section."""
        try:
            text = (self.root / "Dashboard.md").read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        if "## Needs attention\n" not in text:
            return []
        return [line for line in needs_attention(text).splitlines() if line.startswith("- ")]

    def note_path(self, request_id: str) -> Path:
        """The request's note, wherever it is; fails unless there is exactly one."""
        found = list(self.root.glob(f"*/{request_id}.md"))
        assert len(found) == 1, f"{request_id}: {len(found)} notes: {found}"
        return found[0]

    def note(self, request_id: str) -> str:
        """The text of the request's only note."""
        return self.note_path(request_id).read_text(encoding="utf-8")

    def shows(
        self, request_id: str, status: Status, folder: str, *, vault: Vault | None = None
    ) -> bool:
        """The request's only note is in ``folder`` and says ``status`` (and, given ``vault``,
        its journal says so too). A condition for :func:`eventually`."""
        path = self.root / folder / f"{request_id}.md"
        if vault is not None and vault.engine.journal.status_of(request_id) is not status:
            return False
        return list(self.root.glob(f"*/{request_id}.md")) == [path] and (
            f"status: {status}" in path.read_text(encoding="utf-8")
        )

    # --- waiting -------------------------------------------------------------------------

    @staticmethod
    def settle() -> None:
        """Pacing, not an assertion: leave a real daemon a moment with a new note before editing it.

        Approving within a millisecond of a note appearing is tested on its own, in
        test_editors.py::test_an_approval_saved_the_moment_a_note_appears_is_never_missed.
        """
        time.sleep(0.4)

    def settled(
        self, daemon: Daemon, clock: Clock, request_id: str, *, after: timedelta = TEMPLATE_QUIET
    ) -> Request:
        """Step an in-process daemon until the action in flight has ended, then past the
        quiet period (``after``) so the note is written; returns the request."""
        self._check_watches(daemon)
        ended(daemon, clock, request_id)
        daemon.run_once(clock.advance(after + timedelta(seconds=1)))
        return daemon.engine.get(request_id)

    def _check_watches(self, daemon: Daemon) -> None:
        assert daemon.engine.root.samefile(self.root), f"that daemon watches {daemon.engine.root}"

    # --- from outside --------------------------------------------------------------------

    def hitl(
        self,
        *args: str,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        umask: int | None = None,
        script: bool = False,
    ) -> subprocess.CompletedProcess[str]:
        """``hitl-vault --vault <root> *args`` in a process of its own, as a user runs it.

        By default through ``python -m hitl_vault``; ``script=True`` runs the installed
        console script instead. ``umask`` runs it under that umask.
        """
        if script:
            assert COMMAND.exists(), f"{COMMAND} is missing: install the package (pip install -e .)"
            argv = [str(COMMAND)]
        else:
            argv = [sys.executable, "-m", "hitl_vault"]
        argv += ["--vault", str(self.root), *args]
        if umask is not None:
            argv = ["/bin/sh", "-c", f'umask {umask:03o}; exec "$@"', "sh", *argv]
        return subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=None if env is None else dict(env),
            check=False,
        )

    def sql(self, statement: str, *args: object) -> None:
        """A write into the journal by anyone who can open the file: no hitl-vault involved."""
        db = sqlite3.connect(self.root / ".hitl" / "journal.db", isolation_level=None)
        try:
            db.execute(statement, args)
        finally:
            db.close()


def needs_attention(dashboard: str) -> str:
    """The "Needs attention" section of a dashboard's text, its heading line left out."""
    return dashboard.split("## Needs attention\n", 1)[1].split("\n## ", 1)[0]
