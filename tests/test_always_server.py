"""The "always" allows at the gate over HTTP: the service consults them as the local gate does,
so a covered call is "none" and recorded nowhere; another command still asks."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from hitl_vault.agents.gate_service import GateAnswer
from hitl_vault.agents.hookio import Call
from hitl_vault.engine import Engine

from .test_gate_server import call, engine, remote

__all__ = ["engine"]  # the fixture, shared


def test_the_gate_over_http_lets_an_always_allowed_command_through(engine: Engine) -> None:
    """Approved always: the same command (any description) is "none", nothing recorded;
    from another folder, or with another input key, it asks."""
    first = remote(engine, call("Bash", {"command": "git push", "description": "push"}))
    assert first.decision == "pending" and first.request is not None
    rid = first.request.id
    engine.allows.add(
        engine.get(rid),
        lambda: engine.approve(rid, "alice"),
        by="alice",
        lasting=timedelta(hours=1),
    )
    made = len(engine.list())
    again = remote(engine, call("Bash", {"command": "git push", "description": "push it now"}))
    assert again == GateAnswer("none") and len(engine.list()) == made
    other = remote(engine, call("Bash", {"command": "git push --force"}))
    assert other.decision == "pending"
    elsewhere = Call("claude-code", "s1", "Bash", {"command": "git push"}, Path("/home/dev/b"))
    assert remote(engine, elsewhere).decision == "pending"
    unboxed = call("Bash", {"command": "git push", "dangerouslyDisableSandbox": True})
    assert remote(engine, unboxed).decision == "pending"
    [allow] = engine.allows.in_force()
    engine.allows.revoke(allow.name, "bob")
    after = remote(engine, call("Bash", {"command": "git push", "description": "once more"}))
    assert after.decision == "pending"
