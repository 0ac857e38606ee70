"""``hitl-vault serve`` in one process: the daemon on a thread of its own, the HTTP server
(uvicorn) on the event loop of the thread that runs it.

The daemon's loop blocks on its own wake-up event and its workers are threads; uvicorn's
is asyncio. Each keeps its loop: the daemon runs :meth:`Daemon.run_forever` on a thread,
and uvicorn serves on the calling thread. Signals are handled once, here (on the main
thread): the first SIGTERM or Ctrl-C stops both gracefully (uvicorn stops taking
connections and ends the open ones, the daemon lets actions in flight finish), a second
exits at once. One engine serves both, so the daemon's events (every write, whoever made
it) wake the long-polls.

On a journal several hosts share (PostgreSQL), the daemon runs only while this host leads
(:class:`~hitl_vault.daemon.leader.Leadership`): every host serves the API, one at a time
does the owner's work, and the service follows the journal's writes on its own.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from ..daemon.leader import Leadership, lease_settings
from ..daemon.loop import Daemon
from ..daemon.signals import stop_on_signals
from ..store import LeasedStore
from ..vault import Vault
from .app import build_app
from .guard import READ_TIMEOUT
from .message_links import decision_links
from .service import Service

log = logging.getLogger("hitl_vault.serve")

DEFAULT_LISTEN = ("127.0.0.1", 8787)
# The most connections served at once; beyond it a new request is answered 503 at once.
# Well above the 1,000 open long-polls the service is built for, and low enough that a
# flood of connections cannot take every file descriptor: raise the process's limit
# (``ulimit -n``, systemd's LimitNOFILE=) above it.
MAX_CONNECTIONS = 4096


class _TimedHttp(HttpToolsProtocol):
    """uvicorn's HTTP/1.1 protocol on httptools (llhttp, the C parser Node.js uses: the pure
    Python h11 took a third of the event loop's time per request), plus a deadline for a
    request's head: a client that sends half a request line or headers and stalls is
    disconnected after READ_TIMEOUT seconds (uvicorn times out only idle keep-alive
    connections)."""

    head_timeout = READ_TIMEOUT
    _head_timer: asyncio.TimerHandle | None = None
    _head_in = False  # the head of the request after the last answer has come whole

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.access_log = False  # never uvicorn's line: it has the query string (the guard logs)
        self._arm()

    def _arm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_in = False
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_late)

    def _head_late(self) -> None:
        in_flight = self.cycle is not None and not self.cycle.response_complete
        if not in_flight and not self._head_in and not self.transport.is_closing():
            self.transport.close()  # the head never came whole

    def on_headers_complete(self) -> None:
        super().on_headers_complete()
        self._head_in = True
        if self._head_timer is not None:
            self._head_timer.cancel()  # the head is in; the body has the guard's deadline
            self._head_timer = None

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()  # the next request's head has the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)


class _Server(uvicorn.Server):
    """uvicorn's server without its own signal handlers: :class:`Serving` handles them."""

    def install_signal_handlers(self) -> None:  # uvicorn < 0.29
        pass

    def capture_signals(self) -> Any:
        import contextlib

        return contextlib.nullcontext()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY only on accepted sockets whose
    # proto says TCP, and without it a keep-alive client waited ~40 ms for every answer
    # (the body's segment held by Nagle until the client's delayed ACK of the headers').
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host.strip("[]"), port))
    sock.listen(2048)
    return sock


