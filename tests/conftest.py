"""Shared fixtures: a vault from the real template, its scaffold, a stepped daemon, a real
daemon process, a guard on threads.

A module that needs the vault set up differently (an executor of its own, a short
quiet period) overrides ``vault_path``; every fixture here then uses that vault.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_vault import Request, Vault
from hitl_vault.daemon.loop import Daemon
from hitl_vault.template import init_vault

from .helpers import Clock, DaemonProcess, VaultHelper


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail any test that leaves a thread running (a watcher or worker nobody stopped)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    path = tmp_path / "vault"
    init_vault(path)
    return path


@pytest.fixture
def helper(vault_path: Path) -> VaultHelper:
    """The scaffold on ``vault_path``: executors, runs, attention, the CLI, raw SQL."""
    return VaultHelper(vault_path)


@pytest.fixture
def vault(vault_path: Path) -> Iterator[Vault]:
    with Vault(vault_path) as v:
        yield v


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ran() -> list[str]:
    """The ids the ``daemon`` fixture's ``payment`` executor ran, in order."""
    return []


@pytest.fixture
def clocked_vault(vault_path: Path, clock: Clock, ran: list[str]) -> Iterator[Vault]:
    """The template vault on the test's clock, with an in-process ``payment`` executor that
    records runs (the vault the ``daemon`` fixture watches)."""
    with Vault(vault_path, clock=clock) as vault:

        @vault.action("payment")
        def pay(request: Request) -> str:
            ran.append(request.id)
            return f"paid {request.params['amount']}"

        yield vault


@pytest.fixture
def daemon(clocked_vault: Vault, clock: Clock) -> Iterator[Daemon]:
    """A daemon on ``clocked_vault``, stepped by hand: ``daemon.run_once(clock.now)``.

    Modules that need a real ``hitl-vault run`` process use ``daemon_process``.
    """
    with Daemon(clocked_vault.engine, clock=clock) as d:
        yield d


@pytest.fixture
def daemon_process(vault_path: Path) -> Iterator[DaemonProcess]:
    """A real ``hitl-vault run`` watching ``vault_path``; killed at the end if still running."""
    with DaemonProcess(vault_path) as d:
        yield d
