"""``Inbox/``: proposals dropped by agents or scripts in any language.

A proposal is a Markdown note whose frontmatter has ``action`` and ``params``
(optionally ``summary``, ``timeout``, ``requested_by``, and the structured context:
``reasoning``, ``confidence``, ``alternatives``, ``risk_factors``), or the same keys
as a ``.json`` file (which may add ``context``). A Markdown proposal's body text is the
request's context, for the approver. The frontmatter may be YAML between ``---`` lines, TOML between
``+++`` lines or JSON between a line ``{`` and a line ``}`` (the forms
python-frontmatter knows; see :func:`~hitl_vault.notes.file.parse_frontmatter`).
Each becomes a request (or an immediate decision, per the rules) and leaves the
Inbox. A broken proposal is listed under Needs attention and left exactly as it
is. The proposal's name and bytes are recorded with the request in one
transaction, so a crash between creating the request and removing the file
never turns one proposal into two requests.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..durable import read_file
from ..errors import DuplicateError, NoteError, VaultError
from ..model import INBOX_FOLDER, Request
from ..notes.file import load_json, split_frontmatter
from ..policy.pitch import make_pitch

if TYPE_CHECKING:
    from ..store import JournalStore

log = logging.getLogger(__name__)

PROPOSAL_KEYS = ("reasoning", "confidence", "alternatives", "risk_factors")
KEYS = ("action", "params", "summary", "timeout", "requested_by", "context", *PROPOSAL_KEYS)
_IGNORED_SUFFIXES = ("~", ".tmp", ".swp", ".swx", ".part", ".crdownload", ".hitl-tmp")


def _proposal(raw: bytes, where: str) -> dict[str, Any]:
    """The proposal's keys; a Markdown proposal's body text (stripped) is its ``context``."""
    body = ""
    if where.endswith(".json"):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError(where, "is not valid UTF-8", "save it as UTF-8") from None
        loaded = load_json(text, where)
        if not isinstance(loaded, dict):
            raise NoteError(where, "is not a JSON object", 'write {"action": ..., "params": {...}}')
        data: dict[str, Any] = loaded
    else:
        data, body = split_frontmatter(raw, where)
    if data.get("id"):
        raise NoteError(
            where,
            "has an id; a proposal must not (hitl-vault gives each request its id)",
            "remove the id line",
        )
    unknown = [k for k in data if k not in KEYS and k != "id"]
    if unknown:
        close = difflib.get_close_matches(unknown[0], KEYS, n=1)
        hint = f"did you mean {close[0]!r}?" if close else f"a proposal has only {', '.join(KEYS)}"
        raise NoteError(where, f"unknown key {unknown[0]!r}", hint)
    if not data.get("action"):
        raise NoteError(where, "has no action", "add a line `action: <name>`")
    for key in ("summary", "requested_by", "context"):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise NoteError(where, f"{key} is not text", f"quote the {key} value")
    if body.strip():
        if data.get("context") is not None:  # which one was meant? Neither is dropped.
            raise NoteError(
                where,
                "has both a context key and text below its frontmatter",
                "keep one: the text below the frontmatter is the context",
            )
        data["context"] = body.strip()
    return data


def _identity(path: Path, raw: bytes) -> str:
    """What tells one drop of a proposal from another: its name, bytes and file.

    A file left behind by a crash between its request and its removal keeps its
    inode and modification time, so it never becomes a second request; the same
    name and bytes dropped again later (a monthly cron job) are a new file.
    """
    st = path.stat()
    file = f"\0{st.st_ino}\0{st.st_mtime_ns}".encode()
    return hashlib.sha256(path.name.encode() + b"\0" + raw + file).hexdigest()


class Inbox:
    """Takes proposals from ``root``'s Inbox: ``submit`` (:meth:`Engine.submit`) makes each a
    request; the journal keeps which file became which request, and what needs attention."""

    def __init__(self, root: Path, journal: JournalStore, submit: Callable[..., Request]) -> None:
        self.root = root
        self.journal = journal
        self._submit = submit

    def _flag(self, where: str, message: str, now: datetime) -> None:
        if self.journal.flag(where, message, now):
            log.warning("needs attention: %s", message)

    def take(self, path: Path, now: datetime) -> list[Request]:
        """Turn one proposal file into a request and remove it; [] if there is nothing to take."""
        journal = self.journal
        name = path.name
        if (
            path.parent != self.root / INBOX_FOLDER
            or name.startswith((".", "_"))
            or name.endswith(_IGNORED_SUFFIXES)
        ):
            return []
        where = f"{INBOX_FOLDER}/{name}"  # as Needs attention names it
        if not path.exists() and not path.is_symlink():
            journal.unflag(where)
            return []
        if path.suffix not in (".md", ".json"):
            self._flag(where, f"{where}: not a proposal (use a .md or .json file)", now)
            return []
        try:
            raw = read_file(path, where)
            source = _identity(path, raw)
            taken = journal.proposal(source)
            if taken is not None:  # left behind by a crash after its request was made
                log.info("%s: already became request %s; removing it", where, taken)
                created = []
            else:
                data = _proposal(raw, where)
                pitch = make_pitch(**{key: data.get(key) for key in PROPOSAL_KEYS})
                request = self._submit(
                    data["action"],
                    data.get("params"),
                    summary=data.get("summary") or "",
                    timeout=data.get("timeout"),
                    requested_by=data.get("requested_by") or "inbox",
                    source=source,
                    context=data.get("context"),
                    pitch=pitch,
                )
                created = [request]
        except FileNotFoundError:  # taken by another process, or deleted, a moment ago
            journal.unflag(where)
            return []
        except DuplicateError:  # taken already (by another process, say)
            created = []
        except (NoteError, VaultError) as e:
            self._flag(where, str(e) if where in str(e) else f"{where}: {e}", now)
            return []
        journal.unflag(where)
        try:
            if read_file(path, where) == raw:
                path.unlink()
        except (FileNotFoundError, NoteError):
            pass  # gone already, or replaced by something else: that stays for a later look
        return created
