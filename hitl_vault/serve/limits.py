"""Failed sign-ins by client address: after too many in a short time, that address's
failures are answered 429 for a while (a valid token from there still works). The service
log's summaries of failures are :class:`hitl_vault.access.failures.FailureLog`'s."""

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


class FailedSignIns:
    """Counts failed sign-ins per address, to refuse one that fails too often."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        limit: int = LIMIT,
        window: float = WINDOW,
        block: float = BLOCK,
    ) -> None:
        self._clock = clock
        self.limit, self.window, self.block = limit, window, block
        self._lock = threading.Lock()
        self._by_address: dict[str, _Tries] = {}

    def refused_for(self, address: str) -> float:
        """Seconds this address's failures are still answered 429 (0: not refused)."""
        with self._lock:
            tries = self._by_address.get(address)
            left = tries.blocked_until - self._clock() if tries is not None else 0.0
        return max(0.0, left)

    def failed(self, address: str) -> bool:
        """One more failed sign-in from ``address``; True when it got the address refused."""
        now = self._clock()
        with self._lock:
            tries = self._by_address.pop(address, None) or _Tries()
            self._by_address[address] = tries  # the newest last: forgotten last
            tries.times = [t for t in tries.times if now - t < self.window] + [now]
            blocked = len(tries.times) >= self.limit and tries.blocked_until <= now
            if blocked:
                tries.blocked_until = now + self.block
            while len(self._by_address) > KEPT:
                del self._by_address[next(iter(self._by_address))]
        return blocked
