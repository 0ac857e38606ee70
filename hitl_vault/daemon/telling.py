"""When the daemon reads the journal's feed to tell its listeners what was recorded.

Each part of a step that may have written tells the listeners (:meth:`Engine.publish`), four
times a step or more, and every telling reads the feed. Under a stream of submits to the
service, whose threads tell their own, nearly all of those readings find nothing, and each
waits for the one connection the submits hold. So the daemon reads only when something may
be new: this process's journal object ended a transaction since the last reading
(:meth:`~hitl_vault.store.JournalStore.commits`), or another may have written: the store's
word said so (:meth:`~hitl_vault.store.JournalStore.watch`, or the watcher's events of its
files), file events were lost, or no watcher runs to say it (``run --once``, a step called
from a script), in which case every telling reads, as it always did.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager


class Telling:
    """Whether the next telling must read the feed whatever this process did, and the
    telling itself (``publish``: :meth:`Engine.publish`)."""

    def __init__(self, publish: Callable[..., int]) -> None:
        self._publish = publish
        self._lock = threading.Lock()
        self._elsewhere = True  # another may have written since the feed was last read
        self._word = False  # the store's word of others' writes comes (a watcher runs)

    def written_elsewhere(self) -> None:
        """Another process may have written, or word of it was lost (any thread)."""
        with self._lock:
            self._elsewhere = True

    @contextmanager
    def hearing(self) -> Iterator[None]:
        """While inside, the store's word of others' writes comes (its watcher runs)."""
        with self._lock:
            self._elsewhere = self._word = True  # (what came before it: read once)
        try:
            yield
        finally:
            with self._lock:
                self._word = False

    def tell(self) -> int:
        """Tell the listeners what is new; how many entries there were."""
        with self._lock:  # cleared before the reading: word that comes during it stays
            elsewhere, self._elsewhere = self._elsewhere or not self._word, False
        try:
            return self._publish(ours_only=not elsewhere)
        except BaseException:
            with self._lock:
                self._elsewhere |= elsewhere  # not read after all: the next telling reads
            raise