@dataclass
class Serving:
    """The daemon and the HTTP server over one vault, until :meth:`stop` (or a signal).

    ``app_options``: more keywords for :func:`build_app` (``gate``, ``mcp_app``,
    ``lifespans``). ``sock``: a socket bound already (else ``listen`` is bound at start).
    """

    vault: Vault
    listen: tuple[str, int] = DEFAULT_LISTEN
    public_url: str | None = None
    trusted_proxy: str | None = None
    sock: socket.socket | None = None
    read_timeout: float = READ_TIMEOUT
    max_connections: int = MAX_CONNECTIONS
    app_options: dict[str, Any] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.service = Service(self.vault)
        journal = self.vault.engine.journal
        self.leadership: Leadership | None = None
        self.daemon: Daemon | None = None  # the daemon of the term led now (None: following)
        if isinstance(journal, LeasedStore):  # the daemon runs while this host leads
            lease, renew = lease_settings(os.environ)
            self.leadership = leadership = Leadership(
                journal, self._daemon_for_term, lease=lease, renew=renew
            )
            self.service.leadership = leadership
            self.vault.engine.notes.leave_notes = lambda: leadership.term is None  # a follower
        else:  # the daemon's lock is the lease: the daemon runs here, and publishes every write
            self.service.daemon_here = True
            self.daemon = Daemon(self.vault.engine, links=decision_links(journal))
        self._server: _Server | None = None
        self._daemon_failed: BaseException | None = None
        self._daemon_ready = threading.Event()  # set once the daemon watches, its threads up

    @property
    def address(self) -> tuple[str, int]:
        """Where it listens (the port chosen, for port 0)."""
        if self.sock is None:
            return self.listen
        host, port = self.sock.getsockname()[:2]
        return str(host), int(port)

    def run(self, on_ready: Callable[[], None] | None = None) -> None:
        """Serve until stopped. Holds the vault's daemon lock (:class:`DaemonRunningError`
        if another daemon has it), or on a shared journal leads while it holds the lease;
        raises what stopped the daemon, if it stopped itself."""
        engine = self.vault.engine
        if engine.notify.targets:  # a notification URL Apprise cannot read: refuse to start
            engine.reload_policy(check_urls=True)
        lock = None if self.leadership else engine.journal.daemon_lock().acquire()
        restore = stop_on_signals(self.stop)
        try:
            if self.sock is None:
                self.sock = bind(*self.listen)
            self._server = _Server(self._config())
            thread = threading.Thread(target=self._run_daemon, name="hitl-vault-daemon")
            thread.start()
            try:
                asyncio.run(self._serve(on_ready))
            finally:
                self.stop()
                thread.join()
                if self.leadership is None and self.daemon is not None:
                    self.daemon.close()
        finally:
            restore()
            if lock is not None:
                lock.release()
            if self.sock is not None:
                self.sock.close()
        if self._daemon_failed is not None:
            raise self._daemon_failed

    async def _serve(self, on_ready: Callable[[], None] | None) -> None:
        assert self._server is not None and self.sock is not None
        server = self._server
        task = asyncio.create_task(server.serve(sockets=[self.sock]))
        # Ready once the daemon watches too, its watcher and notifier up (a follower's daemon
        # waits for the lease): what the service says at start holds for the whole process.
        watching = self._daemon_ready if self.leadership is None else None
        while not task.done() and not (server.started and (watching is None or watching.is_set())):
            await asyncio.sleep(0.01)
        if server.started and not task.done():
            self.ready.set()
            if on_ready is not None:
                on_ready()
        while not task.done():  # a stop (a signal, maybe) also ends the open long-polls
            if server.should_exit:
                self.service.close()
                break
            await asyncio.sleep(0.1)
        await task

    def _daemon_for_term(self) -> Daemon:
        """A daemon for a term this host leads: it catches up first, as after a takeover."""
        journal = self.vault.engine.journal
        self.daemon = Daemon(self.vault.engine, links=decision_links(journal), takeover=True)
        return self.daemon

    def _run_daemon(self) -> None:
        try:
            if self.leadership is not None:
                self.leadership.run()
            elif self.daemon is not None:
                self.daemon.run_forever(self._daemon_ready)
        except BaseException as e:  # the journal is gone or damaged: the service stops too
            log.error("the daemon stopped: %s", e)
            self._daemon_failed = e
            self.stop()

    def stop(self) -> None:
        """Stop both, gracefully (any thread, or a signal handler)."""
        if self._server is not None:
            self._server.should_exit = True
        if self.leadership is not None:
            self.leadership.stop()
        elif self.daemon is not None:
            self.daemon.stop()

    def _config(self) -> uvicorn.Config:
        host, _ = self.address
        app = build_app(
            self.service,
            public_url=self.public_url,
            hosts=[host],
            read_timeout=self.read_timeout,
            **self.app_options,
        )
        protocol = type("TimedHttp", (_TimedHttp,), {"head_timeout": self.read_timeout})
        trusted = [self.trusted_proxy] if self.trusted_proxy else []
        return uvicorn.Config(
            app,
            http=protocol,
            lifespan="on",
            access_log=False,  # the guard logs each request, without its query string
            proxy_headers=bool(trusted),
            forwarded_allow_ips=trusted,
            server_header=False,
            timeout_keep_alive=5,
            limit_concurrency=self.max_connections,
            timeout_graceful_shutdown=3,
            log_config=None,
        )
