"""The service's threads for journal work (hitl_vault/serve/workers.py): each call runs once
on one of them, and a call wakes one idle thread, the last to go idle."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter
from concurrent.futures import CancelledError

import pytest

from hitl_vault.serve.workers import Workers


def test_calls_one_at_a_time_run_on_the_one_warm_thread() -> None:
    """Requests one after another (an agent's submits on one connection) are each handed to
    the thread that went idle last, not passed round every thread of the service (a thread
    preempted between handing back its answer and going idle may miss one)."""
    workers = Workers(4, "w")
    try:
        names = [
            workers.submit(lambda: threading.current_thread().name).result(5) for _ in range(50)
        ]
        (name, runs), *_ = Counter(names).most_common(1)
        assert runs >= 45 and name.startswith("w_"), Counter(names)
    finally:
        workers.shutdown()


def test_calls_that_find_every_thread_busy_wait_and_all_run() -> None:
    workers = Workers(2, "w")
    gate = threading.Event()
    try:
        held = [workers.submit(gate.wait, 10) for _ in range(2)]  # both threads busy
        queued = [workers.submit(lambda i=i: i * i) for i in range(20)]
        assert not any(f.done() for f in queued)
        gate.set()
        assert [f.result(5) for f in queued] == [i * i for i in range(20)]
        assert all(f.result(5) for f in held)
    finally:
        workers.shutdown()


def test_an_error_reaches_the_caller_and_the_thread_goes_on() -> None:
    workers = Workers(1, "w")
    try:
        with pytest.raises(ZeroDivisionError):
            workers.submit(lambda: 1 / 0).result(5)
        assert workers.submit(lambda: "still here").result(5) == "still here"
    finally:
        workers.shutdown()


def test_a_call_its_caller_gave_up_on_never_runs() -> None:
    workers = Workers(1, "w")
    gate, ran = threading.Event(), list[str]()
    try:
        busy = workers.submit(gate.wait, 10)
        dropped = workers.submit(ran.append, "late")
        assert dropped.cancel()
        gate.set()
        busy.result(5)
        workers.submit(lambda: None).result(5)  # the thread has gone past the dropped call
        with pytest.raises(CancelledError):
            dropped.result(0)
        assert ran == []
    finally:
        workers.shutdown()


def test_shutdown_finishes_what_was_handed_over_then_ends_every_thread() -> None:
    workers = Workers(3, "stopping")
    gate = threading.Event()
    busy = workers.submit(gate.wait, 10)
    queued = workers.submit(lambda: "queued")
    threading.Timer(0.05, gate.set).start()
    workers.shutdown()
    assert busy.result(0) and queued.result(0) == "queued"
    assert not [t for t in threading.enumerate() if t.name.startswith("stopping_")]
    with pytest.raises(RuntimeError, match="stopping"):
        workers.submit(lambda: None)


def test_the_event_loop_awaits_its_calls() -> None:
    """As :meth:`Service.call` uses it: ``run_in_executor``, many at once."""
    workers = Workers(3, "w")

    async def main() -> list[int]:
        loop = asyncio.get_running_loop()
        return await asyncio.gather(*(loop.run_in_executor(workers, abs, -i) for i in range(30)))

    try:
        assert asyncio.run(main()) == list(range(30))
    finally:
        workers.shutdown()
