"""The SQLite journal's connection: opened once, its errors made ours, its writes atomic.

Every statement and every row read goes through :class:`_Connection` and
:class:`_Cursor`, so no ``sqlite3`` error leaves the journal modules: a damaged file
is :class:`JournalDamagedError`, a lock held too long, a full disk or an I/O error is
:class:`JournalUnavailableError`, a journal file deleted under a running process is
:class:`JournalMissingError`, and one that lives on elsewhere (the vault moved) is
:class:`JournalMovedError` (an ``IntegrityError`` is left to the statement that expects
one; a misuse such as a closed connection is a bug and stays what it is).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from ..errors import (
    JournalDamagedError,
    JournalMissingError,
    JournalMovedError,
    JournalUnavailableError,
)

# How long a copy of a journal deleted under this process may wait on SQLite's locks.
RESCUE_WAIT = 10.0

# The tables, from schema.sql beside this module (importlib.resources, for packages run
# from a zip, would cost each process that opens a journal 7 ms of imports).
SCHEMA = Path(__file__).with_name("schema.sql").read_text(encoding="utf-8")

# Columns added since the first release: a journal made before them gets them on open.
_ADDED_COLUMNS = (
    ("entries", "uid", "INTEGER"),
    ("entries", "actor", "TEXT"),
    ("entries", "credential", "TEXT"),
    ("requests", "pinned", "TEXT"),
    ("requests", "params_created", "TEXT"),
    ("requests", "context", "TEXT"),
    ("requests", "escalate_at", "TEXT"),
    ("requests", "retry_of", "TEXT"),
    ("requests", "proposal", "TEXT"),
    ("requests", "credential", "TEXT"),
    ("requests", "session", "TEXT"),
    ("requests", "client", "TEXT"),
    ("allows", "cwd", "TEXT"),
    ("allows", "server", "TEXT"),
    ("sessions", "credential", "TEXT NOT NULL DEFAULT ''"),
)
T = TypeVar("T")
# What SQLite says when the bytes themselves are wrong, whatever class it gives the error.
_DAMAGE = ("malformed", "not a database", "could not decode", "corrupt")
# What converting a row hitl-vault did not write raises (see Database.converted).
_BAD_ROW = (ValueError, TypeError, KeyError, IndexError)


def json_object(text: Any, what: str) -> dict[str, Any]:
    """The JSON object (params, pinned params) a column holds; ValueError, naming ``what``,
    for anything else: hitl-vault writes only objects there."""
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        raise ValueError(f"{what} is not JSON") from None
    if not isinstance(value, dict):
        raise ValueError(f"{what} is {json.dumps(value)[:40]}, not a JSON object")
    return value


def _typed(path: Path, e: sqlite3.Error) -> Exception | None:
    """Our error for a storage error of SQLite's; None to let it through (an integrity
    error the statement expects, or a misuse, which is a bug)."""
    text = " ".join(str(e).split(" with text ")[0].split())  # one line, without the bytes
    if any(sign in text.lower() for sign in _DAMAGE):
        return JournalDamagedError(path, text)
    if isinstance(e, sqlite3.OperationalError):
        return JournalUnavailableError(path, text)
    if type(e) is sqlite3.DatabaseError:
        return JournalDamagedError(path, text)
    return None


def _busy(e: BaseException) -> bool:
    """Whether ``e`` (ours) stands for SQLite's "busy" or "locked": another connection's lock,
    which a later try may find gone."""
    cause = e.__context__
    code = getattr(cause, "sqlite_errorcode", 0) if isinstance(cause, sqlite3.Error) else 0
    return code & 0xFF in (5, 6)  # SQLITE_BUSY, SQLITE_LOCKED and their extended codes


# How long opening a journal may wait for other connections' locks in all. SQLite's busy
# handler waits on most locks (the connection's own timeout), but not on every one that
# setting up a WAL connection takes (a recovery of the WAL index by another connection
# answers "locked" at once), so the set-up is tried again within this bound.
OPEN_WAIT = 30.0


def _ours(path: Path, e: sqlite3.Error) -> Exception:
    """What to raise for ``e``: our error, or ``e`` itself when it is not ours to type."""
    typed = _typed(path, e)
    if typed is None:
        return e
    typed.__suppress_context__ = True
    return typed


class _Cursor(sqlite3.Cursor):
    """A cursor whose statements and fetches raise our typed errors (a damaged page shows
    only when its row is read)."""

    journal_path = Path()

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        try:
            super().execute(sql, parameters)
        except sqlite3.Error as e:
            raise _ours(self.journal_path, e)  # noqa: B904 - the context is suppressed
        return self

    def fetchone(self) -> Any:
        try:
            return super().fetchone()
        except sqlite3.Error as e:
            raise _ours(self.journal_path, e)  # noqa: B904 - the context is suppressed

    def fetchall(self) -> list[Any]:
        try:
            return super().fetchall()
        except sqlite3.Error as e:
            raise _ours(self.journal_path, e)  # noqa: B904 - the context is suppressed

    def __next__(self) -> Any:
        try:
            return super().__next__()
        except sqlite3.Error as e:
            raise _ours(self.journal_path, e)  # noqa: B904 - the context is suppressed


class _Connection(sqlite3.Connection):
    """A connection whose statements go through :class:`_Cursor`."""

    journal_path = Path()

    def execute(self, sql: str, parameters: Any = (), /) -> _Cursor:
        cursor = self.cursor(_Cursor)
        cursor.journal_path = self.journal_path
        return cursor.execute(sql, parameters)


class _HeldFiles:
    """One read-only fd per journal file this process has open, shared by every
    :class:`Database` on that file, so a process can ask the file itself (``fstat``) whether
    it was deleted or only moved. Closing any fd on a file drops every POSIX lock this process
    holds on it, SQLite's included, so no such fd is closed while a connection of this
    process may hold one: a file already held is not opened again, and its fd is closed
    only after the last of its connections."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._fds: dict[tuple[int, int], list[int]] = {}  # (dev, inode): fds open on it
        self._users: dict[tuple[int, int], int] = {}

    def hold(self, path: Path) -> tuple[int, int]:
        """The key of the file at ``path``, now held for one more user."""
        with self._lock:
            seen = os.stat(path)
            key = (seen.st_dev, seen.st_ino)
            if key not in self._fds:
                fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # never wait
                seen = os.fstat(fd)  # the file there now, if it was replaced meanwhile
                key = (seen.st_dev, seen.st_ino)
                self._fds.setdefault(key, []).append(fd)
            self._users[key] = self._users.get(key, 0) + 1
            return key

    def fd(self, key: tuple[int, int]) -> int:
        return self._fds[key][0]

    def release(self, key: tuple[int, int]) -> None:
        with self._lock:
            self._users[key] -= 1
            if self._users[key] == 0:
                del self._users[key]
                for fd in self._fds.pop(key):
                    os.close(fd)


