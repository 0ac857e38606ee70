"""The daemon's parts are handed what they use: only the Daemon takes the Engine apart, and
what a reload replaces reaches the parts without a restart."""

from __future__ import annotations

import ast
from datetime import timedelta
from pathlib import Path

import hitl_vault.daemon
from hitl_vault import Vault
from hitl_vault.daemon.loop import Daemon

from .helpers import TEMPLATE_QUIET, Clock

DAEMON = Path(hitl_vault.daemon.__file__).parent


def _imports_engine(path: Path) -> bool:
    """Whether the module imports ``hitl_vault.engine`` (relatively or not, typing-only too)."""
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module is not None:
            names = [node.module if node.level == 0 else f"hitl_vault.{node.module}"]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        if any(n == "hitl_vault.engine" or n.startswith("hitl_vault.engine.") for n in names):
            return True
    return False


def test_only_the_daemon_loop_imports_the_engine() -> None:
    """Every daemon part gets its collaborators from the Daemon, never the whole Engine."""
    importing = sorted(p.name for p in DAEMON.glob("*.py") if _imports_engine(p))
    assert importing == ["loop.py"]


def test_a_reloaded_quiet_period_reaches_the_parts_that_wait_for_quiet(
    clocked_vault: Vault, daemon: Daemon, clock: Clock
) -> None:
    """After hitl-vault.yaml changes ``defaults.quiet``, the next rules edit waits the new
    period: the parts read the rules in force, not a copy taken at start."""
    rules = clocked_vault.root / "hitl-vault.yaml"
    text = rules.read_text()
    assert "quiet: 2s" in text
    rules.write_text(text.replace("quiet: 2s", "quiet: 7s", 1))
    daemon.run_once(clock.now)
    daemon.notice(rules)
    daemon.run_once(clock.now)
    assert daemon.rules.next_wake(clock.now) == clock.now + TEMPLATE_QUIET  # the old rules
    daemon.run_once(clock.advance(TEMPLATE_QUIET))  # reloaded
    assert clocked_vault.policy.defaults.quiet == timedelta(seconds=7)
    daemon.notice(rules)
    daemon.run_once(clock.now)
    assert daemon.rules.next_wake(clock.now) == clock.now + timedelta(seconds=7)
    assert daemon.quiet.period() == timedelta(seconds=7)
