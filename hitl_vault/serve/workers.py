"""The service's threads for journal work: a call wakes one idle thread, the last to go idle.

A request's journal work runs on one of these (:meth:`Service.call`), so every API request
crosses threads twice. ``concurrent.futures.ThreadPoolExecutor`` hands calls through one
queue that all of its idle threads wait on, and each call woke a second idle thread that
found nothing and slept again: with eight threads, a request that read one row cost 13
context switches, and about 0.3 ms of CPU on each crossing (docs/speed.md). Here each idle
thread waits on a lock of its own and a call wakes exactly one: the last to go idle, so
under light load one warm thread does the work. Calls that find every thread busy wait in
order for the first to finish.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

T = TypeVar("T")
_Call = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class _Idle:
    """One thread's bell: released with a call to run, or with None to end."""

    def __init__(self) -> None:
        self.bell = threading.Lock()
        self.bell.acquire()
        self.call: _Call | None = None


class Workers(Executor):
    """``count`` threads named ``{name}_0`` … , all started at once (the threads a service
    has are known from its start); an :class:`~concurrent.futures.Executor`, so
    ``loop.run_in_executor`` hands them calls."""

    def __init__(self, count: int, name: str) -> None:
        self._lock = threading.Lock()
        self._idle: list[_Idle] = []  # a stack: the last to go idle is woken first
        self._waiting: deque[_Call] = deque()
        self._ending = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}_{i}", daemon=True)
            for i in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        call: _Call = (future, fn, args, kwargs)
        with self._lock:
            if self._ending:
                raise RuntimeError("the service's threads are stopping")
            if not self._idle:
                self._waiting.append(call)
                return future
            idle = self._idle.pop()
        idle.call = call
        idle.bell.release()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new calls; the threads end once the calls given to them are done (with
        ``wait``, this returns then)."""
        with self._lock:
            self._ending = True
            idle, self._idle = self._idle, []
            if cancel_futures:
                while self._waiting:
                    self._waiting.popleft()[0].cancel()
        for one in idle:
            one.bell.release()  # with no call: it ends
        if wait:
            for thread in self._threads:
                thread.join()

    def _serve(self) -> None:
        me = _Idle()
        while True:
            with self._lock:
                call = self._waiting.popleft() if self._waiting else None
                if call is None:
                    if self._ending:
                        return
                    self._idle.append(me)
            if call is None:
                me.bell.acquire()
                call, me.call = me.call, None
                if call is None:
                    return
            _run(call)
            del call  # its result belongs to its caller now, not to this idle thread


def _run(call: _Call) -> None:
    future, fn, args, kwargs = call
    if not future.set_running_or_notify_cancel():  # its caller gave up waiting
        return
    try:
        result = fn(*args, **kwargs)
    except BaseException as e:  # as ThreadPoolExecutor: the caller's await raises it
        future.set_exception(e)
    else:
        future.set_result(result)
