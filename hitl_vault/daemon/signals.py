"""Signals for the daemon: the first asks it to stop gracefully, the second exits at once."""

from __future__ import annotations

import faulthandler
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_EXIT_NOW = b"second signal: exiting now; actions in flight are left as executing\n"


def stop_on_signals(stop: Callable[[], None]) -> Callable[[], None]:
    """SIGTERM / Ctrl-C call ``stop`` (finish what is in flight); a second one exits at once.

    Returns a function that puts the previous handlers back. Outside the main
    thread signals cannot be handled, and nothing is installed.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    signals = 0

    def handle(signum: int, frame: FrameType | None) -> None:
        # Only what is safe in a signal handler: the loop says what it does.
        nonlocal signals
        signals += 1
        if signals > 1:
            os.write(2, _EXIT_NOW)
            os._exit(130)
        stop()

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

    return restore
