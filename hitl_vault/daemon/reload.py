"""The daemon's side of ``hitl-vault.yaml``: reloaded once quiet after an edit.

An editor may be half way through a save when its first event arrives, so the
file is read only once it has been quiet for ``defaults.quiet``. A bad file is
flagged and the rules loaded before stay; good rules may decide a pending
request (a lower quorum) and let an approved one run (an executor added).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING

from ..errors import RulesError
from ..model import RULES_FILE, Status
from .quiet import QuietWriter

if TYPE_CHECKING:
    from ..notes.reconcile import Reconciler
    from ..policy.rules import Policy
    from ..store import JournalStore

log = logging.getLogger(__name__)


class RulesReload:
    """Reloads the rules once the file is quiet after a change."""

    def __init__(
        self,
        journal: JournalStore,
        notes: Reconciler,
        reload: Callable[[], Policy],
        quiet: QuietWriter,
        queue: Callable[[str], None],
        clock: Callable[[], datetime],
    ) -> None:
        self.journal = journal
        self.notes = notes
        self._reload = reload  # reads hitl-vault.yaml again (RulesError: the old rules stay)
        self.quiet = quiet
        self._queue = queue  # an approved request that may run now
        self._clock = clock
        self.due: datetime | None = None  # the file changed: reload at this time

    def changed(self, now: datetime) -> None:
        """The rules file changed at ``now``: reload it once it has been quiet."""
        self.due = now + self.quiet.period()

    def next_wake(self, now: datetime) -> datetime | None:
        return self.due

    def reload_if_due(self, now: datetime) -> bool:
        """Load hitl-vault.yaml again if it is due; a bad one is flagged and the last good
        rules stay. True if it was due."""
        if self.due is None or now < self.due:
            return False
        self.due = None
        try:
            self._reload()
        except RulesError as e:
            log.error("%s; keeping the rules loaded before", e)
            message = f"{e} (the daemon keeps the previous rules)"
            self.journal.flag(RULES_FILE, message, self._clock())
            return True
        self.journal.unflag(RULES_FILE)
        log.info("reloaded %s", RULES_FILE)
        # Votes already in may decide a request under the new rules (a lower quorum), and
        # who decides may have changed: each pending note shows it anew (votes: lines or not).
        for request_id in self.journal.ids(Status.PENDING):
            self.notes.settle(request_id, now)
            self.quiet.want(request_id)
        # An approval that waited for an executor the new rules name can run now.
        for request_id in self.journal.ids(Status.APPROVED):
            self._queue(request_id)
        return True
