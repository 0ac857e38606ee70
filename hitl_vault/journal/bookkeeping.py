"""The journal's bookkeeping beside the requests: the rules in force over time, where each
note is and the bytes it last matched, what needs attention, and which Inbox proposal
became which request."""

from __future__ import annotations

import hashlib
from datetime import datetime

from ..policy.trust import policy_change
from ..times import format_ts, parse_ts
from .handle import Handle


class Bookkeeping:
    """The bookkeeping of both journals, on the database handle it is handed."""

    def __init__(self, db: Handle) -> None:
        self._db = db
        self._write = db.write

    def record_policy(self, text: str | None, at: datetime) -> str | None:
        """Journal the rules file's text if it differs from the last recorded; the change's
        summary, or None when nothing changed (a missing file counts as empty)."""
        text = text or ""
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        # the usual case, unchanged: nothing written
        last = self._db.read_one("SELECT sha FROM policy_changes ORDER BY seq DESC LIMIT 1")
        if last is not None and last[0] == sha:
            return None
        with self._write() as db:
            db.lock_head()  # one writer at a time, so a change is recorded once
            row = db.execute(
                "SELECT sha, text FROM policy_changes ORDER BY seq DESC LIMIT 1"
            ).fetchone()
            if row is not None and row[0] == sha:
                return None
            _, summary = policy_change(row[1] if row else None, text)
            db.execute(
                "INSERT INTO policy_changes (at, sha, summary, text) VALUES (?,?,?,?)",
                (format_ts(at), sha, summary, text),
            )
        return summary

    def policy_changes(self, limit: int = 5) -> list[tuple[datetime, str, str]]:
        """The latest changes of the rules in force: when, the new text's hash, what changed."""
        return self._db.rows(
            "SELECT at, sha, summary FROM policy_changes ORDER BY seq DESC LIMIT ?",
            (limit,),
            lambda r: (parse_ts(r[0]), r[1], r[2]),
        )

    def proposal(self, source: str) -> str | None:
        """The request an Inbox proposal already became, if it did."""
        row = self._db.read_one("SELECT request_id FROM proposals WHERE key = ?", (source,))
        return row[0] if row else None

    def set_path(
        self, request_id: str, path: str, note_sha: str | None = None, entries: int = 0
    ) -> None:
        """Where the request's note is; ``note_sha``: its bytes show the first ``entries``.

        The digest is kept only while the journal still holds exactly that many entries
        for the request: a transition committed by another thread while the note was
        being written makes those bytes stale, and a rescan must not skip them: the write
        waits for an append under way and holds the next one back meanwhile.
        """
        with self._write(durable=False) as db:
            db.share_head()
            db.execute(
                "UPDATE requests SET path = ?, note_sha = CASE WHEN "
                "(SELECT COUNT(*) FROM entries WHERE request_id = ?) = ? THEN ? END "
                "WHERE id = ?",
                (path, request_id, entries, note_sha, request_id),
            )

    def note_sha(self, request_id: str) -> tuple[str | None, str | None]:
        """The note's known path and the SHA-256 its bytes had when they matched the journal."""
        row = self._db.read_one("SELECT path, note_sha FROM requests WHERE id = ?", (request_id,))
        return (row[0], row[1]) if row else (None, None)

    def flag(self, path: str, message: str, at: datetime, request_id: str | None = None) -> bool:
        """List a file under Needs attention; True if this is news (a new or changed message)."""
        with self._write(durable=False) as db:
            row = db.execute(
                "SELECT message FROM attention WHERE path = ?" + self._db.locked, (path,)
            ).fetchone()
            if row is not None and row[0] == message:
                return False
            db.execute(
                "INSERT INTO attention (path, request_id, message, since) VALUES (?,?,?,?) "
                "ON CONFLICT (path) DO UPDATE SET request_id = excluded.request_id, "
                "message = excluded.message, since = excluded.since",
                (path, request_id, message, format_ts(at)),
            )
            return True

    def unflag(self, path: str) -> None:
        """Take the file off Needs attention. The usual case, nothing listed, is one read:
        no write, and nothing to wake other processes (no ``NOTIFY`` to every host). Safe:
        what this read sees is all committed before it, so a flag it misses is written after
        it, as if this call came first; and a flag it sees is deleted by a write of its own
        (not waiting for a disk, as :meth:`flag`: the next scan finds out again)."""
        if self._db.read_one("SELECT 1 FROM attention WHERE path = ?", (path,)) is None:
            return
        with self._write(durable=False) as db:
            db.execute("DELETE FROM attention WHERE path = ?", (path,))
