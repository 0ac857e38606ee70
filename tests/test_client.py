"""``hitl_vault.Client``: a script's way to the service, against a real ``serve`` stack;
each refusal raised as the hitl-vault error it stands for, with the service's words."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

import hitl_vault
from hitl_vault import Client
from hitl_vault.errors import (
    ForbiddenError,
    IllegalTransitionError,
    NotAuthenticatedError,
    RequestNotFoundError,
    ServiceError,
    UsageError,
    WaitTimeoutError,
)

from .servers import Server, serving


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(tmp_path_factory.mktemp("client") / "vault") as s:
        yield s


@pytest.fixture(scope="module")
def agent(server: Server) -> Client:
    return Client(server.url, server.token("script"))


@pytest.fixture(scope="module")
def alice(server: Server) -> Client:
    return Client(server.url, server.token("alice", "approver"))


def test_submit_wait_and_approve_from_two_clients(agent: Client, alice: Client) -> None:
    """The agent submits and waits; the approver's approval ends the wait."""
    made = agent.submit("deploy", {"env": "prod"}, summary="ship", context="release 7")
    assert (made["status"], made["requested_by"], made["context"]) == (
        "pending",
        "script",
        "release 7",
    )
    assert agent.get(made["id"]) == made
    threading.Timer(0.2, alice.approve, (made["id"], "fine")).start()
    done = agent.wait(made["id"], timeout=20)
    assert done["status"] == "approved" and done["decided_by"] == "alice"
    assert made["id"] in [r["id"] for r in agent.list(status="approved", limit=5)]


def test_a_wait_on_a_request_decided_already_returns_at_once(agent: Client, alice: Client) -> None:
    """A request approved before the wait began (an action with no executor stays approved)
    is answered at once, not after the longest poll."""
    made = agent.submit("deploy", {"env": "stage"})
    alice.approve(made["id"])
    started = time.monotonic()
    assert agent.wait(made["id"], timeout=30)["status"] == "approved"
    assert time.monotonic() - started < 20  # the poll would hold for up to 60 s otherwise


def test_reject_cancel_and_a_wait_that_times_out(agent: Client, alice: Client) -> None:
    """reject and cancel return the request; wait raises WaitTimeoutError when time is up."""
    first, second = agent.submit("deploy"), agent.submit("deploy")
    assert alice.reject(first["id"], "not today")["status"] == "rejected"
    with pytest.raises(WaitTimeoutError):
        agent.wait(second["id"], timeout=0.2)
    assert agent.cancel(second["id"])["status"] == "cancelled"


def test_refusals_are_raised_as_hitl_vault_errors(
    server: Server, agent: Client, alice: Client
) -> None:
    """401, 403, 404, 409, 422 → NotAuthenticated, Forbidden, RequestNotFound,
    IllegalTransition, UsageError, each with the service's message."""
    made = agent.submit("deploy")
    with pytest.raises(NotAuthenticatedError):
        Client(server.url, "hv_not_a_token").get(made["id"])
    with pytest.raises(ForbiddenError, match="asks but never decides"):
        agent.approve(made["id"])
    with pytest.raises(RequestNotFoundError, match="not found"):
        alice.get("20990101T000000Z-deploy-abcdef")
    alice.reject(made["id"])
    with pytest.raises(IllegalTransitionError, match="is rejected"):
        alice.approve(made["id"])
    with pytest.raises(UsageError, match="is not a valid action name"):
        agent.submit("no way")


def test_an_unreachable_service_is_a_service_error() -> None:
    """Nothing listening: ServiceError saying it could not be reached."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(ServiceError, match="could not be reached"):
        Client(f"http://127.0.0.1:{port}", "hv_x").list()


def test_plain_http_goes_to_this_machine_only() -> None:
    """http:// to another machine would send the token in clear: refused before sending."""
    with pytest.raises(UsageError, match="unencrypted"):
        Client("http://vault.example.com", "hv_x")
    with pytest.raises(UsageError, match="not an http"):
        Client("ftp://vault.example.com", "hv_x")
    for elsewhere in (
        "http://evil.localhost:8787",
        "http://localhost.evil.example",
        "http://0x7f.1",
    ):
        with pytest.raises(UsageError, match="unencrypted"):  # names DNS answers for
            Client(elsewhere, "hv_x")
    for here in ("http://localhost:8787", "http://127.0.0.2", "http://[::1]"):
        assert Client(here, "hv_x").url == here
    assert Client("https://vault.example.com/base", "hv_x").url == "https://vault.example.com/base"
    assert "hv_secret" not in repr(Client("http://[::1]:8787", "hv_secret"))


def test_client_is_exported_lazily() -> None:
    """hitl_vault.Client is the client class."""
    assert hitl_vault.Client is Client
