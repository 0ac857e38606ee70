"""The Service layer on its own (as the socket and MCP doors call it): a wait without a
daemon in the process still wakes on another writer's decision, and an agent's session
and client name are kept apart from its name."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hitl_vault import Vault
from hitl_vault.identity import API, Principal, Role
from hitl_vault.serve.service import Service

BOT = Principal("bot", Role.AGENT, API, session="s-42", client_name="claude-code")


async def test_a_wait_without_a_daemon_wakes_on_another_writers_decision(
    vault_path: Path,
) -> None:
    """No daemon here: the store's word of a write wakes the wait (no poll)."""
    with Vault(vault_path) as vault, Vault(vault_path) as elsewhere:
        service = Service(vault, workers=2)
        await service.start()
        try:
            made = await service.call(service.submit, BOT, "deploy")
            asyncio.get_running_loop().call_later(
                0.2, lambda: elsewhere.approve(made.id, by="alice")
            )
            started = time.monotonic()
            done = await service.wait(BOT, made.id, 20)
            assert done.status == "approved"
            assert time.monotonic() - started < 5
        finally:
            await service.stop()


async def test_an_agents_session_and_client_go_in_the_context_not_its_name(
    vault_path: Path,
) -> None:
    """requested_by is the token's name; the session and client it gave are shown apart."""
    with Vault(vault_path) as vault:
        service = Service(vault, workers=1)
        await service.start()
        try:
            made = await service.call(service.submit, BOT, "deploy", context="why")
        finally:
            await service.stop()
    assert made.requested_by == "bot"
    assert made.context == "why\n\n(asked by bot: session s-42, client claude-code)"
