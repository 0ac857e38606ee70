"""The journal's hash chain: each entry's hash covers its fields and the entry before it,
so an entry edited, removed or inserted after it was written shows. Pure, no I/O."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

GENESIS = "0" * 64  # the hash before the first entry


def entry_hash(prev: str, fields: Iterable[Any], uid: int | None = None) -> str:
    """The chain's link: the previous hash and the entry's fields (``uid`` only when known,
    so entries written before it was recorded keep their hashes)."""
    values = [*fields] if uid is None else [*fields, uid]
    text = prev + "\x1f" + "\x1f".join("" if f is None else str(f) for f in values)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# Who records an entry, in every store: the real user id of this process, whatever name it
# claims (None where the platform has none).
RECORDER_UID: int | None = os.getuid() if hasattr(os, "getuid") else None


@dataclass(frozen=True)
class Entry:
    """One row of ``entries``, as stored (see schema.sql)."""

    seq: int
    request_id: str
    at: str
    kind: str
    from_status: str | None
    to_status: str
    by: str
    reason: str
    details: str
    params_sha: str | None
    prev_hash: str
    hash: str
    uid: int | None = None

    def intact(self) -> bool:
        """Its content still matches the hash it was written with."""
        fields = (
            self.request_id, self.at, self.kind, self.from_status, self.to_status, self.by,
            self.reason, self.details, self.params_sha,
        )  # fmt: skip
        return entry_hash(self.prev_hash, fields, self.uid) == self.hash


def chain_problems(entries: Iterable[Entry]) -> list[str]:
    """Every break in the chain of ``entries`` (all of them, in order), as a sentence naming
    the entry; [] when intact."""
    problems: list[str] = []
    prev = GENESIS
    for e in entries:
        if e.prev_hash != prev:
            problems.append(
                f"journal entry {e.seq} ({e.request_id}): does not follow entry before it "
                "(an entry was removed or inserted)"
            )
        if not e.intact():
            problems.append(
                f"journal entry {e.seq} ({e.request_id}): its content does not match its hash "
                "(it was edited after it was written)"
            )
        prev = e.hash
    return problems
