"""A real ``hitl-vault serve`` stack for the service's tests: the daemon and uvicorn on an
ephemeral port of 127.0.0.1, in this process (one per test module), and a small HTTP
caller that shows exactly what went over the wire."""

from __future__ import annotations

import http.client
import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from hitl_vault import Vault
from hitl_vault.cli.template import init_vault
from hitl_vault.identity import Person, Role, keep_service_uid
from hitl_vault.serve.runner import Serving, bind
from hitl_vault.times import utcnow


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Server:
    """A running service: where it is, its vault, and tokens minted for it."""

    serving: Serving
    root: Path

    @property
    def vault(self) -> Vault:
        return self.serving.vault

    @property
    def port(self) -> int:
        return self.serving.address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, name: str, role: str = "agent", actions: tuple[str, ...] | None = None) -> str:
        """A new token's secret (an approver's NAME is added to people first)."""
        from hitl_vault.access.tokens import mint

        journal, now = self.vault.engine.journal, utcnow()
        if role == "approver" and journal.person(name) is None:
            journal.save_person(Person(name), now, "test", "person added")
        _, secret = mint(
            journal, name, Role(role), actions=actions, expires=timedelta(days=1),
            now=now, by="test",
        )  # fmt: skip
        return secret

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
    ) -> Answer:
        """One HTTP request; ``body``: bytes as they are, anything else as JSON."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        try:
            connection.request(method, path, data, sent)
            response = connection.getresponse()
            raw = response.read()
            got = {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()
        try:
            parsed = json.loads(raw) if raw else None
        except ValueError:
            parsed = raw
        return Answer(response.status, parsed, got)


@contextmanager
def serving(
    root: Path, *, read_timeout: float = 1.0, gate: bool = False, **options: Any
) -> Iterator[Server]:
    """``hitl-vault serve`` over a new vault at ``root`` until the block ends (``gate``: with
    the gate over HTTP, as serve mounts it)."""
    if not root.exists():
        init_vault(root)
    with Vault(root) as vault:
        # As ``serve`` does: the service's user is kept, so the proofs it records count.
        keep_service_uid(vault.engine.journal, os.getuid(), utcnow(), "test")
        runner = Serving(vault, sock=bind("127.0.0.1", 0), read_timeout=read_timeout, **options)
        if gate:
            from hitl_vault.serve.gate import gate_handler

            runner.app_options["gate"] = gate_handler(runner.service)
        failed: list[BaseException] = []

        def run() -> None:
            try:
                runner.run()
            except BaseException as e:  # shown by the test that waits for it
                failed.append(e)
                runner.ready.set()

        thread = threading.Thread(target=run, name="test-server")
        thread.start()
        try:
            assert runner.ready.wait(20), "the service did not start"
            assert not failed, failed
            yield Server(runner, root)
        finally:
            runner.stop()
            thread.join(20)
            assert not thread.is_alive(), "the service did not stop"
