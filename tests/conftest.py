"""Shared fixtures: a fresh vault from the real template, and a guard against leaked threads."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hitl_vault import Vault
from hitl_vault.template import init_vault


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
