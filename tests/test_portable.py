"""Portability: every module imports without POSIX-only modules; the Windows paths hold up."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from hitl_vault.errors import VaultError
from hitl_vault.execute import processes
from hitl_vault.journal import lock
from hitl_vault.journal.lock import DaemonLock, LockUnavailableError, daemon_running

# POSIX-only modules: the package may use them only where it needs them, guarded.
HIDDEN = ("fcntl", "termios", "resource", "grp", "pwd")

# The mcp extra's SDK chooses fcntl or its Windows code by sys.platform, which hiding modules
# cannot fool: it is loaded first, as it is, and hitl_vault.agents.mcp_server is imported
# like the rest.
IMPORT_EVERYTHING = """
import contextlib, importlib, io, pkgutil, sys

import mcp.server.mcpserver

for name in {hidden!r}:
    sys.modules[name] = None  # `import fcntl` now raises ImportError, as on Windows

import hitl_vault

def fail(name):
    raise ImportError(f"cannot import the package {{name}}")

names = sorted(
    m.name for m in pkgutil.walk_packages(hitl_vault.__path__, "hitl_vault.", onerror=fail)
)
for name in names:
    if name == "hitl_vault.__main__":  # runs the CLI when imported: ask it for --help
        sys.argv = ["hitl-vault", "--help"]
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            importlib.import_module(name)
    else:
        importlib.import_module(name)
    print(name)
"""

# What Windows' os, signal and select lack of what Linux has (and the package might touch).
SIMULATE_WINDOWS = """
import importlib, os, pkgutil, select, signal, sys

import hitl_vault  # first as usual, so the standard library is loaded with all it needs
import mcp.server.mcpserver

names = sorted(m.name for m in pkgutil.walk_packages(hitl_vault.__path__, "hitl_vault."))
names.remove("hitl_vault.__main__")  # runs the CLI when imported; it only imports cli
for name in [m for m in sys.modules if m == "hitl_vault" or m.startswith("hitl_vault.")]:
    del sys.modules[name]
for module, attrs in {{
    os: "O_CLOEXEC O_NONBLOCK O_NOFOLLOW O_DIRECTORY fchmod fchown geteuid getuid getegid "
    "getgid killpg getpgid setsid getsid fork sync",
    signal: "SIGKILL SIGUSR1 SIGUSR2 SIGHUP SIGQUIT SIGALRM SIGCHLD SIGPIPE",
    select: "PIPE_BUF poll epoll",
}}.items():
    for attr in attrs.split():
        if hasattr(module, attr):
            delattr(module, attr)
for name in {hidden!r}:
    sys.modules[name] = None
for name in names:
    importlib.import_module(name)
    print(name)
"""


def run_python(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.process
def test_every_module_imports_without_posix_only_modules(tmp_path: Path) -> None:
    """Every hitl_vault module imports where fcntl, termios, resource, grp and pwd do not exist."""
    out = run_python(IMPORT_EVERYTHING.format(hidden=HIDDEN), tmp_path)
    assert out.returncode == 0, out.stderr
    imported = out.stdout.split()
    assert {
        "hitl_vault.journal.lock",
        "hitl_vault.execute.processes",
        "hitl_vault.cli.main",
    } <= set(imported)
    assert "hitl_vault.__main__" in imported
    assert len(imported) >= 25, imported  # the walk found the whole package


@pytest.mark.process
def test_every_module_imports_with_windows_os_module(tmp_path: Path) -> None:
    """Every hitl_vault module imports where os, signal and select lack their POSIX-only names."""
    out = run_python(SIMULATE_WINDOWS.format(hidden=HIDDEN), tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.split()) >= 25, out.stdout


@pytest.mark.parametrize(("platform", "module"), [("linux", "fcntl"), ("win32", "msvcrt")])
def test_the_lock_without_a_lock_module_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, platform: str, module: str
) -> None:
    """Without the platform's lock module, taking or checking the lock raises a clear VaultError."""
    path = tmp_path / ".hitl" / "daemon.lock"
    monkeypatch.setattr(lock, "fcntl", None)
    monkeypatch.setattr(lock, "msvcrt", None)
    monkeypatch.setattr(sys, "platform", platform)
    try:
        with pytest.raises(LockUnavailableError, match=rf"this Python has no {module} module"):
            DaemonLock(path).acquire()
        with pytest.raises(LockUnavailableError, match=rf"this Python has no {module} module"):
            daemon_running(path)
    finally:
        monkeypatch.undo()  # sys.platform back before pytest looks at it again
    assert issubclass(LockUnavailableError, VaultError)  # the CLI shows it as one line, exit 1
    assert not path.exists()  # no holder note claims a lock nobody holds


def _sleeper(code: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )


@pytest.mark.process
@pytest.mark.parametrize(
    ("code", "taskkilled"),
    [
        ("import time; time.sleep(60)", True),
        ("import sys; sys.stdin.read()", False),  # exits at end-of-file on stdin
    ],
)
def test_the_windows_stop_taskkills_what_still_runs(
    monkeypatch: pytest.MonkeyPatch, code: str, taskkilled: bool
) -> None:
    """On Windows an action still running after the grace is killed as a tree by taskkill /T /F."""
    calls: list[list[str]] = []

    def taskkill(argv: list[str], **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        calls.append(argv)  # does nothing: the fallback, proc.kill(), must still stop it
        return subprocess.CompletedProcess(argv, 128)

    monkeypatch.setattr(processes, "KILL_GRACE", 1.0)
    proc = _sleeper(code)
    monkeypatch.setattr(subprocess, "run", taskkill)
    started = time.monotonic()
    with processes.Pipes(proc, b"{}") as pipes:
        pipes.stop_writing()
        assert processes._stop_tree(proc, pipes) == 0
    assert time.monotonic() - started < 10
    assert proc.returncode is not None
    if taskkilled:
        assert len(calls) == 1 and calls[0][0].endswith("taskkill.exe")
        assert calls[0][1:] == ["/T", "/F", "/PID", str(proc.pid)]
    else:
        assert calls == [] and proc.returncode == 0
