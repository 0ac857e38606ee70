"""Leadership: which of several hosts on one shared journal does the owner's work.

Every host answers the API and records decisions; one at a time, the leader, watches and
writes the notes, runs the actions, times requests out and sends the notifications: it runs
the daemon. Which host leads is the journal's lease (:class:`~hitl_vault.store.Lease`): a
follower tries to take it every ``renew`` seconds; once it has a term it runs a daemon of
its own for that term (which catches up first, as after a restart), on a thread writing
as that term's owner, and renews the lease every ``renew`` seconds.

A leader that cannot renew in time (its lease overdue by its own clock, measured from when
each renewal was sent, so it stops before the server's lease runs out), or finds another
term elected, stops acting at once: it kills its actions' process groups, starts nothing
more, records nothing more of its term (the database refuses it anyway), and becomes a
follower. A stop hands the term back, so the next host leads at once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import DaemonRunningError, JournalUnavailableError, UsageError
from ..times import parse_duration
from .signals import stop_on_signals

if TYPE_CHECKING:
    from ..store import LeasedStore
    from .loop import Daemon

log = logging.getLogger(__name__)

DEFAULT_LEASE = 10.0  # seconds a term holds without a renewal
DEFAULT_RENEW = 3.0  # seconds between renewals (and between a follower's tries)
LEASE_ENV = "HITL_VAULT_LEASE"  # a host's lease, as a duration (10s)
RENEW_ENV = "HITL_VAULT_LEASE_RENEW"  # how often it is renewed (3s; a third of the lease)


def lease_settings(environ: Mapping[str, str]) -> tuple[float, float]:
    """The lease and its renewal, in seconds, from the host's environment."""
    lease = DEFAULT_LEASE
    if environ.get(LEASE_ENV):
        lease = parse_duration(environ[LEASE_ENV], LEASE_ENV).total_seconds()
    renew = min(DEFAULT_RENEW, lease / 3)
    if environ.get(RENEW_ENV):
        renew = parse_duration(environ[RENEW_ENV], RENEW_ENV).total_seconds()
    if renew >= lease / 2:
        raise UsageError(
            RENEW_ENV,
            f"renewing every {renew:g} s leaves no room in a lease of {lease:g} s",
            f"renew at most every {lease / 3:g} s (a third of {LEASE_ENV})",
        )
    return lease, renew


