"""``hitl-vault serve`` on a journal on a PostgreSQL server: the whole round (submit, a
proven decision, the action run by the daemon, the note moved) recorded on the server,
heard by another process's store through the server alone."""

from __future__ import annotations

import threading
from contextlib import closing
from pathlib import Path

import pytest

from hitl_vault.cli.template import init_vault
from hitl_vault.journal.pg import PgJournal
from hitl_vault.journal.pg_url import JOURNAL_ENV
from hitl_vault.model import Status

from .helpers import eventually
from .pgserver import fresh_journal
from .servers import serving


@pytest.mark.slow
@pytest.mark.process
def test_serve_on_a_server_journal_submits_decides_and_runs(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent submits over the API, an approver decides, the daemon runs the action and
    moves the note; a store on the same server hears each step and verify is clean."""
    url = fresh_journal(pg_url)
    monkeypatch.setenv(JOURNAL_ENV, url)
    root = tmp_path / "vault"
    init_vault(root)
    rules = root / "hitl-vault.yaml"
    rules.write_text(rules.read_text().replace("quiet: 2s", "quiet: 200ms"))
    with closing(PgJournal(url)) as other, serving(root) as server:
        heard = threading.Event()
        with other.watch(heard.set):
            agent, alice = server.token("bot"), server.token("alice", "approver")
            made = server.call(
                "POST", "/api/v1/requests", {"action": "payment", "params": {"amount": 5000}},
                token=agent,
            )  # fmt: skip
            assert made.status == 201 and made.body["status"] == "pending", made.body
            rid = made.body["id"]
            assert heard.wait(10) and other.status_of(rid) is Status.PENDING
            decided = server.call(
                "POST", f"/api/v1/requests/{rid}/decision", {"decision": "approve"}, token=alice
            )
            assert decided.status == 200, decided.body
            eventually(lambda: other.status_of(rid) is Status.EXECUTED, timeout=20)
            eventually(lambda: _in_done(root, other.paths().get(rid)), timeout=20)
        assert other.verify_chain() == []
        assert not (root / ".hitl" / "journal.db").exists()


def _in_done(root: Path, path: str | None) -> bool:
    """The note is in Done/, where the journal says it is."""
    return path is not None and path.startswith("Done/") and (root / path).is_file()
