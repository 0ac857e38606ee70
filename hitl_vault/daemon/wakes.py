"""What wakes the daemon's loop, and how soon a step follows.

A note the daemon knows saved (someone may be deciding), an action that ended, a stop or
lost events want a step at once (:meth:`Wakes.now`). Word that another process or thread
wrote the journal (heard through the store's files) and any other file the daemon looks at
(a note new to it, the rules, the Inbox) want one soon (:meth:`Wakes.soon`): another
process's submit commits and writes its new note, so the loop gathers such words for
:data:`GATHER` and takes one step for the burst, and a wake that wants a step at once ends
the gathering: an approval heard from the feed is one (someone waits to see it run). What
the feed tells of anything else (a new request, a rejection, an outcome) wants a step
within :data:`PATIENCE` (:meth:`Wakes.later`): its note already shows it or waits to be
quiet, and its messages are put off that long anyway; a stream of submits to the service
then costs the daemon a step every :data:`PATIENCE`, not one every two requests.

A step of the loop may put off, for at most :data:`PATIENCE`, what can wait that long
(:meth:`Wakes.put_off`): the durable listeners' commit (the notifier's cursor), an fsync
that holds the journal, which would otherwise follow nearly every step of a burst of
submits and keep the decisions of the steps between waiting.
"""

from __future__ import annotations

import threading
import time

# How long word of the journal's writes is gathered before the step that acts on them.
GATHER = 0.01
# The longest a step of the loop puts off what can wait (the loop wakes for it by then).
PATIENCE = 0.05


class Wakes:
    """The daemon loop's wake-ups: any thread asks, the loop waits."""

    def __init__(self, gather: float = GATHER, patience: float = PATIENCE) -> None:
        self.gather = gather
        self.patience = patience
        self._any = threading.Event()  # a step is wanted
        self._soon = threading.Event()  # ... soon
        self._now = threading.Event()  # ... at once
        self._looping = False  # the step under way is the loop's: it may put off
        self._put_off_at: float | None = None  # when a step first put off what can wait
        self._finishing = False  # stopping: no step puts anything off any more

    def now(self) -> None:
        """A step at once (any thread)."""
        self._now.set()
        self._soon.set()
        self._any.set()

    @property
    def wanted(self) -> str | None:
        """What is asked of the loop now: ``"now"``, ``"soon"``, ``"later"`` or None."""
        if self._now.is_set():
            return "now"
        return "soon" if self._soon.is_set() else "later" if self._any.is_set() else None

    def soon(self) -> None:
        """A step soon, with what else comes meanwhile (any thread)."""
        self._soon.set()
        self._any.set()

    def later(self) -> None:
        """A step within :attr:`patience`, with what else comes meanwhile (any thread)."""
        self._any.set()

    def begin(self) -> None:
        """A step of the loop starts (it may put off, unless stopping): what is asked from
        now on wants another. Once stopping, every step wants another at once: a stop that
        came between the loop's last look at it and this step is never waited past."""
        self._looping = not self._finishing
        self._now.clear()
        self._soon.clear()
        self._any.clear()
        if self._finishing:
            self.now()

    def finish(self) -> None:
        """Stopping (any thread): a step at once, and none from now on puts anything off."""
        self._finishing = True
        self._looping = False
        self.now()

    def clear(self) -> None:
        """A step starts that puts nothing off (``run --once``, the last one)."""
        self._looping = False
        self._now.clear()
        self._soon.clear()
        self._any.clear()

    def put_off(self) -> bool:
        """In a step of the loop: whether to leave what can wait to a later step, unless it
        has waited :attr:`patience` already (the loop wakes by then); never in another."""
        if not self._looping:
            self._put_off_at = None
            return False
        now = time.monotonic()
        if self._put_off_at is None:
            self._put_off_at = now
        if now < self._put_off_at + self.patience:
            return True
        self._put_off_at = None
        return False

    def wait(self, timeout: float | None) -> bool:
        """Until a step is wanted (True) or ``timeout`` seconds pass (False; None: no limit),
        or what a step put off is due; a step wanted only soon is wanted once the gathering
        is over (or ``timeout``, if sooner), or at once if a wake that wants it at once comes
        meanwhile; one wanted only later, after :attr:`patience` or as soon as one wanted
        sooner would be."""
        if self._put_off_at is not None:
            due = max(0.0, self._put_off_at + self.patience - time.monotonic())
            timeout = due if timeout is None else min(timeout, due)
        if not self._any.wait(timeout):
            return False
        # never past the time a part asked for
        if not self._soon.wait(self.patience if timeout is None else min(self.patience, timeout)):
            return True
        if not self._now.is_set():
            self._now.wait(self.gather if timeout is None else min(self.gather, timeout))
        return True
