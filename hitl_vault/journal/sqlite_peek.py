"""A glance at the SQLite journal that only reads: which requests there are, for shell
completion, which must neither create nor change anything nor wait on another process."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import NamedTuple

from ..model import Status


class Listed(NamedTuple):
    """One request as a completion shows it."""

    id: str
    status: Status
    summary: str
    action: str


def read_ids(path: Path, timeout: float = 1.0) -> list[Listed]:
    """The requests the journal at ``path`` holds, newest first; [] when there is no
    journal, or it cannot be read within ``timeout`` seconds (locked, damaged).

    The journal is opened read-only and nothing is created: no journal, and no ``-wal`` or
    ``-shm`` beside it. With no ``-wal`` there (no process has it open), the file is read
    as it is, taking no lock; otherwise the read takes its part in the WAL's locks, whose
    files exist already.
    """
    if not path.is_file():
        return []
    uri = path.absolute().as_uri() + "?mode=ro"
    if not path.with_name(path.name + "-wal").exists():
        uri += "&immutable=1"
    try:
        db = sqlite3.connect(uri, uri=True, timeout=timeout, isolation_level=None)
    except sqlite3.Error:
        return []
    try:
        rows = db.execute(
            "SELECT id, status, summary, action FROM requests ORDER BY created DESC, rowid DESC"
        ).fetchall()
    except sqlite3.Error:
        return []
    finally:
        db.close()
    listed = []
    for rid, status, summary, action in rows:
        try:
            listed.append(Listed(str(rid), Status(status), str(summary), str(action)))
        except ValueError:  # a status no version wrote: not one to offer
            continue
    return listed
