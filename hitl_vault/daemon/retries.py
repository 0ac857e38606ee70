"""What failed in the daemon's step, and when to try it again.

A path whose handling raised is looked at again after a backoff (0.5 s,
doubling, at most every 30 s); a part of the step that failed (recording
outcomes, expiring, writing notes) is tried again within a second. Under
``run --once``, what keeps failing is given up after a few tries, so the run
ends, naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

from ..errors import JournalDamagedError, JournalUnavailableError

log = logging.getLogger(__name__)

# A path whose handling failed is looked at again after this, doubling up to RETRY_MAX.
RETRY_FIRST = timedelta(milliseconds=500)
RETRY_MAX = timedelta(seconds=30)
# ``run --once`` gives up on a path or a part (until the next run) after this many failures.
ONCE_TRIES = 5


def backoff(failures: int) -> timedelta:
    """How long to wait after the ``failures``-th failure in a row: RETRY_FIRST, doubling,
    at most RETRY_MAX."""
    return min(RETRY_FIRST * int(2 ** min(failures - 1, 8)), RETRY_MAX)


class Retries:
    """Failed paths with their backoff, and failing parts of the step."""

    def __init__(self) -> None:
        self._failures: dict[Path, int] = {}  # paths whose handling failed, and how often
        self._at: dict[Path, datetime] = {}  # when each is looked at again
        self._parts: dict[str, int] = {}  # parts of the step failing in a row
        self._soon: datetime | None = None  # a part failed this step: the next try

    def new_step(self) -> None:
        self._soon = None

    def due(self, now: datetime) -> set[Path]:
        """The failed paths whose backoff has passed."""
        return {path for path, at in self._at.items() if now >= at}

    def path_failed(self, path: Path, now: datetime) -> None:
        n = self._failures.get(path, 0) + 1
        self._failures[path] = n
        self._at[path] = now + backoff(n)

    def path_ok(self, path: Path) -> None:
        self._failures.pop(path, None)
        self._at.pop(path, None)

    def part_failed(self, what: str, now: datetime) -> None:
        self._parts[what] = self._parts.get(what, 0) + 1
        self._soon = now + RETRY_FIRST

    def part_ok(self, what: str) -> None:
        self._parts.pop(what, None)

    @property
    def failed_now(self) -> bool:
        """Whether a part failed in this step (the loop then waits at least RETRY_FIRST)."""
        return self._soon is not None

    def failing(self, what: str) -> bool:
        """Whether the part ``what`` failed last time it ran."""
        return what in self._parts

    def next_wake(self, now: datetime) -> datetime | None:
        """When the soonest retry is due; None when nothing waits for one."""
        times = [*self._at.values(), *([self._soon] if self._soon is not None else [])]
        return min(times) if times else None

    def give_up(self) -> tuple[list[tuple[Path, int]], list[str]]:
        """``run --once``: the paths (with how often they failed) and the parts that failed
        too often. The paths are not retried again in this run; parts are only named."""
        paths = [(p, n) for p, n in self._failures.items() if n >= ONCE_TRIES and p in self._at]
        for path, _ in paths:
            del self._at[path]
        return paths, [what for what, n in self._parts.items() if n >= ONCE_TRIES]

    def waiting(self) -> bool:
        """Whether any retry is still to come."""
        return bool(self._at) or self._soon is not None

    def guarded(self, what: str, work: Callable[[datetime], bool], now: datetime) -> bool:
        """Run one part of a step; if it fails, say so and try it again soon (RETRY_FIRST)."""
        try:
            did = work(now)
        except JournalDamagedError:  # unreadable or gone: no retry can help, the daemon stops
            raise
        except (OSError, JournalUnavailableError) as e:  # a full disk, a journal held too long
            log.error("error while %s: %s; trying again shortly", what, e)
        except Exception:  # a bug: say where, loudly
            log.exception("unexpected error while %s; trying again shortly", what)
        else:
            self.part_ok(what)
            return did
        self.part_failed(what, now)
        return False

    def paths_failed(
        self, paths: list[Path], now: datetime, error: BaseException, rel: Callable[[Path], str]
    ) -> None:
        """Look at ``paths`` again after their backoff, saying why (loudly for a bug); a
        journal unreadable or gone stops the daemon instead (no retry can help)."""
        if isinstance(error, JournalDamagedError):
            raise error
        for path in paths:
            self.path_failed(path, now)
        shown = rel(paths[0]) + (f" and {len(paths) - 1} more" if len(paths) > 1 else "")
        if isinstance(error, OSError | JournalUnavailableError):
            log.error("%s: %s; trying again shortly", shown, error)
        else:  # a bug: say where, loudly
            log.error("%s: unexpected error; trying again shortly", shown, exc_info=error)
