"""The client of the service's Unix socket (:mod:`hitl_vault.serve.socket`): what
``hitl-vault --server unix:PATH`` uses. No token: the kernel tells the service who
connects. Standard library only.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from ..errors import ServiceError

MAX_ANSWER = 64 << 20  # bytes: a list of many requests fits


class SocketClient:
    """Ask the service at the Unix socket ``path``; each call is one request and answer."""

    def __init__(self, path: str | Path, *, timeout: float = 30.0) -> None:
        self.path = str(path)
        self.timeout = timeout

    def __repr__(self) -> str:
        return f"SocketClient({self.path!r})"

    def ask(self, op: str, **fields: Any) -> Any:
        """The result of ``op``; the error the service answered, as the HTTP client raises
        it (:class:`~hitl_vault.errors.ServiceError` and its kind), or a ServiceError
        saying why the service could not be asked."""
        line = json.dumps({"op": op, **fields}, ensure_ascii=False).encode("utf-8") + b"\n"
        where = f"unix:{self.path}"
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(self.timeout)
                sock.connect(self.path)
                sock.sendall(line)
                raw = _read_line(sock)
        except FileNotFoundError:
            missing = f"{where}: no such socket (is `hitl-vault serve` running?)"
            raise ServiceError(missing) from None
        except PermissionError:
            raise ServiceError(f"{where}: this user may not reach the socket") from None
        except (OSError, TimeoutError) as e:
            raise ServiceError(f"{where}: the service could not be asked ({e})") from None
        try:
            answer = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            answer = None
        if not isinstance(answer, dict) or not isinstance(answer.get("ok"), bool):
            raise ServiceError(f"{where}: the service answered something unexpected")
        if answer["ok"]:
            return answer.get("result")
        from ..client import _error

        status = answer.get("status")
        raise _error(status if isinstance(status, int) else 0, answer, op, where)

    def whoami(self) -> dict[str, Any]:
        """``{"name", "uid"}``: the person the service takes this OS user for."""
        return self.ask("whoami")  # type: ignore[no-any-return]

    def get(self, request_id: str) -> dict[str, Any]:
        return self.ask("show", id=request_id)  # type: ignore[no-any-return]

    def list(self, status: str | None = None, limit: int | None = None) -> list[Any]:
        return self.ask("list", status=status, limit=limit)  # type: ignore[no-any-return]

    def approve(
        self, request_id: str, reason: str = "", expect: str | None = None
    ) -> dict[str, Any]:
        answer = self.ask("approve", id=request_id, reason=reason, expect=expect)
        return answer  # type: ignore[no-any-return]

    def reject(self, request_id: str, reason: str = "") -> dict[str, Any]:
        return self.ask("reject", id=request_id, reason=reason)  # type: ignore[no-any-return]

    def cancel(self, request_id: str) -> dict[str, Any]:
        return self.ask("cancel", id=request_id)  # type: ignore[no-any-return]


def _read_line(sock: socket.socket) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        chunk = sock.recv(1 << 16)
        if not chunk:
            return b"".join(chunks)
        newline = chunk.find(b"\n")
        if newline >= 0:
            chunks.append(chunk[:newline])
            return b"".join(chunks)
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_ANSWER:
            raise OSError("the answer is too long")