_HELD = _HeldFiles()


class _Deadline:
    """A ``backup`` progress callback that gives up once SQLite has said "busy" or "locked"
    for ``seconds`` (``backup`` itself would retry for ever)."""

    def __init__(self, seconds: float) -> None:
        self._end = time.monotonic() + seconds

    def check(self, status: int, remaining: int, total: int) -> None:
        if status in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED) and time.monotonic() > self._end:
            raise sqlite3.OperationalError("the journal stayed locked while being copied")


class Database:
    """One SQLite database in WAL mode with durable (``synchronous=FULL``) commits, and the
    lock that lets threads of one process share it. Any number of processes may open it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        if not path.exists():
            with contextlib.suppress(FileExistsError):
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        self.lock = threading.RLock()
        self.batching = False
        try:
            db = sqlite3.connect(
                path,
                isolation_level=None,
                check_same_thread=False,
                timeout=30.0,
                factory=_Connection,
            )
        except sqlite3.Error as e:  # cannot open it: a folder in its place, say
            raise JournalUnavailableError(path, str(e)) from None
        self.db: sqlite3.Connection = db
        db.journal_path = path
        self._gone: JournalMissingError | None = None  # once found gone: what it raises
        self._file: tuple[int, int] | None = None
        try:
            try:
                self._file = _HELD.hold(path)
            except OSError as e:  # cannot open it to read (its permissions, say)
                raise JournalUnavailableError(path, e.strerror or str(e)) from None
            self._set_up_within(OPEN_WAIT)
        except BaseException:
            self.close()
            raise

    def _set_up_within(self, seconds: float) -> None:
        """:meth:`_set_up`, tried again while another connection's lock answers "busy", until
        ``seconds`` have passed since the first try."""
        deadline = time.monotonic() + seconds
        pause = 0.01
        while True:
            try:
                self._set_up()
                return
            except JournalUnavailableError as e:
                if not _busy(e) or time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.5)

    def _set_up(self) -> None:
        db = self.db
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        with self.write() as w:
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    w.execute(statement)
            for table, column, kind in _ADDED_COLUMNS:
                have = {row[1] for row in w.execute(f"PRAGMA table_info({table})").fetchall()}
                if column not in have:  # a journal made before this column
                    w.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
            # After the columns: a journal made before retry_of has no such column above.
            w.execute("CREATE INDEX IF NOT EXISTS requests_retry_of ON requests (retry_of)")
            w.execute(
                "CREATE INDEX IF NOT EXISTS requests_credential ON requests (credential, created)"
            )
            # The daemon's every step asks for the next escalation and the ones due: without it,
            # each read every pending request (1.2 ms at 5,000 pending, twice a step).
            w.execute(
                "CREATE INDEX IF NOT EXISTS requests_status_escalate "
                "ON requests (status, escalate_at)"
            )
            # The key that signs decision links: made with the journal, or for a journal
            # made before links were, the first time this version opens it; kept ever after.
            w.execute(
                "INSERT OR IGNORE INTO link_key (id, key) VALUES (1, ?)", (secrets.token_bytes(32),)
            )

    def check_present(self) -> None:
        """Raise if the file this connection opened is no longer at its path: what is written
        now would be seen by no one who looks there. :class:`JournalMovedError` when the file
        lives on elsewhere (the vault was moved or renamed: nothing is copied, and nothing
        is made at the old place); :class:`JournalMissingError` when it was deleted or
        replaced, with a copy of what this connection still holds saved beside it. Once
        found gone, it stays gone for this connection, closed or not."""
        with self.lock:  # one thread looks (and copies); none closes it meanwhile
            if self._gone is None and self._file is not None:
                self._gone = self._look()
            gone = self._gone
        if gone is not None:
            raise gone.with_traceback(None)

    def _look(self) -> JournalMissingError | None:
        """What :meth:`check_present` raises now, or None while the file is at its path."""
        assert self._file is not None
        try:
            held = os.fstat(_HELD.fd(self._file))
            here: os.stat_result | None = os.stat(self.path)
        except FileNotFoundError:
            here = None
        except OSError:  # cannot look (permissions): the statement itself will say
            return None
        if here is not None and (here.st_dev, here.st_ino) == self._file:
            return None
        if held.st_nlink > 0:
            return JournalMovedError(self.path)
        return JournalMissingError(self.path, self._rescue())

    def _rescue(self) -> Path | None:
        """Copy what this connection still holds (the deleted file lives on while it is open)
        beside where the journal was, private like the journal; the copy's path, or None if
        it could not be made (its folder is gone too: a vanished folder is never made again).

        Found inside a write (a batch that reads the feed), the write is rolled back first:
        it could never be seen by anyone, and SQLite answers "locked" to a backup of a
        connection that is writing, for ever (``backup`` retries it in a loop, which hung
        the daemon). The copy holds what was committed, no more."""
        target = self.path.with_name(f"{self.path.name}.rescued-{os.getpid()}")
        try:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            os.close(os.open(target, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(target, 0o600)  # made by a process of the same pid long ago, maybe
            copy = sqlite3.connect(target)
            try:  # replaces all it held, under SQLite's own locks, never waiting for ever
                self.db.backup(copy, progress=_Deadline(RESCUE_WAIT).check)
            finally:
                copy.close()
        except (OSError, sqlite3.Error, JournalUnavailableError, JournalDamagedError):
            return None
        return target

    def read(self, sql: str, args: Any = ()) -> list[Any]:
        """Every row of one query, under the lock."""
        with self.lock:
            return self.db.execute(sql, args).fetchall()

    def rows(self, sql: str, args: Any, convert: Callable[[Any], T]) -> list[T]:
        """Each row of one query, :meth:`converted`."""
        return self.converted(self.read(sql, args), convert)

    def converted(self, rows: Iterable[Any], convert: Callable[[Any], T]) -> list[T]:
        """Each of ``rows`` converted; a row hitl-vault cannot have written (a status no one
        writes, params that are not a JSON object) is :class:`JournalDamagedError`, naming
        the problem: every value read from the journal comes through here."""
        try:
            return [convert(row) for row in rows]
        except _BAD_ROW as e:
            raise JournalDamagedError(self.path, f"a row hitl-vault did not write: {e}") from None

    def read_one(self, sql: str, args: Any = ()) -> Any:
        """The first row of one query (None when there is none), under the lock."""
        with self.lock:
            return self.db.execute(sql, args).fetchone()

    def wait_for_lock(self, seconds: float) -> None:
        with self.lock:
            self.db.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")

    def close(self) -> None:
        with self.lock:
            self.db.close()
            if self._file is not None:  # after the connection: see _HeldFiles
                _HELD.release(self._file)
                self._file = None

    @contextmanager
    def write(self, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """One atomic write: a transaction, or a savepoint inside :meth:`batch`.

        ``durable=False`` is for what can be found again from the notes (where a
        note is, its digest, a flag): the commit skips its fsync and becomes
        durable with the next durable one. A power cut may lose it, never reorder it.
        """
        with self.lock:
            if not self.batching or self._gone is not None:  # a batch's own look: see batch
                self.check_present()
            begin, commit, undo = (
                ("SAVEPOINT w", "RELEASE w", "ROLLBACK TO w; RELEASE w")
                if self.batching
                else ("BEGIN IMMEDIATE", "COMMIT", "ROLLBACK")
            )
            relaxed = not durable and not self.batching
            if relaxed:
                self.db.execute("PRAGMA synchronous=NORMAL")
            try:
                self.db.execute(begin)
                try:
                    yield self.db
                except BaseException:
                    if self.db.in_transaction:  # else found gone: _rescue rolled it back
                        for statement in undo.split("; "):
                            self.db.execute(statement)
                    raise
                self._commit(commit)
            finally:
                if relaxed:
                    self.db.execute("PRAGMA synchronous=FULL")

    def _commit(self, commit: str) -> None:
        try:
            self.db.execute(commit)
        except BaseException:  # a failed COMMIT may leave the transaction open
            if not self.batching:  # (a savepoint's batch undoes itself, whole)
                with contextlib.suppress(
                    sqlite3.Error, JournalUnavailableError, JournalDamagedError
                ):
                    self.db.execute("ROLLBACK")
            raise

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many writes, one durable commit: for a burst of decisions seen at once.

        Each write inside stays atomic on its own (a savepoint); none is durable,
        or visible to other processes, until the batch ends. Other threads wait.
        """
        with self.lock:
            if self.batching:
                yield
                return
            self.check_present()
            self.db.execute("BEGIN IMMEDIATE")
            self.batching = True
            try:
                yield
                if self._gone is not None:  # found gone inside (and rolled back): never commit
                    raise self._gone.with_traceback(None)
            except BaseException:
                self.batching = False
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
            self.batching = False
            self._commit("COMMIT")
