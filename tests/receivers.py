"""Real receivers for notification tests: an HTTP server recording json:// and ntfy://
posts, and an SMTP server (aiosmtpd) recording e-mails, both on 127.0.0.1."""

from __future__ import annotations

import http.server
import json
import queue
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .helpers import eventually


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Post:
    path: str
    headers: dict[str, str]
    payload: dict[str, Any]

    @property
    def title(self) -> str:
        return str(self.payload["title"])

    @property
    def message(self) -> str:
        return str(self.payload["message"])


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server: Any = self.server
        server.receiver.arrived(Post(self.path, dict(self.headers), json.loads(body)))
        answer = b'{"id": "x1", "event": "message"}'  # what ntfy answers
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Receiver:
    """A real HTTP server on 127.0.0.1 recording each json:// and ntfy:// POST.

    Its port is chosen up front, so a test can name it in hitl-vault.yaml while the
    receiver is still down and :meth:`start` it later.
    """

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    def arrived(self, post: Post) -> None:
        with self._lock:
            self.posts.append(post)

    def got(self, path: str | None = None) -> list[Post]:
        """The POSTs so far (to ``path``), in the order they arrived."""
        with self._lock:
            return [p for p in self.posts if path is None or p.path == path]

    def wait_for(self, count: int, path: str | None = None, timeout: float = 15) -> list[Post]:
        eventually(lambda: len(self.got(path)) >= count, timeout)
        return self.got(path)

    def start(self) -> Receiver:
        self._server = http.server.HTTPServer(("127.0.0.1", self.port), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}
        )
        self._thread.start()
        return self

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            assert self._thread is not None
            self._thread.join(10)
            self._server.server_close()
            self._server = None


@contextmanager
def smtp_server() -> Iterator[tuple[int, queue.Queue[bytes]]]:
    """A real SMTP server (aiosmtpd) on 127.0.0.1: its port and the mails it accepted."""
    from aiosmtpd.controller import Controller

    received: queue.Queue[bytes] = queue.Queue()

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            received.put(envelope.content)
            return "250 OK"

    port = free_port()
    controller = Controller(Handler(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, received
    finally:
        controller.stop()
