"""Many processes appending to one PostgreSQL journal at once: one chain, one feed.

Eight processes each record requests as fast as they can while a reader follows the feed.
Every append locks the one head row, so the chain never forks, positions run without a
gap, and they follow commit order: the reader, which asks only for what is after the last
position it saw, sees every entry once, in order. The suite runs 8 × 25;
``HITL_PG_APPENDS=500`` (the stress step of ``.ci/run``) runs the issue's 8 × 500.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Iterator

import pytest

from hitl_vault.journal.pg import PgJournal

from .pgserver import fresh_journal

PROCESSES = 8
EACH = int(os.environ.get("HITL_PG_APPENDS", "25"))

# One appender: EACH requests, each created with its first entry, as fast as it can.
_APPENDER = """
import sys
from datetime import UTC, datetime
from hitl_vault.journal.pg import PgJournal
from hitl_vault.model import Request, Risk, Status, Transition

url, who, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
at = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
store = PgJournal(url)
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.readline()
for n in range(count):
    rid = f"20261206T120000Z-append-{who}{n:05d}"
    first = Transition(at, None, Status.PENDING, "bot", "", ())
    store.create(
        Request(id=rid, status=Status.PENDING, action="append", summary="s", risk=Risk.LOW,
                rule="r", requested_by="bot", created=at, expires=None, params={"n": n},
                history=(first,)),
        None,
    )
store.close()
"""


@pytest.fixture
def journal_url(pg_url: str) -> str:
    return fresh_journal(pg_url)


@pytest.fixture
def store(journal_url: str) -> Iterator[PgJournal]:
    made = PgJournal(journal_url)
    yield made
    made.close()


@pytest.mark.slow
@pytest.mark.process
def test_eight_processes_append_one_chain_that_a_feed_reader_sees_once_in_order(
    journal_url: str, store: PgJournal
) -> None:
    """8 processes appending at once: verify is clean, positions run 1..8×N, and a reader
    following the feed meanwhile sees each position once, in order."""
    total = PROCESSES * EACH
    seen: list[int] = []
    done = threading.Event()
    woke = threading.Event()

    def follow() -> None:
        while len(seen) < total and not done.is_set():
            woke.wait(0.5)
            woke.clear()
            got = store.feed(seen[-1] if seen else 0)
            seen.extend(seq for seq, _, _ in got)

    appenders = [
        subprocess.Popen(
            [sys.executable, "-c", _APPENDER, journal_url, f"p{k}", str(EACH)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for k in range(PROCESSES)
    ]
    reader = threading.Thread(target=follow)
    try:
        with store.watch(woke.set):
            for p in appenders:  # all connected and ready, then all at once
                assert p.stdout is not None and p.stdout.readline() == "ready\n"
            reader.start()
            for p in appenders:
                assert p.stdin is not None
                p.stdin.write("go\n")
                p.stdin.flush()
            for p in appenders:
                assert p.wait(120) == 0
            reader.join(60)
    finally:
        done.set()
        for p in appenders:
            if p.poll() is None:
                p.kill()
                p.wait()
            for stream in (p.stdin, p.stdout):
                if stream is not None:
                    stream.close()
        if reader.is_alive():
            reader.join()
    assert seen == list(range(1, total + 1))
    assert store.last_seq() == total and len(store.ids()) == total
    assert store.verify_chain() == []
