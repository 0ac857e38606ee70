"""Signals for the daemon: the first asks it to stop gracefully, the second exits at once.

A signal handler runs in the main thread, between two of its bytecodes, wherever that
thread is: possibly inside a lock that ``stop`` needs (a ``threading.Event``'s, which the
daemon's loop holds for a moment every time it waits or clears one). Calling ``stop``
there would wait for the lock the interrupted code holds, forever. So the handler only
writes a byte to a pipe, which is safe anywhere, and a thread of its own reads it and calls
``stop``, taking its locks as any other thread does.
"""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_EXIT_NOW = b"second signal: exiting now; actions in flight are left as executing\n"
_STOP, _DONE = b"s", b"d"  # through the pipe: a signal came; the handlers are put back


def stop_on_signals(stop: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM / Ctrl-C call ``stop`` (finish what is in flight); a second one exits at once.

    Returns a function that puts the previous handlers back. Outside the main
    thread signals cannot be handled, and nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    signals = 0
    read_end, write_end = os.pipe()

    def handle(signum: int, frame: FrameType | None) -> None:
        # Only what is safe wherever the main thread was: a count, and a write(2).
        nonlocal signals
        signals += 1
        if signals > 1:
            os.write(2, _EXIT_NOW)
            os._exit(130)
        os.write(write_end, _STOP)

    def relay() -> None:
        while os.read(read_end, 1) == _STOP:
            stop()

    relaying = threading.Thread(target=relay, name="hitl-vault-signals", daemon=True)
    relaying.start()
    previous: dict[int, Any] = {}
    for sig in (signal.SIGTERM, signal.SIGINT):
        previous[sig] = signal.signal(sig, handle)
    dump = getattr(signal, "SIGUSR1", None)  # `kill -USR1 <pid>`: every thread's stack, to stderr
    if dump is not None:
        faulthandler.register(dump, all_threads=True)

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)
        if dump is not None:
            faulthandler.unregister(dump)
        os.write(write_end, _DONE)  # after a signal's byte, if one came: its stop runs first
        relaying.join()
        os.close(read_end)
        os.close(write_end)

    return restore
