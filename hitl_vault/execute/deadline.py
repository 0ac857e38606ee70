"""The watchdog of an action's program on a shared journal: a process of its own that ends
the program's process group at its deadline, even if the daemon that started it is frozen.

Run by path (``python -I deadline.py PGID DEADLINE GRACE REQUEST_ID``), importing only the
standard library, so it starts fast. ``DEADLINE`` is by ``time.monotonic()``, which every
process on the host shares (Linux: CLOCK_MONOTONIC). At it, SIGTERM goes to the group, and
SIGKILL after ``GRACE`` seconds to whatever is left, but only while a process of the group
still runs with ``HITL_REQUEST_ID=REQUEST_ID`` (so a reused group id is never hit). The
daemon ends the watchdog as soon as the program has ended; a watchdog whose daemon died
still keeps the deadline, which a takeover's re-run counts on.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

_POLL = 0.05  # seconds between looks for the group during the grace


def _group_runs(pgid: int, tag: bytes) -> bool:
    """Whether a process of group ``pgid`` still runs with the environ entry ``tag``."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if os.getpgid(int(name)) != pgid:
                continue
            with open(f"/proc/{name}/environ", "rb") as f:
                if (b"\0" + f.read()).find(b"\0" + tag) >= 0:
                    return True
    return False


def _until(moment: float) -> None:
    while (left := moment - time.monotonic()) > 0:
        time.sleep(left)


def watch(pgid: int, deadline: float, grace: float, request_id: str) -> None:
    """At ``deadline``, terminate group ``pgid`` if it still runs the action; kill it after
    ``grace``."""
    tag = b"HITL_REQUEST_ID=" + os.fsencode(request_id) + b"\0"
    _until(deadline)
    if not _group_runs(pgid, tag):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGTERM)
    end = deadline + grace
    while time.monotonic() < end and _group_runs(pgid, tag):
        time.sleep(_POLL)
    if _group_runs(pgid, tag):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGKILL)


if __name__ == "__main__":
    watch(int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), sys.argv[4])
