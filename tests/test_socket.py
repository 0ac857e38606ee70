"""The service's Unix socket (docs "Separate users"): the kernel says which OS user
connects (SO_PEERCRED), people maps it to a person, and that person shows, lists and
decides through it; a uid nobody is mapped to gets nothing."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hitl_vault import Client, Status
from hitl_vault.errors import (
    ForbiddenError,
    IllegalTransitionError,
    RequestNotFoundError,
    UsageError,
)
from hitl_vault.serve.socket import default_path, prepare
from hitl_vault.serve.socket_client import SocketClient
from hitl_vault.vault import Vault

from .served import Served, serving

pytestmark = [pytest.mark.process, pytest.mark.slow]


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One real `hitl-vault serve` with a socket, for the module."""
    yield from serving()


@pytest.fixture
def alice(served: Served) -> SocketClient:
    """This OS user, mapped to alice, at the service's socket."""
    served.map_me("alice")
    return SocketClient(served.socket, timeout=30)


def ask(served: Served, action: str = "deploy", **params: Any) -> str:
    """A pending request from the agent ci-bot, over HTTP; its id."""
    agent = Client(served.url, served.agent_token)
    return str(agent.submit(action, params or {"env": "prod"})["id"])


def test_the_socket_says_who_the_kernel_says_connects(served: Served, alice: SocketClient) -> None:
    """whoami: the person people maps this process's uid to; the socket is 0666."""
    assert alice.whoami() == {"name": "alice", "uid": os.getuid()}
    assert stat.S_IMODE(served.socket.stat().st_mode) == 0o666


def test_a_mapped_person_shows_lists_and_approves_with_proof(
    served: Served, alice: SocketClient
) -> None:
    """show and list print what --json prints; an approval is alice's, via the socket."""
    request_id = ask(served)
    shown = alice.get(request_id)
    assert shown["id"] == request_id and shown["status"] == "pending"
    assert shown["requested_by"] == "ci-bot" and shown["params"] == {"env": "prod"}
    assert request_id in [r["id"] for r in alice.list(status="pending")]
    approved = alice.approve(request_id, "ship it", expect=shown["params_sha"])
    assert approved["status"] in ("approved", "executing", "executed", "failed")
    with Vault(served.vault) as v:
        request = v.get(request_id)
    assert request.decided_by == "alice" and request.reason == "ship it"
    with pytest.raises(IllegalTransitionError):  # no longer pending: 409
        alice.reject(request_id, "too late")


def test_a_rejection_and_a_cancel_go_through_too(served: Served, alice: SocketClient) -> None:
    """reject with a reason, cancel a pending one: the requests end so."""
    first, second = ask(served, env="a"), ask(served, env="b")
    assert alice.reject(first, "not today")["status"] == "rejected"
    assert alice.cancel(second)["status"] == "cancelled"
    with Vault(served.vault) as v:
        assert v.get(first).status is Status.REJECTED and v.get(first).reason == "not today"


def test_an_unmapped_or_disabled_uid_may_read_and_decide_nothing(
    served: Served, alice: SocketClient
) -> None:
    """A uid no enabled person has gets 403 naming it and how to be mapped, for every op."""
    request_id = ask(served)
    served.map_me("alice", disabled=True)
    try:
        for call in (alice.whoami, lambda: alice.get(request_id), alice.list,
                     lambda: alice.approve(request_id)):  # fmt: skip
            with pytest.raises(ForbiddenError, match=f"uid {os.getuid()} is no one in people"):
                call()
    finally:
        served.map_me("alice")
    assert alice.get(request_id)["status"] == "pending"


