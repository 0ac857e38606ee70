"""The service's Unix socket: a person decides with the CLI (``hitl-vault --server
unix:PATH approve ID``), and the kernel, not the caller, says who they are.

Each connection's OS user comes from the kernel (``SO_PEERCRED``); ``people`` maps that
uid to a person, and every request on the connection is that person's, as an approver,
``via socket`` (the history says ``by alice via socket``, and ``authenticated: true``
counts it). A uid no person has may read nothing and decide nothing. The socket's mode is
0666 for that reason: who may connect is not what it proves.

Where it is: ``serve --socket PATH``; by default ``/run/hitl-vault/<vault>-<hash>.sock``
when the service may write ``/run/hitl-vault`` (systemd's ``RuntimeDirectory=hitl-vault``),
else ``$XDG_RUNTIME_DIR/hitl-vault/<vault>-<hash>.sock`` (reachable by the service's own
user only), else ``<tmp>/hitl-vault-<uid>/<vault>-<hash>.sock``; ``serve`` prints it. The
folder it makes for the socket is 0755, so the people the service maps can reach it.

The protocol: one JSON object a line each way, as many as the client likes on one
connection. A request is ``{"op": OP, ...}``; the answer ``{"ok": true, "result": ...}``
or ``{"ok": false, "status": 403|404|409|422|..., "error": "...", ...}`` with the status
and fields the HTTP API gives for the same error. The ops:

* ``whoami`` → ``{"name", "uid"}``
* ``show`` ``{"id"}`` → the request as ``show --json`` prints it
* ``list`` ``{"status"?, "limit"?}`` → the requests as ``list --json`` prints them
* ``approve`` ``{"id", "reason"?, "expect"?}``, ``reject`` ``{"id", "reason"?}``,
  ``cancel`` ``{"id"}`` → the request after it
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import stat
import struct
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ForbiddenError, UsageError
from ..identity import SOCKET, Principal, Role

if TYPE_CHECKING:
    from .service import Service

log = logging.getLogger(__name__)

RUN_DIR = Path("/run/hitl-vault")
MAX_LINE = 1 << 16  # bytes a request line may hold
IDLE = 300.0  # seconds a connection may sit without a request
_OPS = ("whoami", "show", "list", "approve", "reject", "cancel")
_FIELDS = {
    "whoami": (),
    "show": ("id",),
    "list": ("status", "limit"),
    "approve": ("id", "reason", "expect"),
    "reject": ("id", "reason"),
    "cancel": ("id",),
}


def default_path(vault_root: Path) -> Path:
    """Where ``serve`` puts the socket when ``--socket`` is not given (see the module): its
    name is the vault folder's and a short hash of its whole path, so two services of two
    vaults called alike never meet."""
    import hashlib

    root = os.path.realpath(vault_root)
    digest = hashlib.sha256(root.encode("utf-8", "surrogateescape")).hexdigest()[:8]
    name = f"{os.path.basename(root) or 'vault'}-{digest}.sock"
    if RUN_DIR.is_dir() and os.access(RUN_DIR, os.W_OK | os.X_OK):
        return RUN_DIR / name
    runtime = os.environ.get("XDG_RUNTIME_DIR", "")
    if runtime and os.path.isabs(runtime) and os.access(runtime, os.W_OK | os.X_OK):
        return Path(runtime) / "hitl-vault" / name
    return Path(tempfile.gettempdir()) / f"hitl-vault-{os.getuid()}" / name


def peer_uid(sock: socket.socket) -> int:
    """The uid of the process at the other end of a Unix socket, from the kernel."""
    size = struct.calcsize("3i")
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, size)
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def prepare(path: Path) -> None:
    """Make the socket's folder (0755, this user's) and clear a socket no service listens on;
    :class:`UsageError` for anything else there, or a system that cannot say who connects."""
    if not hasattr(socket, "SO_PEERCRED"):
        raise UsageError(
            "--socket", "this system does not say who is at the other end of a socket "
            "(SO_PEERCRED, Linux)", "use the HTTP API with approver tokens instead",
        )  # fmt: skip
    folder = path.parent
    if not folder.exists():
        folder.mkdir(mode=0o755, parents=True)
        os.chmod(folder, 0o755)
    st = folder.stat()
    open_to_others = st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX
    if st.st_uid not in (os.getuid(), 0) or open_to_others:
        raise UsageError(
            "--socket", f"{folder} may be changed by other users",
            "give a path in a folder only this user (or root) may write",
        )  # fmt: skip
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UsageError("--socket", f"{path} exists and is not a socket", "give another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:  # nobody listens: a socket left by a service that was killed
        path.unlink()
        return
    finally:
        probe.close()
    raise UsageError("--socket", f"{path}: another service listens on it", "stop it first")


class SocketServer:
    """The Unix socket of one :class:`Service`: :meth:`start`, then :meth:`close`."""

    def __init__(self, service: Service, path: Path) -> None:
        self.service = service
        self.path = Path(os.path.abspath(path))
        self._server: asyncio.AbstractServer | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen (mode 0666: every request's identity is the kernel's word)."""
        prepare(self.path)
        self._server = await asyncio.start_unix_server(
            self._connection, str(self.path), limit=MAX_LINE
        )
        os.chmod(self.path, 0o666)
        log.info("listening on the Unix socket %s", self.path)

    async def close(self) -> None:
        """Stop listening, end the open connections, remove the socket file."""
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
            for writer in list(self._open):  # the connections open: ended, not waited for
                writer.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 3)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sock = writer.get_extra_info("socket")
        self._open.add(writer)
        try:
            uid = peer_uid(sock)
            while True:
                try:
                    line = await asyncio.wait_for(reader.readline(), IDLE)
                except ValueError:  # longer than MAX_LINE
                    await _send(writer, _refusal(422, f"a request line is over {MAX_LINE} bytes"))
                    break
                if not line:
                    break
                await _send(writer, await self.answer(uid, line))
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError):
            pass  # an idle client, or one that left
        finally:
            self._open.discard(writer)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def answer(self, uid: int, line: bytes) -> dict[str, Any]:
        """The answer to one request line from the OS user ``uid``."""
        try:
            message = _message(line)
            who = await self.service.call(self._person, uid)
            return {"ok": True, "result": await self._do(who, uid, message)}
        except Exception as e:
            from .answers import error_response

            response = error_response(e)
            if response is None:  # a bug: the log has it, the client a clear answer
                log.exception("the Unix socket could not answer %s", line[:200])
                return _refusal(500, "the service failed to answer; its log says why")
            body = json.loads(bytes(response.body))
            return {"ok": False, "status": response.status_code, **body}

    def _person(self, uid: int) -> Principal:
        """The approver the OS user ``uid`` is; :class:`ForbiddenError` if nobody."""
        from ..access.people import person_for_uid

        person = person_for_uid(self.service.engine.journal, uid)
        if person is None:
            raise ForbiddenError(
                f"uid {uid} is no one in people, so it may read and decide nothing here "
                f"(the service's owner maps it: hitl-vault people add NAME --uid {uid})"
            )
        return Principal(person.name, Role.APPROVER, SOCKET, client=f"uid {uid}")

    async def _do(self, who: Principal, uid: int, m: dict[str, Any]) -> Any:
        s, op = self.service, m["op"]
        if op == "whoami":
            return {"name": who.name, "uid": uid}
        if op == "list":
            found = await s.call(s.list, who, m.get("status"), m.get("limit"))
            return await s.call(s.listed, found)
        if op == "show":
            request = await s.call(s.get, who, m["id"])
        elif op == "cancel":
            request = await s.call(s.cancel, who, m["id"])
        else:
            request = await s.call(
                s.decide, who, m["id"], op == "approve", m.get("reason", ""), m.get("expect")
            )
        return await s.call(s.shown, request)


