"""Failed sign-ins by client address: after too many in a short time, that address's
failures are answered 429 for a while (a valid token from there still works), and the
service log gets a summary of each address's failures (an address and a count, never a
token) at most once a minute."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

# Failed sign-ins from one address within WINDOW seconds that get it refused for BLOCK.
LIMIT = 10
WINDOW = 60.0
BLOCK = 60.0
# The service log's summary of an address's failures comes at most once in this many seconds.
SUMMARY_EVERY = 60.0
# Addresses remembered at most (the oldest forgotten first): no memory grows without end.
KEPT = 10_000


@dataclass
class _Tries:
    times: list[float] = field(default_factory=list)
    blocked_until: float = 0.0
    untold: int = 0  # failures not yet in a summary
    told_at: float | None = None  # when the last summary was made


class FailedSignIns:
    """Counts failed sign-ins per address. ``summarise(address, count)`` makes the service
    log's "auth failed" entry: at the first failure from an address, then at most once
    every ``summary_every`` seconds with the failures since (:meth:`failed` and
    :meth:`flush` call it, outside the lock; it may write to the store)."""

    def __init__(
        self,
        clock: Callable[[], float],
        summarise: Callable[[str, int], None],
        *,
        limit: int = LIMIT,
        window: float = WINDOW,
        block: float = BLOCK,
        summary_every: float = SUMMARY_EVERY,
    ) -> None:
        self._clock = clock
        self._summarise = summarise
        self.limit, self.window, self.block = limit, window, block
        self.summary_every = summary_every
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
            tries.untold += 1
            blocked = len(tries.times) >= self.limit and tries.blocked_until <= now
            if blocked:
                tries.blocked_until = now + self.block
            told = self._due(tries, now)
            while len(self._by_address) > KEPT:
                del self._by_address[next(iter(self._by_address))]
        if told:
            self._summarise(address, told)
        return blocked

    def flush(self, everything: bool = False) -> None:
        """Summarise the failures not told yet of every address whose last summary is
        ``summary_every`` old (``everything``: of every address, as the service stops)."""
        now = self._clock()
        with self._lock:
            due = [
                (address, count)
                for address, tries in self._by_address.items()
                if (count := self._due(tries, now, everything))
            ]
            for address in [a for a, t in self._by_address.items() if self._done(t, now)]:
                del self._by_address[address]  # nothing left to count, refuse or tell
        for address, count in due:
            self._summarise(address, count)

    def _done(self, tries: _Tries, now: float) -> bool:
        return (
            not tries.untold
            and tries.blocked_until <= now
            and (not tries.times or now - tries.times[-1] >= self.window)
            and (tries.told_at is None or now - tries.told_at >= self.summary_every)
        )

    def _due(self, tries: _Tries, now: float, anyway: bool = False) -> int:
        """The failures to summarise now (0: none, or the last summary is too recent)."""
        recent = tries.told_at is not None and now - tries.told_at < self.summary_every
        if not tries.untold or (recent and not anyway):
            return 0
        count, tries.untold, tries.told_at = tries.untold, 0, now
        return count