def test_bad_requests_get_the_apis_statuses(served: Served, alice: SocketClient) -> None:
    """An unknown id is 404, a bad line or field 422; the connection stays usable."""
    with pytest.raises(RequestNotFoundError):
        alice.get("20991231T000000Z-deploy-000000")
    with pytest.raises(UsageError, match="not one of"):
        alice.ask("submit", action="x")
    with pytest.raises(UsageError, match="not a field"):
        alice.ask("show", id="x", by="bob")
    with pytest.raises(UsageError, match="must be int"):
        alice.ask("list", limit="ten")
    with socket.socket(socket.AF_UNIX) as raw:
        raw.settimeout(30)
        raw.connect(str(served.socket))
        raw.sendall(b"not json\n" + json.dumps({"op": "whoami"}).encode() + b"\n")
        lines = _lines(raw, 2)
    first, second = (json.loads(line) for line in lines)
    assert first["ok"] is False and first["status"] == 422
    assert second == {"ok": True, "result": {"name": "alice", "uid": os.getuid()}}


def _lines(sock: socket.socket, count: int) -> list[bytes]:
    """``count`` lines read from ``sock``."""
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.splitlines()[:count]


# A Python another OS user may run (the tests' own may sit in a folder only root enters).
SYSTEM_PYTHON = next(
    (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.access(p, os.X_OK)), None
)


@pytest.mark.skipif(
    os.getuid() != 0 or SYSTEM_PYTHON is None,
    reason="needs root, and a system python, to connect as another OS user",
)
def test_another_os_user_nobody_mapped_is_refused_by_the_kernels_word(served: Served) -> None:
    """A process running as uid 65534 is that uid to the service, whatever it says."""
    assert SYSTEM_PYTHON is not None
    script = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(sys.argv[1])\n"
        's.sendall(b\'{"op": "whoami"}\\n\'); print(s.recv(65536).decode())\n'
    )
    done = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", script, str(served.socket)],
        user=65534, group=65534, extra_groups=[], capture_output=True, text=True, timeout=60,
        cwd="/", check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert answer["ok"] is False and answer["status"] == 403
    assert "uid 65534 is no one in people" in answer["error"]


def test_the_socket_path_is_checked_before_serving(tmp_path: Path) -> None:
    """A file in the way, a live service's socket: refused; a dead one's is cleared."""
    path = tmp_path / "s.sock"
    path.write_text("x")
    with pytest.raises(UsageError, match="not a socket"):
        prepare(path)
    path.unlink()
    live = socket.socket(socket.AF_UNIX)
    live.bind(str(path))
    live.listen(1)
    with pytest.raises(UsageError, match="another service listens"):
        prepare(path)
    live.close()  # its file stays: a killed service's
    prepare(path)
    assert not path.exists()
    shared = tmp_path / "open"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)
    with pytest.raises(UsageError, match="may be changed by other users"):
        prepare(shared / "s.sock")


def test_the_default_path_is_the_vaults_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two vaults named alike get two sockets; $XDG_RUNTIME_DIR is used when it is there."""
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path))
    one, two = default_path(tmp_path / "a" / "vault"), default_path(tmp_path / "b" / "vault")
    assert one != two and one.name.startswith("vault-") and one.suffix == ".sock"
    if not Path("/run/hitl-vault").is_dir():
        assert one.parent == tmp_path / "hitl-vault"


def test_a_bug_behind_the_socket_is_an_answer_not_a_dropped_connection(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """An operation that raises what no error maps (a bug): status 500, and the log has it."""
    import asyncio

    from hitl_vault.serve.socket import SocketServer

    class Broken:
        """A service whose every call fails as a bug would (none can be made to here)."""

        async def call(self, fn: Any, *args: Any) -> Any:
            raise RuntimeError("a bug")

    server = SocketServer(Broken(), Path("/nonexistent.sock"))  # type: ignore[arg-type]
    answer = asyncio.run(server.answer(os.getuid(), b'{"op": "whoami"}\n'))
    assert answer == {"ok": False, "status": 500, "error": answer["error"]}
    assert "its log says why" in answer["error"]
    assert "RuntimeError: a bug" in caplog.text
