"""The PostgreSQL journal's attention list: taking off a file that is not listed is a read
alone, and wakes no host; taking off one that is listed still removes it and wakes them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime

import psycopg
import pytest

from hitl_vault.journal.pg import PgJournal

from .pgserver import fresh_journal

AT = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


@pytest.fixture
def store(pg_url: str) -> Iterator[PgJournal]:
    made = PgJournal(fresh_journal(pg_url))
    try:
        yield made
    finally:
        made.close()


def _wakes_before_marker(listener: psycopg.Connection[object], channel: str) -> int:
    """How many NOTIFYs on ``channel`` came before the marker sent now (commit order)."""
    listener.execute("SELECT pg_notify(%s, 'marker')", (channel,))
    for wakes, note in enumerate(listener.notifies(timeout=30)):
        if note.payload == "marker":
            return wakes
    raise AssertionError("the marker NOTIFY never came")


def test_unflag_of_an_unlisted_file_sends_no_notify_and_of_a_listed_one_does(
    store: PgJournal,
) -> None:
    """unflag of a path not listed wakes nobody; of a listed one, removes it and wakes."""
    channel = store._db.channel
    with closing(psycopg.connect(store._db.url, autocommit=True)) as listener:
        listener.execute(f'LISTEN "{channel}"')
        store.unflag("Requests/none.md")
        assert _wakes_before_marker(listener, channel) == 0
        assert store.flag("Requests/a.md", "broken", AT)
        store.unflag("Requests/a.md")
        assert store.attention() == []
        assert _wakes_before_marker(listener, channel) == 2  # the flag and the unflag
