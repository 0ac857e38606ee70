"""The daemon: the loop around a Vault that reacts to saves, runs actions and times out requests.

One step is :meth:`Daemon.run_once` (time injected, as huey and rq do);
:meth:`Daemon.run_forever` is a loop around it that sleeps until the next
event, expiry, quiet deadline or rescan, and never polls on a fixed interval.

* A watcher thread only says "this path may have changed"; paths are coalesced,
  so two events for one save cause one read.
* A human's decision is journaled and its action started at once; the note is
  rewritten or moved only after it has been quiet for ``defaults.quiet``.
* Actions run on worker threads (:mod:`hitl_vault.actions`); ``executing`` is journaled
  before each starts, and its outcome by the step after it ends.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .actions import Actions
from .dashboard import write_dashboard
from .errors import CatchUpError, NotRunnableError, RulesError, VaultError
from .inbox import Inbox
from .layout import INBOX_FOLDER, JOURNAL_FILE, LOCK_FILE, REQUEST_FOLDERS, RULES_FILE, STATE_DIR
from .lock import DaemonLock
from .model import Request, Status, Transition
from .notestate import is_candidate
from .quiet import QuietWriter
from .render import history_line
from .signals import stop_on_signals
from .vault import Vault
from .watcher import Watcher

log = logging.getLogger("hitl_vault")

INTERRUPTED = "interrupted: it may or may not have run; check before retrying"
RESCAN_EVERY = timedelta(minutes=5)
# Dashboard.md is rewritten at most this often while the vault is busy (and once it settles).
DASHBOARD_EVERY = timedelta(seconds=1)
# Decisions seen in one step are journaled in groups of this many, one fsync each.
BATCH = 64
# A path whose handling failed is looked at again after this, doubling up to RETRY_MAX.
RETRY_FIRST = timedelta(milliseconds=500)
RETRY_MAX = timedelta(seconds=30)
# How long the daemon waits for a journal another process holds before it retries later.
JOURNAL_WAIT = timedelta(seconds=5)
# The part of a step that journals how actions went (see _part_failures).
_OUTCOMES = "recording how actions went"
# ``run --once`` gives up on a path (until the next run) after this many failed looks.
ONCE_TRIES = 5


def _precise_now() -> datetime:
    return datetime.now(UTC)


class Daemon:
    """Watches one vault and keeps it moving."""

    def __init__(
        self,
        vault: Vault,
        *,
        clock: Callable[[], datetime] = _precise_now,
        workers: int = 4,
        rescan_every: timedelta = RESCAN_EVERY,
    ) -> None:
        self.vault = vault
        self.clock = clock
        self.rescan_every = rescan_every
        self.inbox = Inbox(vault)
        self.quiet = QuietWriter(vault)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._dirty: set[Path] = set()
        self._rescan_wanted = True
        self._reported: dict[Path, str] = {}
        self._recheck: dict[Path, datetime] = {}
        self._failures: dict[Path, int] = {}  # paths whose handling failed, and how often
        self._retry_at: dict[Path, datetime] = {}  # when each is looked at again
        self._retry_soon: datetime | None = None  # a part of a step failed: the next try
        self._rules_due: datetime | None = None  # hitl-vault.yaml changed: reload once quiet
        self._deferring = False  # inside a batch: transitions are said once committed
        self._said: list[tuple[str, Transition]] = []
        self.gave_up: list[str] = []  # ``run --once``: paths it could not handle
        self._part_failures: dict[str, int] = {}  # parts of the step failing in a row
        self.actions = Actions(vault, workers, self._wake.set)
        self._next_rescan: datetime | None = None
        self._dashboard_stale = True
        self._dashboard_written: datetime | None = None
        self._stopping = False
        self._recovered = False
        self._seen_seq = vault.journal.last_seq()
        # A journal held by another process for longer fails the step, which is retried
        # within a second (RETRY_FIRST), instead of holding every other file up for 30 s.
        vault.journal.wait_for_lock(JOURNAL_WAIT.total_seconds())

    # --- events in ------------------------------------------------------------

    def notice(self, path: Path) -> None:
        """Called from the watcher thread: ``path`` may have changed."""
        with self._lock:
            self._dirty.add(path)
        self._wake.set()

    def overflow(self) -> None:
        """Events were lost; everything gets looked at again."""
        log.warning("file events were lost (watcher queue overflow); rescanning the vault")
        with self._lock:
            self._rescan_wanted = True
        self._wake.set()

    # --- one step ---------------------------------------------------------------

    def run_once(self, now: datetime | None = None) -> bool:
        """Do everything that is due now; True if anything happened."""
        now = now or self.clock()
        did = False
        self._retry_soon = None
        if not self._recovered:
            did |= self._guarded("recovering after a restart", self._recover, now)
        did |= self._record_outcomes()
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            rescan, self._rescan_wanted = self._rescan_wanted, False
        if rescan or (self._next_rescan is not None and now >= self._next_rescan):
            dirty |= self._scan_paths()
            self._guarded("looking for missing notes", self._check_missing_notes, now)
            self._next_rescan = now + self.rescan_every
            did = True
        dirty |= {path for path, at in self._recheck.items() if now >= at}
        dirty |= {path for path, at in self._retry_at.items() if now >= at}
        if self._rules_due is not None and now >= self._rules_due:
            did |= self._guarded("reloading the rules", self._reload_rules, now)
        notes = sorted(p for p in dirty if self._is_note(p))
        for path in sorted(dirty.difference(notes)):  # each commits on its own
            did |= self._look_safely([path], now, batch=False)
        # Decisions in groups: one durable commit for each group, then its actions start.
        for start in range(0, len(notes), BATCH):
            did |= self._look_safely(notes[start : start + BATCH], now)
            did |= self._record_outcomes()  # a long step leaves none waiting
        did |= self._guarded("expiring requests", self._expire, now)
        did |= self._guarded("starting actions", self._claim_and_launch, now)
        did |= self._guarded("writing notes", self._write_due, now)
        self._dashboard_stale |= did
        written = self._dashboard_written
        if self._dashboard_stale and (written is None or now >= written + DASHBOARD_EVERY):
            self._write_dashboard(now)
            self._dashboard_stale = False  # a failed write is tried with the next change
            self._dashboard_written = now
        return did

    def _look_safely(self, paths: list[Path], now: datetime, *, batch: bool = True) -> bool:
        """Look at ``paths`` in one durable commit; say what happened only once it is committed.

        A path whose handling raises is retried on its own (an error in one file
        never holds back another); when the commit itself fails (disk full, the
        journal locked too long), none of it happened: every path is retried soon.
        """
        failed: dict[Path, Exception] = {}
        did = False
        self._said, self._deferring = [], True
        try:
            with self.vault.journal.batch() if batch else contextlib.nullcontext():
                for path in paths:
                    try:
                        did |= self._look_at(path, now)
                    except Exception as e:  # kept apart and retried, below
                        failed[path] = e
                # Claims share the group's commit; alone, a path's commit is its own, and
                # claims wait for the step's end (a failed claim must roll back whole).
                claimed = self._claim() if batch else []
        except Exception as e:  # the commit failed: nothing in it happened
            self.actions.unclaim()
            self.quiet.forget(paths)  # read them afresh when retried
            self._retry_later(paths, now, e)
            return False
        finally:
            self._deferring = False
        said, self._said = self._said, []
        for request_id, t in said:
            self._log(request_id, t)
        for path in paths:
            if path not in failed:
                self._failures.pop(path, None)
                self._retry_at.pop(path, None)
        self.quiet.forget(failed)
        for path, error in failed.items():
            self._retry_later([path], now, error)
        return self._launch(claimed) or did

    def _guarded(self, what: str, work: Callable[[datetime], bool], now: datetime) -> bool:
        """One part of a step; if it fails, the rest of the step goes on and it is tried again."""
        try:
            did = work(now)
        except (OSError, sqlite3.Error) as e:  # a full disk, a journal locked too long
            log.error("error while %s: %s; trying again shortly", what, e)
        except Exception:  # a bug: say where, loudly
            log.exception("unexpected error while %s; trying again shortly", what)
        else:
            self._part_failures.pop(what, None)
            return did
        self._part_failures[what] = self._part_failures.get(what, 0) + 1
        self._retry_soon = now + RETRY_FIRST
        return False

    def _retry_later(self, paths: list[Path], now: datetime, error: BaseException) -> None:
        """Look at ``paths`` again after a backoff (0.5 s, doubling, at most every 30 s)."""
        for path in paths:
            n = self._failures.get(path, 0) + 1
            self._failures[path] = n
            self._retry_at[path] = now + min(RETRY_FIRST * 2 ** (n - 1), RETRY_MAX)
        shown = self.vault.notes.rel(paths[0]) + (
            f" and {len(paths) - 1} more" if len(paths) > 1 else ""
        )
        if isinstance(error, OSError | sqlite3.Error):
            log.error("%s: %s; trying again shortly", shown, error)
        else:  # a bug: say where, loudly
            log.error("%s: unexpected error; trying again shortly", shown, exc_info=error)

    def _look_at(self, path: Path, now: datetime) -> bool:
        root = self.vault.root
        try:
            rel = path.relative_to(root)
        except ValueError:
            return False
        if rel.parts and rel.parts[0] == STATE_DIR:
            return rel.name.startswith(JOURNAL_FILE) and self._journal_changed()
        if rel.as_posix() == RULES_FILE:  # reloaded once quiet: an editor may be mid-save
            self._rules_due = now + self.vault.policy.defaults.quiet
            return False
        if rel.parts and rel.parts[0] == INBOX_FOLDER:
            created = self.inbox.take(path, now)
            for request in created:
                log.info("%s created → %s (from %s)", request.id, request.status, rel)
                self.actions.queue_if_runnable(request.id)
            return True  # a request, or a flag: either way the dashboard may change
        if len(rel.parts) == 1 and rel.parts[0] in REQUEST_FOLDERS and path.is_dir():
            # A folder appeared or moved (a git checkout, a sync): look at all it holds.
            did = False
            for child in path.iterdir():
                did |= self._look_at(child, now)
            return did
        if not is_candidate(rel):
            return False
        recheck = self._recheck.pop(path, None)
        due = recheck is not None and now >= recheck
        content = self.quiet.new_content(path)
        if content is None and not due:
            return False
        log.debug("%s: changed", rel)
        self.quiet.touched(path, now)
        hold = not due and self.quiet.recently_written(path, now)
        data = content.data if content else None
        finding = self.vault.notes.inspect(path, now, hold=hold, data=data)
        if finding is None:
            return False
        if finding.held:  # maybe half-saved: flag it only if it still fails once quiet
            log.debug("%s: does not parse yet; looking again once it is quiet", rel)
            self._recheck[path] = now + self.vault.policy.defaults.quiet
            return False
        self.quiet.looked_at(path, content.digest if content else None)
        if finding.problem and self._reported.get(path) != finding.problem:
            log.warning("needs attention: %s", finding.problem)
        if finding.problem:
            self._reported[path] = finding.problem
        else:
            self._reported.pop(path, None)
        if finding.acted is not None and finding.request_id:
            self._log(finding.request_id, finding.acted)
            self.actions.queue_if_runnable(finding.request_id)
        if finding.request_id and finding.needs_sync:
            self.quiet.want(finding.request_id)
        return True

    def _journal_changed(self) -> bool:
        """Another process (the CLI, the API) recorded transitions: act on them and show them."""
        self._seen_seq, changed = self.vault.journal.changed_since(self._seen_seq)
        for request_id, status in changed.items():
            if status is Status.APPROVED:
                self.actions.queue_if_runnable(request_id)
            self.quiet.want(request_id)
        return bool(changed)

    def _is_note(self, path: Path) -> bool:
        try:
            return is_candidate(path.relative_to(self.vault.root))
        except ValueError:
            return False

    def _scan_paths(self) -> set[Path]:
        found: set[Path] = set()
        for folder in (INBOX_FOLDER, *REQUEST_FOLDERS):
            try:
                found.update(p for p in (self.vault.root / folder).iterdir())
            except FileNotFoundError:
                continue
            except OSError as e:  # a file where the folder should be, no permission
                log.error(
                    "cannot look into %s/: %s (make it a folder hitl-vault may read)",
                    folder,
                    e.strerror or e,
                )
        self.quiet.forget(found)
        return found

    def _check_missing_notes(self, now: datetime) -> bool:
        for request_id, rel in self.vault.journal.paths().items():
            if not (self.vault.root / rel).exists():
                self.quiet.want(request_id)
        return True

    def _reload_rules(self, now: datetime) -> bool:
        """Load hitl-vault.yaml again; a bad one is flagged and the last good rules stay."""
        self._rules_due = None
        try:
            self.vault.reload_policy()
        except RulesError as e:
            log.error("%s; keeping the rules loaded before", e)
            self.vault.journal.flag(
                RULES_FILE, f"{e} (the daemon keeps the previous rules)", self.clock()
            )
            return True
        self.vault.journal.unflag(RULES_FILE)
        log.info("reloaded %s", RULES_FILE)
        # An approval that waited for an executor the new rules name can run now.
        for request_id in self.vault.journal.ids(Status.APPROVED):
            self.actions.queue_if_runnable(request_id)
        return True

    def _expire(self, now: datetime) -> bool:
        due = self.vault.journal.expiring(before=now)
        for request_id, _ in due:
            t = self.vault.expire(request_id, now)
            if t is not None:
                self._log(request_id, t)
                self.quiet.want(request_id)
        return bool(due)

    # --- running actions -------------------------------------------------------------

    def _claim(self) -> list[tuple[Request, Transition]]:
        return [] if self._stopping else self.actions.claim()

    def _claim_and_launch(self, now: datetime) -> bool:
        try:
            with self.vault.journal.batch():  # one durable commit for every claim of the step
                claimed = self._claim()
        except Exception:  # nothing was claimed: the queue stays as it was
            self.actions.unclaim()
            raise
        return self._launch(claimed)

    def _write_due(self, now: datetime) -> bool:
        return self.quiet.write_due(now, busy=bool(self._dirty))

    def _launch(self, claimed: list[tuple[Request, Transition]]) -> bool:
        self.actions.launched()
        for request, t in claimed:
            self._log(request.id, t)
            self.quiet.want(request.id)
            if t.to_status is Status.EXECUTING:  # not one a block rule rejected at the last moment
                self.actions.start(request)
        return bool(claimed)

    def _record_outcomes(self) -> bool:
        """Journal how the actions that ended went; failing, they are kept to try again."""
        return self._guarded(_OUTCOMES, self._journal_outcomes, self.clock())

    def _journal_outcomes(self, now: datetime) -> bool:
        ended, recorded = self.actions.record_outcomes()
        for request_id, t in recorded:
            self._log(request_id, t)
        for request_id in ended:
            self.quiet.want(request_id)
        return bool(ended)

    def _recover(self, now: datetime) -> bool:
        """After a restart: finish what a dead daemon left behind, never running anything twice.

        Safe to repeat after a failure part way: what it finished is no longer ``executing``.
        """
        journal = self.vault.journal
        journal.unflag(RULES_FILE)  # the rules loaded: an error listed by an earlier run is gone
        for request in journal.requests(Status.EXECUTING):
            if request.carried_by_requester or self.actions.is_running(request.id):
                continue
            full = journal.get(request.id)
            assert full is not None
            problem = journal.unproven(
                request.id, request.params, Status.EXECUTING
            ) or self.vault.notes.later_in_note(full)
            if problem:  # neither run again nor called interrupted: a human looks first
                self.actions.refuse(request.id, str(NotRunnableError(request.id, problem)))
                continue
            spec = self.vault.policy.actions.get(request.action)
            if spec is not None and spec.idempotent:
                if self._stopping:  # stays executing: run again at the next start
                    continue
                log.warning(
                    "%s: was running when the daemon stopped; idempotent, so running it again",
                    request.id,
                )
                self.actions.start(request)
                continue
            t = journal.transition(
                request.id, Status.FAILED, at=now, by="executor",
                details=(f"error: {INTERRUPTED}",), expect={Status.EXECUTING},
                fields={"executed_at": now, "error": INTERRUPTED},
            )  # fmt: skip
            if t is not None:
                self._log(request.id, t)
                self.quiet.want(request.id)
        for request_id in journal.ids(Status.APPROVED):
            self.actions.queue_if_runnable(request_id)
        self._recovered = True
        return True

    # --- writing notes once quiet -----------------------------------------------------

    def _next_deadline(self) -> datetime | None:
        candidates: list[datetime] = []
        expiry = self.vault.journal.next_expiry()
        if expiry is not None:
            candidates.append(expiry)
        if self.quiet.next_at is not None:
            candidates.append(self.quiet.next_at)
        if self._recheck:
            candidates.append(min(self._recheck.values()))
        if self._dashboard_stale and self._dashboard_written is not None:
            candidates.append(self._dashboard_written + DASHBOARD_EVERY)
        if self._next_rescan is not None:
            candidates.append(self._next_rescan)
        if self._retry_at:
            candidates.append(min(self._retry_at.values()))
        if self._retry_soon is not None:
            candidates.append(self._retry_soon)
        if self._rules_due is not None:
            candidates.append(self._rules_due)
        if self.actions.next_retry is not None:
            candidates.append(self.actions.next_retry)
        return min(candidates) if candidates else None

    def _write_dashboard(self, now: datetime) -> None:
        """Rewrite Dashboard.md; if it cannot be, say so as an error, with what it would show.

        Called once per change (at most once a second), so a dashboard that stays
        broken is reported with every change it misses, and never hides a warning.
        """
        try:
            write_dashboard(self.vault, now)
        except (OSError, VaultError, sqlite3.Error) as e:
            flagged = self.vault.journal.attention()
            hidden = (
                f"; {len(flagged)} file(s) need attention and are not shown there: "
                + ", ".join(a.path for a in flagged[:5])
                if flagged
                else ""
            )
            log.error(
                "could not write Dashboard.md: %s%s (make Dashboard.md a note hitl-vault may "
                "write, or remove what is in its place)",
                e,
                hidden,
            )

    def _log(self, request_id: str, t: Transition) -> None:
        if self._deferring:  # said once its batch is committed, never for a rollback
            self._said.append((request_id, t))
            return
        log.info("%s %s", request_id, history_line(t)[2 + 21 :])

    # --- the loop -----------------------------------------------------------------

    def catch_up(self) -> None:
        """``run --once``: rescan, apply, expire, run what is approved, write the notes, exit."""
        while True:
            self.run_once()
            self.actions.wait()
            if self.actions.finished and _OUTCOMES not in self._part_failures:
                continue  # record them now (failing, they wait for the retry below)
            retrying = self._retries_left()
            if self._stopping:  # what is queued stays approved for the next run
                break
            writing = self.quiet.waiting.difference(self.quiet.refused)
            if not (self.actions.busy or writing or self._dirty or self._recheck or retrying):
                break
            deadline = self._next_deadline()
            if (writing or self._recheck or retrying) and deadline is not None:
                delay = (deadline - self.clock()).total_seconds()
                if delay > 0:
                    self._wake.wait(min(delay, self.vault.policy.defaults.quiet.total_seconds()))
                    self._wake.clear()
        self.gave_up += self.quiet.refused.values()
        self._write_dashboard(self.clock())

    def _retries_left(self) -> bool:
        """``run --once``: paths still worth another look; those tried too often are given up."""
        for path, failures in list(self._failures.items()):
            if failures >= ONCE_TRIES and self._retry_at.pop(path, None) is not None:
                self.gave_up.append(self.vault.notes.rel(path))
                log.error(
                    "%s: still failing after %d tries; left for the next run",
                    self.vault.notes.rel(path),
                    failures,
                )
        stuck = [what for what, n in self._part_failures.items() if n >= ONCE_TRIES]
        if stuck:  # what is queued stays approved for the next run
            self.gave_up += stuck
            self._stopping = True
            return False
        return bool(self._retry_at) or self._retry_soon is not None

    def run_forever(self, ready: threading.Event | None = None) -> None:
        """Watch and act until :meth:`stop` (or SIGTERM / Ctrl-C) is called."""
        with Watcher(self.vault.root, self.notice, self.overflow):
            self._rescan_wanted = True
            if ready is not None:
                ready.set()
            log.info("watching %s", self.vault.root)
            while not self._stopping:
                self._wake.clear()
                try:
                    self.run_once()
                except Exception:  # a bug: say so loudly, keep watching, try again shortly
                    log.exception("unexpected error; the daemon carries on")
                    self._wake.wait(1.0)
                    continue
                deadline = self._next_deadline()
                delay = None
                if deadline is not None:
                    delay = max(0.0, (deadline - self.clock()).total_seconds())
                if not self._dirty:
                    self._wake.wait(delay)
        self._finish_in_flight()

    def _finish_in_flight(self) -> None:
        if self.actions.running:
            log.info("finishing %d action(s) in flight before exiting", self.actions.running)
        self.actions.shutdown()
        self.run_once()

    def stop(self) -> None:
        """Ask :meth:`run_forever` to return once the actions in flight have finished."""
        self._stopping = True
        self._wake.set()

    def close(self) -> None:
        """Wait for actions in flight, journal how they went, release the worker threads."""
        self.actions.shutdown()
        self._record_outcomes()

    def __enter__(self) -> Daemon:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, once: bool = False) -> None:
        """Hold the vault's daemon lock and run (``once``: catch up and exit)."""
        lock = DaemonLock(self.vault.root / STATE_DIR / LOCK_FILE).acquire()
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