def _message(line: bytes) -> dict[str, Any]:
    """One request line as a checked object; :class:`UsageError` saying what is wrong."""
    try:
        message = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise UsageError("request", "is not one line of JSON", 'send {"op": ...}') from None
    if not isinstance(message, dict) or message.get("op") not in _OPS:
        raise UsageError("op", f"is not one of {', '.join(_OPS)}", 'send {"op": "show", ...}')
    fields = _FIELDS[message["op"]]
    for key, value in message.items():
        if key != "op" and key not in fields:
            raise UsageError(key, f"is not a field of {message['op']}", f"use {fields}")
        wanted: type = int if key == "limit" else str
        if (
            key != "op"
            and value is not None
            and (not isinstance(value, wanted) or isinstance(value, bool))
        ):
            raise UsageError(key, f"must be {wanted.__name__}", "fix the request")
    if "id" in fields and not isinstance(message.get("id"), str):
        raise UsageError("id", "is missing", f'send {{"op": "{message["op"]}", "id": ID}}')
    return message


def _refusal(status: int, error: str) -> dict[str, Any]:
    return {"ok": False, "status": status, "error": error}


async def _send(writer: asyncio.StreamWriter, answer: dict[str, Any]) -> None:
    writer.write(json.dumps(answer, ensure_ascii=False).encode("utf-8") + b"\n")
    await writer.drain()


async def start_socket(service: Service, path: Path) -> SocketServer:
    """Listen on ``path`` for ``service`` (on the running event loop); close it when done."""
    server = SocketServer(service, path)
    await server.start()
    return server


def socket_lifespan(
    service: Service, path: Path, *, required: bool = True
) -> Callable[[], AbstractAsyncContextManager[SocketServer | None]]:
    """The socket as one of :func:`~hitl_vault.serve.app.build_app`'s ``lifespans``:
    listening while the app runs. Not ``required`` (the default path, not one the user
    gave): a socket that cannot be made is a warning, and the service runs without it."""

    @asynccontextmanager
    async def listening() -> AsyncIterator[SocketServer | None]:
        try:
            server = await start_socket(service, path)
        except (UsageError, OSError) as e:
            if required:
                raise
            log.warning("no Unix socket (%s): give serve --socket PATH to have one", e)
            yield None
            return
        try:
            yield server
        finally:
            await server.close()

    return listening
