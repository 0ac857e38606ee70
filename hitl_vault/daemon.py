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

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .actions import Actions
from .dashboard import write_dashboard
from .errors import RulesError, VaultError
from .inbox import Inbox
from .lock import DaemonLock
from .model import INBOX_FOLDER, REQUEST_FOLDERS, Request, Status, Transition
from .notestate import is_candidate
from .quiet import QuietWriter
from .signals import stop_on_signals
from .vault import JOURNAL_FILE, RULES_FILE, STATE_DIR, Vault
from .watcher import Watcher

log = logging.getLogger("hitl_vault")

INTERRUPTED = "interrupted: it may or may not have run; check before retrying"
RESCAN_EVERY = timedelta(minutes=5)
# Dashboard.md is rewritten at most this often while the vault is busy (and once it settles).
DASHBOARD_EVERY = timedelta(seconds=1)
# Decisions seen in one step are journaled in groups of this many, one fsync each.
BATCH = 64


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
        self.actions = Actions(vault, workers, self._wake.set)
        self._next_rescan: datetime | None = None
        self._dashboard_stale = True
        self._dashboard_written: datetime | None = None
        self._dashboard_error: str | None = None
        self._stopping = False
        self._recovered = False
        self._seen_seq = vault.journal.last_seq()

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
        if not self._recovered:
            self._recover(now)
            did = True
        did |= self._record_outcomes()
        with self._lock:
            dirty, self._dirty = self._dirty, set()
            rescan, self._rescan_wanted = self._rescan_wanted, False
        if rescan or (self._next_rescan is not None and now >= self._next_rescan):
            scanned = self._scan_paths()
            log.debug("rescan: %d files in the inbox and request folders", len(scanned))
            dirty |= scanned
            self._check_missing_notes()
            self._next_rescan = now + self.rescan_every
            did = True
        dirty |= {path for path, at in self._recheck.items() if now >= at}
        notes = sorted(p for p in dirty if self._is_note(p))
        for path in sorted(dirty.difference(notes)):
            did |= self._look_at(path, now)
        # Decisions in groups: one durable commit for each group, then its actions start.
        for start in range(0, len(notes), BATCH):
            with self.vault.journal.batch():
                for path in notes[start : start + BATCH]:
                    did |= self._look_at(path, now)
                claimed = self._claim()
            did |= self._launch(claimed)
            did |= self._record_outcomes()  # a long step leaves none waiting
        did |= self._expire(now)
        did |= self._launch(self._claim())
        did |= self.quiet.write_due(now, busy=bool(self._dirty))
        self._dashboard_stale |= did
        written = self._dashboard_written
        if self._dashboard_stale and (written is None or now >= written + DASHBOARD_EVERY):
            self._dashboard_stale = not self._write_dashboard(now)
            self._dashboard_written = now
        return did

    def _look_at(self, path: Path, now: datetime) -> bool:
        root = self.vault.root
        try:
            rel = path.relative_to(root)
        except ValueError:
            return False
        if rel.parts and rel.parts[0] == STATE_DIR:
            return rel.name.startswith(JOURNAL_FILE) and self._journal_changed()
        if rel.as_posix() == RULES_FILE:
            return self._reload_rules()
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
        self.quiet.forget(found)
        return found

    def _check_missing_notes(self) -> None:
        for request_id, rel in self.vault.journal.paths().items():
            if not (self.vault.root / rel).exists():
                self.quiet.want(request_id)

    def _reload_rules(self) -> bool:
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

    def _launch(self, claimed: list[tuple[Request, Transition]]) -> bool:
        for request, t in claimed:
            self._log(request.id, t)
            self.quiet.want(request.id)
            self.actions.start(request)
        return bool(claimed)

    def _record_outcomes(self) -> bool:
        try:
            ended, recorded = self.actions.record_outcomes()
        except Exception:  # kept to try again next step; the rest of this step goes on
            log.exception("could not journal how the actions that ended went; trying again")
            return False
        for request_id, t in recorded:
            self._log(request_id, t)
        for request_id in ended:
            self.quiet.want(request_id)
        return bool(ended)

    def _recover(self, now: datetime) -> None:
        """After a restart: finish what a dead daemon left behind, never running anything twice."""
        self._recovered = True
        journal = self.vault.journal
        for request in journal.requests(Status.EXECUTING):
            if request.carried_by_requester or self.actions.is_running(request.id):
                continue
            spec = self.vault.policy.actions.get(request.action)
            if spec is not None and spec.idempotent:
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
        return min(candidates) if candidates else None

    def _write_dashboard(self, now: datetime) -> bool:
        try:
            write_dashboard(self.vault, now)
        except (OSError, VaultError) as e:
            if str(e) != self._dashboard_error:  # it is retried every second: say it once
                log.warning("could not write Dashboard.md: %s", e)
            self._dashboard_error = str(e)
            return False
        self._dashboard_error = None
        return True

    def _log(self, request_id: str, t: Transition) -> None:
        log.info("%s %s", request_id, t.history_line()[2 + 21 :])

    # --- the loop -----------------------------------------------------------------

    def catch_up(self) -> None:
        """``run --once``: rescan, apply, expire, run what is approved, write the notes, exit."""
        while True:
            self.run_once()
            self.actions.wait()
            if self.actions.finished:
                continue
            if self._stopping:  # what is queued stays approved for the next run
                break
            if not (self.actions.busy or self.quiet.waiting or self._dirty or self._recheck):
                break
            deadline = self._next_deadline()
            if (self.quiet.waiting or self._recheck) and deadline is not None:
                delay = (deadline - self.clock()).total_seconds()
                if delay > 0:
                    self._wake.wait(min(delay, self.vault.policy.defaults.quiet.total_seconds()))
                    self._wake.clear()
        self._write_dashboard(self.clock())

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
        lock = DaemonLock(self.vault.root / STATE_DIR / "daemon.lock").acquire()
        restore = stop_on_signals(self.stop)
        try:
            if once:
                self.catch_up()
                self.actions.shutdown()
            else:
                self.run_forever()
        finally:
            restore()
            lock.release()
