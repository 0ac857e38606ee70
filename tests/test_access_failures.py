"""Failed sign-ins in the service log (``hitl_vault.access.failures``): every client that
fails is recorded, at most once a minute each, with the count; counting writes nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hitl_vault.access.failures import OTHERS, FailureLog
from hitl_vault.testing import MemoryJournal

T0 = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
SECOND = timedelta(seconds=1)


def test_each_client_gets_at_most_one_entry_a_minute_with_its_count() -> None:
    """The first failure is due at once; the rest of the minute's go in the next entry."""
    store = MemoryJournal()
    failures = FailureLog(store, by="svc")
    assert failures.failed("203.0.113.9", T0) is True
    (first,) = failures.flush(T0)
    assert (first.event, first.subject, first.by, first.details) == (
        "auth failed",
        "203.0.113.9",
        "svc",
        ("1 failed", "since 2026-11-22T10:15:00Z"),
    )
    due = [failures.failed("203.0.113.9", T0 + n * SECOND / 2) for n in range(2, 101)]
    assert not any(due) and failures.flush(T0 + 59 * SECOND) == []
    assert len(store.service_log()) == 1 and failures.pending() == {"203.0.113.9": 99}
    assert failures.failed("203.0.113.9", T0 + 59 * SECOND) is False
    assert failures.failed("203.0.113.9", T0 + 60 * SECOND) is True  # the minute is over
    (second,) = failures.flush(T0 + 60 * SECOND)
    assert second.details == ("101 failed", "since 2026-11-22T10:15:01Z")
    assert failures.pending() == {} and store.verify_chain() == []


def test_every_failing_client_is_recorded_and_the_rest_when_the_service_stops() -> None:
    """Two clients, two entries; flush(everything=True) writes what is not due yet."""
    store = MemoryJournal()
    failures = FailureLog(store)
    failures.failed("10.0.0.1", T0)
    failures.failed("10.0.0.2\nforged line", T0)  # an address is kept on one line
    assert [e.subject for e in failures.flush(T0)] == ["10.0.0.1", "10.0.0.2 forged line"]
    failures.failed("10.0.0.1", T0 + SECOND)
    assert failures.flush(T0 + SECOND) == []
    (last,) = failures.flush(T0 + SECOND, everything=True)
    assert (last.subject, last.details[0]) == ("10.0.0.1", "1 failed")


def test_a_flood_of_addresses_is_counted_in_bounded_memory() -> None:
    """Beyond the clients it keeps, failures are counted under one subject, none lost."""
    store = MemoryJournal()
    failures = FailureLog(store, kept=3)
    for n in range(10):
        failures.failed(f"10.0.0.{n}", T0)
    kept = failures.pending()
    assert len(kept) == 4 and kept[OTHERS] == 7 and sum(kept.values()) == 10
    assert len(failures.flush(T0)) == 4
    failures.failed("10.0.1.1", T0 + 61 * SECOND)  # quiet clients are forgotten for new ones
    assert failures.pending() == {"10.0.1.1": 1}
