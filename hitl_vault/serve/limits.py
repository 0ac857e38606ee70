"""Failed sign-ins by client address: after too many in a short time, that address is
refused (429) for a while, and a summary (never a token) goes in the service log."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

# Failed sign-ins from one address within WINDOW seconds that get it refused for BLOCK.
LIMIT = 10
WINDOW = 60.0
BLOCK = 60.0
# Addresses remembered at most (the oldest forgotten first): no memory grows without end.
KEPT = 10_000


@dataclass
class _Tries:
    times: list[float] = field(default_factory=list)
    blocked_until: float = 0.0
    told: int = 0  # failures already summarised in the log


class FailedSignIns:
    """Counts failed sign-ins per address; ``summarise(address, count)`` is called once
    each time an address gets refused (the service log's "auth failed" entry)."""

    def __init__(
        self,
        clock: Callable[[], float],
        summarise: Callable[[str, int], None],
        *,
        limit: int = LIMIT,
        window: float = WINDOW,
        block: float = BLOCK,
    ) -> None:
        self._clock = clock
        self._summarise = summarise
        self.limit, self.window, self.block = limit, window, block
        self._lock = threading.Lock()
        self._by_address: dict[str, _Tries] = {}

    def refused_for(self, address: str) -> float:
        """Seconds this address is still refused (0: not refused)."""
        with self._lock:
            tries = self._by_address.get(address)
            left = tries.blocked_until - self._clock() if tries is not None else 0.0
        return max(0.0, left)

    def failed(self, address: str) -> None:
        """One more failed sign-in from ``address``."""
        now = self._clock()
        with self._lock:
            tries = self._by_address.pop(address, None) or _Tries()
            self._by_address[address] = tries  # the newest last: forgotten last
            tries.times = [t for t in tries.times if now - t < self.window] + [now]
            summary = 0
            if len(tries.times) >= self.limit and tries.blocked_until <= now:
                tries.blocked_until = now + self.block
                summary, tries.told = len(tries.times), len(tries.times)
            while len(self._by_address) > KEPT:
                del self._by_address[next(iter(self._by_address))]
        if summary:
            self._summarise(address, summary)

    def succeeded(self, address: str) -> None:
        """A good sign-in: the address's count starts again."""
        with self._lock:
            tries = self._by_address.get(address)
            if tries is not None and tries.blocked_until <= self._clock():
                del self._by_address[address]
