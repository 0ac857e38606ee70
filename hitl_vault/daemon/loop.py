"""The daemon: the loop around a Vault that reacts to saves, runs actions and times out requests.

One step is :meth:`Daemon.run_once` (time injected, as huey and rq do); ``run_forever`` is a
loop around it that sleeps until the next file event, action's end, or :meth:`Daemon.next_wake`:
the soonest time any part of the daemon asks for; it never polls on a fixed interval.

* A watcher thread only says "this path may have changed"; paths are coalesced, so two
  events for one save cause one read.
* A human's decision is journaled and its action started at once; the note is
  rewritten or moved only after it has been quiet for ``defaults.quiet``.
* An approval reaches the worker queue one way: the journal's feed, whoever recorded it (a
  save seen here, the CLI, a script); a look at a note never queues what it saw. Only a
  start and a rules change look at every approved request again.
* Actions run on worker threads (:mod:`hitl_vault.daemon.workers`); ``executing`` is journaled
  before each starts, and its outcome by the step after it ends.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol

from ..durable import TEMP_SUFFIX
from ..engine import Engine
from ..errors import CatchUpError, JournalDamagedError
from ..events import Event
from ..model import INBOX_FOLDER, REQUEST_FOLDERS, RULES_FILE, Request, Transition
from ..notes.render import history_line
from ..notify.config import NotifyConfig
from ..notify.people import LinkMaker
from ..policy.rules import Policy
from ..watcher import FolderWatcher
from .dashboard import DashboardWriter
from .feed import Followed
from .inbox import Inbox
from .notifier import Notifier
from .paths import Looker
from .quiet import QuietWriter
from .reload import RulesReload
from .retries import RETRY_FIRST, Retries
from .signals import stop_on_signals
from .timeouts import Timeouts
from .wakes import Wakes
from .workers import Actions

log = logging.getLogger(__name__)

RESCAN_EVERY = timedelta(minutes=5)
# Decisions seen in one step are journaled in groups of this many, one fsync each.
BATCH = 64
# How long the daemon waits for a journal another process holds before it retries later.
JOURNAL_WAIT = timedelta(seconds=5)
# The part of a step that journals how actions went (see _part_failures).
_OUTCOMES = "recording how actions went"
_TELLING = "telling listeners what happened"


def _precise_now() -> datetime:
    return datetime.now(UTC)


class Part(Protocol):
    """A part of the daemon with work that falls due by the clock."""

    def next_wake(self, now: datetime) -> datetime | None:
        """When it next has work by the clock (None: not by the clock; events wake the daemon)."""


def _say(event: Event) -> None:
    """The daemon's log line for each transition (its first listener)."""
    log.info("%s %s", event.request_id, history_line(event.transition)[2 + 21 :])