class Leadership:
    """Take the lease when it is free, run a daemon for each term held, stop on losing it."""

    def __init__(
        self,
        store: LeasedStore,
        make_daemon: Callable[[], Daemon],
        *,
        lease: float = DEFAULT_LEASE,
        renew: float = DEFAULT_RENEW,
        once: bool = False,
    ) -> None:
        if not 0 < renew < lease:
            raise ValueError(f"renew every {renew} s must be under the lease's {lease} s")
        self.seen_term: int | None = None  # the term a follower last saw elected
        self._store = store
        self._lease = store.lease(lease)
        self._make_daemon = make_daemon
        self._renew_every = renew
        self._clock = time.monotonic  # the lease's deadlines are by this clock
        self._once = once  # ``run --once``: one term if the lease is free, else refused
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._daemon: Daemon | None = None
        self._deadline = 0.0  # by this process's clock: when the term held may be over
        self.term: int | None = None  # the term this host leads in; None: a follower
        self.last_term: int | None = None  # the last term it led in

    @property
    def role(self) -> str:
        return "leader" if self.term is not None else "follower"

    def run(self, ready: threading.Event | None = None) -> None:
        """Follow, lead when the lease is free, follow again when it is lost; until
        :meth:`stop`. ``ready`` is set once the first try to lead has been made."""
        try:
            if self._once:
                self._lead_once()
                return
            while not self._stop.is_set():
                term = self._try_to_lead()
                if ready is not None:
                    ready.set()
                if term is None:
                    self._stop.wait(self._renew_every)
                    continue
                self._lead(term)
        finally:
            self._lease.close()

    def _lead_once(self) -> None:
        term = self._lease.take()
        if term is None:
            leader = f"the host that leads in term {self._lease.current()}"
            raise DaemonRunningError("the vault's lease", leader)
        self._deadline = self._lease.deadline
        self._lead(term)

    def _try_to_lead(self) -> int | None:
        try:
            term = self._lease.take()
            if term is None:
                self.seen_term = self._lease.current()
        except JournalUnavailableError as e:
            log.warning("cannot reach the journal to lead: %s", e)
            return None
        if term is not None:
            self._deadline = self._lease.deadline
        return term

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` says of it: the role, and the term led or followed."""
        term = self.term
        return {"role": self.role, "term": term if term is not None else self.seen_term}

    def _lead(self, term: int) -> None:
        """Run a daemon for ``term`` until it stops or the lease is lost. A journal that
        cannot be reached while the daemon is made or sets up hands the term back and
        follows again (``once``: says so); only a damaged journal ends it all."""
        try:
            daemon = self._make_daemon()
        except BaseException as e:
            self.seen_term = term
            self._lease.release(term)
            if self._once or not isinstance(e, JournalUnavailableError):
                raise
            self._follow_again(term, e)
            return
        daemon.notifier.as_owner = lambda: self._store.owner(term)  # its sending threads
        daemon.actions.may_act = lambda: self.term == term and self._clock() < self._deadline
        with self._lock:
            self.term = self.last_term = term
            self._daemon = daemon
        if self._stop.is_set():  # stopped while it was being made
            daemon.stop()
        log.info("leading the vault (term %d)", term)
        held = threading.Event()  # set when the term ends, whichever way
        keepers = [
            threading.Thread(target=work, args=(term, held), name=f"hitl-vault-lease-{name}")
            for name, work in (("renew", self._keep), ("watch", self._watch))
        ]
        for keeper in keepers:
            keeper.start()
        failed: JournalUnavailableError | None = None
        try:
            with self._store.owner(term):
                try:
                    daemon.run(once=True) if self._once else daemon.run_forever()
                finally:
                    daemon.close()
        except JournalUnavailableError as e:  # only its setup: its loop carries on through one
            if self._once:
                raise
            failed = e
        finally:
            held.set()
            for keeper in keepers:
                keeper.join()
            with self._lock:
                lost = self.term is None
                self.term, self._daemon, self.seen_term = None, None, term
            if not lost:  # a stop, not a loss: hand the term back
                self._lease.release(term)
            log.info("no longer leading (term %d)", term)
        if failed is not None:
            self._follow_again(term, failed)

    def _follow_again(self, term: int, why: JournalUnavailableError) -> None:
        """Say why ``term`` ended early, and wait one renewal before the next try to lead."""
        log.warning("could not lead in term %d: %s; following again", term, why)
        self._stop.wait(self._renew_every)

    def _keep(self, term: int, ended: threading.Event) -> None:
        """Renew ``term`` every ``renew`` seconds; lose it when another term is elected."""
        while not ended.wait(self._renew_every) and self.term == term:
            try:
                renewed = self._lease.renew(term)
            except JournalUnavailableError as e:
                log.warning("could not renew the lease (term %d): %s", term, e)
                continue
            if not renewed:
                self._lose(term, "another host leads now")
                return
            self._deadline = self._lease.deadline

    def _watch(self, term: int, ended: threading.Event) -> None:
        """Lose ``term`` once its deadline passes unrenewed, however long a renewal hangs."""
        while (left := self._deadline - self._clock()) > 0:
            if ended.wait(left):
                return
        self._lose(term, "its lease ran out before it could renew it")

    def _lose(self, term: int, why: str) -> None:
        """Stop acting at once: kill the actions' programs, then let the daemon wind down."""
        with self._lock:
            if self.term != term:
                return
            self.term = None
            daemon = self._daemon
        log.error("lost the lead (term %d): %s; stopping every action", term, why)
        if daemon is not None:
            killed = daemon.actions.abandon()
            if killed:
                log.error("killed %d running action(s) of term %d", killed, term)
            daemon.stop()

    def stop(self) -> None:
        """Stop leading (the daemon lets actions in flight finish) and following."""
        self._stop.set()
        with self._lock:
            daemon = self._daemon
        if daemon is not None:
            daemon.stop()


def lead(
    store: LeasedStore, make_daemon: Callable[[], Daemon], environ: Mapping[str, str], once: bool
) -> None:
    """``hitl-vault run`` on a shared journal: lead whenever the lease is free, until SIGTERM
    or Ctrl-C (``once``: catch up in one term, refused while another host leads)."""
    lease, renew = lease_settings(environ)
    leadership = Leadership(store, make_daemon, lease=lease, renew=renew, once=once)
    restore = stop_on_signals(leadership.stop)
    try:
        leadership.run()
    finally:
        restore()
