"""The Service layer on its own (as the socket and MCP doors call it): a wait without a
daemon in the process still wakes on another writer's decision, and an agent's session
and client name are kept in fields of their own."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path

import pytest

from hitl_vault import Vault
from hitl_vault.identity import API, Principal, Role
from hitl_vault.serve.service import Service
from hitl_vault.serve.waiters import Waiters

BOT = Principal(
    "bot", Role.AGENT, API, credential="tok-bot", session="s-42", client_name="claude-code"
)


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


async def test_an_agents_session_and_client_go_in_fields_of_their_own(
    vault_path: Path,
) -> None:
    """requested_by is the token's name; the token, and the session and client the agent
    gave, are fields of their own, and the context is as the agent wrote it."""
    with Vault(vault_path) as vault:
        service = Service(vault, workers=1)
        await service.start()
        try:
            made = await service.call(service.submit, BOT, "deploy", context="why")
        finally:
            await service.stop()
    assert made.requested_by == "bot"
    assert (made.context, made.credential) == ("why", "tok-bot")
    assert (made.session, made.client) == ("s-42", "claude-code")


def test_ten_failed_sign_ins_refuse_an_address_for_a_minute() -> None:
    """Ten failures within a minute refuse the address (its failures get 429) for a
    minute; another address is not refused, and a minute later neither is."""
    from hitl_vault.serve.limits import FailedSignIns

    now = [1000.0]
    tries = FailedSignIns(lambda: now[0])
    assert not any(tries.failed("10.0.0.1") for _ in range(9))
    assert tries.refused_for("10.0.0.1") == 0
    assert tries.failed("10.0.0.1") and tries.refused_for("10.0.0.1") == 60
    assert tries.refused_for("10.0.0.2") == 0
    now[0] += 60
    assert tries.refused_for("10.0.0.1") == 0


def test_the_gate_over_http_refuses_an_agent_named_as_another_channel(vault_path: Path) -> None:
    """POST /api/v1/gate's handler refuses an agent token named inbox (403): its calls
    would otherwise be asked in the Inbox's name."""
    import pytest

    from hitl_vault.errors import ForbiddenError
    from hitl_vault.serve.gate import gate_handler

    with Vault(vault_path) as vault:
        gate = gate_handler(Service(vault))
        inbox = Principal("inbox", Role.AGENT, API)
        with pytest.raises(ForbiddenError, match="a name of its own"):
            gate(inbox, {"tool_name": "Bash", "tool_input": {"command": "ls"}})


async def test_failed_sign_ins_not_yet_journaled_are_when_the_service_stops(
    vault_path: Path,
) -> None:
    """The first failure from an address is in the service log at once; the ones after it
    within the minute are written when the service stops, none lost."""
    with Vault(vault_path) as vault:
        service = Service(vault, workers=2)
        await service.start()
        try:
            for _ in range(3):
                assert await service.call(service.authenticate, "hv_guess", "10.0.0.8") is None
            told = [e.details[0] for e in vault.engine.journal.service_log()]
            assert told == ["1 failed"]
        finally:
            await service.stop()
        told = [e.details[0] for e in vault.engine.journal.service_log()]
        assert told == ["2 failed", "1 failed"]


def _publish(waiters: Waiters, request_id: str) -> None:
    """What the engine's listener does on a thread that published an entry of the request."""
    thread = threading.Thread(target=waiters.poke, args=(request_id,), kwargs={"look": True})
    thread.start()
    thread.join()


async def test_a_long_poll_is_answered_by_the_thread_that_published_its_requests_move() -> None:
    """The publishing thread reads the answer of a wait whose request moved, and only then
    wakes the loop to send it (no trip to another thread on the way); an entry that moved
    nothing (a vote) wakes nothing; an answer that could not be read is raised at the wait."""
    waiters = Waiters()
    waiters.bind(asyncio.get_running_loop())
    moved: dict[str, bool] = {"r1": False, "r2": True}
    read_on: list[str] = []

    def look(request_id: str) -> tuple[bool, str | None]:
        read_on.append(threading.current_thread().name)
        if request_id == "r2":
            raise OSError("the note could not be read")
        return (True, "approved") if moved[request_id] else (False, None)

    with (
        waiters.waiting("r1", lambda: look("r1")) as first,
        waiters.waiting("r2", lambda: look("r2")) as second,
    ):
        _publish(waiters, "r1")  # a vote: still pending
        await asyncio.sleep(0)  # (a wake-up it scheduled would run here)
        assert not first.wake.is_set() and first.answer() == (False, None)
        moved["r1"] = True
        _publish(waiters, "r1")
        await asyncio.wait_for(first.wake.wait(), 10)
        assert first.answer() == (True, "approved")
        assert threading.current_thread().name not in read_on  # never on the loop
        _publish(waiters, "r2")
        await asyncio.wait_for(second.wake.wait(), 10)
        with pytest.raises(OSError, match="could not be read"):
            second.answer()