class Daemon:
    """Watches one vault and keeps it moving."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = _precise_now,
        workers: int = 4,
        rescan_every: timedelta = RESCAN_EVERY,
        links: LinkMaker | None = None,
        takeover: bool = False,  # leading after another host: see Actions.recover
    ) -> None:
        # The one place that takes the engine apart: each part gets what it uses. What a
        # reload replaces (the rules, ``notify:``) is read through callables, never copied.
        self.engine = engine
        self.clock = clock
        self.root = root = engine.root
        self.journal = journal = engine.journal
        self._events, notes = engine.events, engine.notes
        self._rel = notes.rel  # a path as Needs attention names it
        rules: Callable[[], Policy] = lambda: engine.policy  # noqa: E731 - the rules in force
        self._notify: Callable[[], NotifyConfig] = lambda: engine.notify
        self.quiet = QuietWriter(root, journal, notes, lambda: rules().defaults.quiet)
        show = self.quiet.want  # the request's note is to show the journal (once quiet)
        self._lock = threading.Lock()
        self.wakes = Wakes()  # a file or an action's end: a step now; the journal's word: soon
        self._dirty: set[Path] = set()
        self._rescan_wanted = True
        self.retries = Retries()
        self.gave_up: list[str] = []  # ``run --once``: paths it could not handle
        self.actions = Actions(
            journal,
            rules=rules,
            handlers=engine.handlers,
            root=root,
            clock=engine.now,
            start=engine.start_execution,
            finish=engine.finish_execution,
            later_in_note=notes.later_in_note,
            show=show,
            workers=workers,
            wake=self.wakes.now,
        )
        queue = self.actions.queue_if_runnable  # an approved request that may run now
        # ``links``: people's decision links (the service makes them; ``run`` alone has none)
        self.notifier = Notifier(
            journal, self._events, rules, engine.functions, self._notify, root.name, clock, links
        )
        reload = lambda: engine.reload_policy(check_urls=True)  # noqa: E731
        self.rules = RulesReload(journal, notes, reload, self.quiet, queue, engine.now)
        inbox = Inbox(root, journal, engine.submit)
        self.looker = Looker(
            root, journal, notes, self.quiet, inbox, self.rules.changed, rescan_every
        )
        self.timeouts = Timeouts(journal, engine.expire, engine.escalate, show, engine.unreported)
        self.followed = Followed(queue, self.quiet.heard, self.wakes.later, self.wakes.now)
        self.dashboard = DashboardWriter(root, journal)
        # Each says when it next has work by the clock; the loop sleeps until the soonest.
        self.parts: list[Part] = [self.retries, self.actions, self.looker, self.quiet]
        self.parts += [self.rules, self.timeouts, self.notifier, self.dashboard]
        self._stopping, self._takeover = False, takeover
        self._recovered = False
        # A store kept in a folder directly in the vault (``.hitl/``): the watcher sees its
        # files, their events the store's word (see notice and run_forever).
        files = journal.files()
        inside = files is not None and files.parent.resolve() == root.resolve()
        self._journal_files = root / files.name if files is not None and inside else None
        # Every transition, once committed, whichever process made it: said in the log
        # (the first listener), then acted on (an approval made elsewhere runs here).
        engine.listen(_say)
        engine.listen(self.followed.hear, every=True)  # a vote made elsewhere shows in the note too
        # A journal held by another process for longer fails the step, which is retried
        # within a second (RETRY_FIRST), instead of holding every other file up for 30 s.
        journal.wait_for_lock(JOURNAL_WAIT.total_seconds())

    # --- events in ------------------------------------------------------------

    def notice(self, path: Path) -> None:
        """Called from the watcher thread: ``path`` may have changed."""
        if path.parent == self._journal_files:  # the store's files: word of others' writes
            return self._journal_changed() if self.journal.written_elsewhere(path) else None
        if not self.looker.wants(path):  # nothing a look would act on (our own writes too)
            return
        with self._lock:
            self._dirty.add(path)
        self.notifier.idle.clear()  # a decision may be coming: no new send until it is done
        (self.wakes.now if self.quiet.knows(path) else self.wakes.soon)()  # see wakes.py

    def _journal_changed(self) -> None:
        """Called from the store's thread: another process may have written the journal (the
        step tells the listeners, and acts on what they heard)."""
        self.notifier.idle.clear()
        self.wakes.soon()

    def overflow(self) -> None:
        """Events were lost; everything gets looked at again."""
        log.warning("file events were lost (watcher queue overflow); rescanning the vault")
        with self._lock:
            self._rescan_wanted = True
        self.wakes.now()

    # --- one step ---------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> bool:
        """Do everything that is due now; True if anything happened."""
        now = now or self.clock()
        did = False
        self.retries.new_step()
        if not self._recovered:
            did |= self._guarded("recovering after a restart", self._recover, now)
        did |= self._record_outcomes()
        self.followed.act(now)
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            rescan, self._rescan_wanted = self._rescan_wanted, False
        if self.looker.rescan_due(now, wanted=rescan):
            self._guarded("clearing what interrupted writes left", self.looker.clear_leftovers, now)
            dirty |= self.looker.scan()
            self._guarded("looking for missing notes", self.looker.check_missing_notes, now)
            did = True
        dirty |= self.looker.due(now) | self.retries.due(now)
        did |= self._guarded("reloading the rules", self.rules.reload_if_due, now)
        notes = sorted(p for p in dirty if self.looker.is_note(p))
        for path in sorted(dirty.difference(notes)):  # each commits on its own
            did |= self._look_safely([path], now, batch=False)
        # Decisions in groups: one durable commit for each group, then its actions start.
        for start in range(0, len(notes), BATCH):
            did |= self._look_safely(notes[start : start + BATCH], now)
            did |= self._record_outcomes()  # a long step leaves none waiting
        did |= self._guarded("expiring requests", self.timeouts.expire, now)
        did |= self._guarded("escalating requests", self.timeouts.escalate, now)
        did |= self._guarded("closing unreported outcomes", self.timeouts.close_unreported, now)
        self.followed.act(now)  # what the parts above heard of (another process's approval)
        did |= self._guarded("starting actions", self._claim_and_launch, now)
        did |= self._guarded("writing notes", self._write_due, now)
        did |= self._publish(now)  # what _recover and the parts above recorded
        # After the decisions and actions, never before them: the durable listeners (the
        # notifier) hear what the journal recorded since their cursors, whoever recorded it.
        if not self.wakes.put_off():  # a burst of steps commits it once (see wakes.py)
            self._guarded("telling durable listeners", lambda _: self._events.catch_up() > 0, now)
        self._guarded("recording reminders", self.notifier.remind, now)
        self.dashboard.step(now, changed=did)
        return did

    def _look_safely(self, paths: list[Path], now: datetime, *, batch: bool = True) -> bool:
        """Look at ``paths`` in one durable commit; say what happened only once it is committed.

        A path whose handling raises is retried on its own (an error in one file
        never holds back another); when the commit itself fails (disk full, the
        journal locked too long), none of it happened: every path is retried soon.
        """
        failed: dict[Path, Exception] = {}
        rest, did = self.looker.settle(paths, now) if batch else (paths, False)
        grouped = batch and bool(rest)  # (no batch, which holds the journal, for nothing)
        try:
            with self.journal.batch() if grouped else contextlib.nullcontext():
                for path in rest:
                    try:
                        did |= self.looker.look(path, now)
                    except Exception as e:  # kept apart and retried, below
                        failed[path] = e
                # Claims share the group's commit: its approvals are followed from the feed first
                # (a rollback undoes both). Alone, a path's commit is its own; claims wait.
                if grouped:
                    for event in self._events.recorded():
                        self.followed.hear(event)
                    self.followed.act(now)
                claimed = self._claim() if grouped else []
        except Exception as e:  # the commit failed: nothing in it happened
            self.actions.unclaim()
            self.quiet.forget(rest)  # read them afresh when retried
            self._retry_later(rest, now, e)
            return False
        for path in paths:
            if path not in failed:
                self.retries.path_ok(path)
        self.quiet.forget(failed)
        for path, error in failed.items():
            self._retry_later([path], now, error)
        did |= self.actions.launch(claimed)
        self._publish(now)  # once the actions started: telling never delays them
        return did

    def _guarded(self, what: str, work: Callable[[datetime], bool], now: datetime) -> bool:
        """One part of a step; if it fails, the rest of the step goes on and it is tried again."""
        return self.retries.guarded(what, work, now)

    def _retry_later(self, paths: list[Path], now: datetime, error: BaseException) -> None:
        """Look at ``paths`` again after a backoff (0.5 s, doubling, at most every 30 s)."""
        self.retries.paths_failed(paths, now, error, self._rel)

    def _publish(self, now: datetime) -> bool:
        """Tell the listeners what the journal recorded since the last time; True if anything."""
        return self._guarded(_TELLING, lambda _: self.engine.publish() > 0, now)

    # --- running actions -------------------------------------------------------------

    def _claim(self) -> list[tuple[Request, Transition]]:
        return [] if self._stopping else self.actions.claim()

    def _claim_and_launch(self, now: datetime) -> bool:
        if not self.actions.waiting:  # no write lock taken for nothing (others may write)
            return False
        try:
            with self.journal.batch():  # one durable commit for every claim of the step
                claimed = self._claim()
        except Exception:  # nothing was claimed: the queue stays as it was
            self.actions.unclaim()
            raise
        launched = self.actions.launch(claimed)
        self._publish(now)
        return launched

    def _write_due(self, now: datetime) -> bool:
        return self.quiet.write_due(now, busy=bool(self._dirty))

    def _record_outcomes(self) -> bool:
        """Journal how the actions that ended went; failing, they are kept to try again."""
        return self._guarded(_OUTCOMES, self._journal_outcomes, self.clock())

    def _journal_outcomes(self, now: datetime) -> bool:
        ended = self.actions.record_outcomes()
        self._publish(now)
        return bool(ended)

    def _recover(self, now: datetime) -> bool:
        """After a restart: finish what a dead daemon left behind, never running anything twice
        (see :meth:`Actions.recover`). Safe to repeat after a failure part way."""
        self.journal.unflag(RULES_FILE)  # the rules loaded: an earlier run's error is gone
        self.actions.recover(now, stopping=self._stopping, takeover=self._takeover)
        self._recovered = True
        return True

    def next_wake(self, now: datetime | None = None) -> datetime | None:
        """When a step next has work by the clock: the soonest time any part asks for (None:
        only a file event, an action's end or another process's write wakes the daemon)."""
        now = now or self.clock()
        wakes = [part.next_wake(now) for part in self.parts]
        return min((t for t in wakes if t is not None), default=None)

    def next_delay(self) -> float | None:
        """Seconds until :meth:`next_wake` (None: no time); never under RETRY_FIRST after a
        step in which a part failed, so a part that keeps failing never spins the loop."""
        deadline = self.next_wake()
        if deadline is None:
            return None
        delay = max(0.0, (deadline - self.clock()).total_seconds())
        return max(delay, RETRY_FIRST.total_seconds()) if self.retries.failed_now else delay

    # --- the loop -----------------------------------------------------------------

    def catch_up(self) -> None:
        """``run --once``: rescan, apply, expire, run what is approved, write the notes, exit."""
        while True:
            self.run_once()
            self.actions.wait()
            if self.actions.finished and not self.retries.failing(_OUTCOMES):
                continue  # record them now (failing, they wait for the retry below)
            retrying = self._retries_left()
            if self._stopping:  # what is queued stays approved for the next run
                break
            writing = self.quiet.waiting.difference(self.quiet.refused)
            rechecking = bool(self.looker.recheck)
            if not (self.actions.busy or writing or self._dirty or rechecking or retrying):
                break
            delay = self.next_delay()
            if (writing or rechecking or retrying) and delay is not None and delay > 0:
                self.wakes.wait(min(delay, self.quiet.period().total_seconds()))
                self.wakes.clear()
        self.gave_up += self.quiet.refused.values()
        # What is due goes out now (shared targets, or a person's own channels); what
        # fails, next run.
        if self._notify().targets or self.notifier.next_due() is not None:
            self._guarded(
                "sending notifications", lambda _: self.notifier.send_due() > 0, now=self.clock()
            )
        self.dashboard.write(self.clock())

    def _retries_left(self) -> bool:
        """``run --once``: paths still worth another look; those tried too often are given up."""
        paths, stuck = self.retries.give_up()
        for path, failures in paths:
            where = self._rel(path)
            self.gave_up.append(where)
            log.error("%s: still failing after %d tries; left for the next run", where, failures)
        if stuck:  # what is queued stays approved for the next run
            self.gave_up += stuck
            self._stopping = True
            return False
        return self.retries.waiting()

    def run_forever(self, ready: threading.Event | None = None) -> None:
        """Watch and act until :meth:`stop` (or SIGTERM / Ctrl-C) is called."""
        # Another process's writes come by the store's word: the watcher's events of a store
        # in the vault's folders (a second watcher would handle each write twice), else watch.
        inside = self._journal_files
        word = contextlib.nullcontext() if inside else self.journal.watch(self._journal_changed)
        folders = [*REQUEST_FOLDERS, INBOX_FOLDER, *([inside.name] if inside else [])]
        ours = (TEMP_SUFFIX,)  # the temp files of our own writes: nothing waits for them
        with FolderWatcher(self.root, folders, self.notice, self.overflow, ignored=ours), word:
            self._rescan_wanted = True
            self.notifier.start()  # before ready: whoever waits for it finds every thread up
            if ready is not None:
                ready.set()
            log.info("watching %s", self.root)
            while not self._stopping:
                self.wakes.begin()
                self.notifier.idle.clear()
                try:
                    self.run_once()
                except JournalDamagedError:  # unreadable or gone: stop now, the error says why
                    self._stopping = True
                    self.notifier.stop()
                    self.actions.shutdown()
                    raise
                except Exception:  # a bug: say so loudly, keep watching, try again shortly
                    log.exception("unexpected error; the daemon carries on")
                    self.wakes.wait(1.0)
                    continue
                delay = self.next_delay()
                if not self._dirty:
                    self.notifier.idle.set()
                    self.wakes.wait(delay)
        self.notifier.idle.set()
        self._finish_in_flight()

    def _finish_in_flight(self) -> None:
        log.info("stopping: letting actions in flight finish (signal again to exit at once)")
        if self.actions.running:
            log.info("finishing %d action(s) in flight before exiting", self.actions.running)
        self.actions.shutdown()
        if not self.actions.abandoned:  # a leader deposed writes nothing more, notes included
            self.run_once()
        self.notifier.stop()

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return once the actions in flight have finished."""
        self._stopping = True
        self.wakes.finish()  # the steps left put nothing off

    def close(self) -> None:
        """Wait for actions in flight, journal how they went, release the worker threads; it
        no longer listens to the engine (a later daemon may)."""
        self.actions.shutdown()
        self._record_outcomes()
        self._events.remove(_say)
        self._events.remove(self.followed.hear)

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, once: bool = False) -> None:
        """Hold the vault's daemon lock and run (``once``: catch up and exit)."""
        if self._notify().targets:  # like a broken rule: say so and do not start
            self.engine.reload_policy(check_urls=True)
        lock = self.journal.daemon_lock().acquire()
        restore = stop_on_signals(self.stop)
        try:
            if once:
                self.catch_up()
                self.actions.shutdown()
                if self.gave_up:
                    raise CatchUpError(self.gave_up)
            else:
                self.run_forever()
        finally:
            restore()
            lock.release()
