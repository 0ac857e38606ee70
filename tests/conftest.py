"""Shared fixtures: a vault from the real template, a stepped daemon, a guard on threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_vault import Request, Vault
from hitl_vault.daemon import Daemon
from hitl_vault.template import init_vault

from .helpers import Clock


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
def daemon(vault_path: Path, clock: Clock, ran: list[str]) -> Iterator[Daemon]:
    """A daemon on the template vault with an in-process ``payment`` executor that records runs.

    Tests step it with ``daemon.run_once(clock.now)``; modules that need a real
    ``hitl-vault run`` process define a ``daemon`` fixture of their own.
    """
    with Vault(vault_path, clock=clock) as vault:

        @vault.action("payment")
        def pay(request: Request) -> str:
            ran.append(request.id)
            return f"paid {request.params['amount']}"

        with Daemon(vault, clock=clock) as d:
            yield d
