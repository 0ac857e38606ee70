"""What a file tool will change: a unified diff of an ``Edit``, ``MultiEdit``, ``Write`` or
``NotebookEdit`` call against the file as it is now, for the approver to read.

Made where the file can be read: by the gate on the agent's machine (``hitl-vault gate``,
and ``hitl-vault gate --server`` before it asks the service, which sends it as
``agent_diff``). The service never reads the agent's disk: it keeps what the agent's side
sent, labelled as such (:data:`hitl_vault.policy.pitch.DIFF_BY`). Loaded only when a request is
made, never for an allowed call.

Nothing is read of a secrets path (:data:`SECRETS_PATH`, the pattern of the template's
``agent-secrets`` rule) or of anything but a regular file (a FIFO, a device: opened without
waiting, and at most :data:`MAX_FILE_BYTES` + 1 bytes read); the diff then says
``no diff: <why>``. A call the rules block keeps no diff (see
:func:`hitl_vault.policy.intake.ask`): only an ask has a human to show it to.
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..policy.pitch import Pitch, make_pitch

# The tools whose input says what a file will hold.
FILE_TOOLS = frozenset({"Edit", "MultiEdit", "Write", "NotebookEdit"})
# Larger files are not read for a diff: the approver gets the params alone.
MAX_FILE_BYTES = 2 << 20
# Lines of context around each change.
CONTEXT_LINES = 3
# The secrets paths no diff is made of: the ``path:`` of the template's ``agent-secrets``
# rule is ``re:`` and this (a test keeps the two the same), matched against the absolute
# path as named and as it lands once links and ``..`` are followed.
SECRETS_PATH = (
    r"(?i).*/(\.ssh|\.aws|\.gnupg|\.kube|\.docker|\.config/gcloud|\.password-store)(/.*)?"
    r"|.*/(\.env(\.[^/]*)?|\.netrc|\.pgpass|\.git-credentials|\.npmrc|\.pypirc"
    r"|id_(rsa|dsa|ecdsa|ed25519)[^/]*|[^/]*\.(pem|key|p12|pfx|kdbx))"
    r"|/etc/(shadow|gshadow|sudoers(\.d)?|master\.passwd)(/.*)?"
)
_SECRETS = re.compile(SECRETS_PATH)


class NoDiff(Exception):
    """Why no diff is made of a file (its path is a secret, it is not a regular file, it
    is too large or not text): shown as ``no diff: <why>``, never its content."""


def call_diff(tool: str, params: Mapping[str, Any], cwd: Path) -> str | None:
    """The unified diff ``tool`` with ``params`` makes of its file (a path relative to
    ``cwd``), or None: not a file tool, no change, or input that says no change.
    :class:`NoDiff` where the file must not or cannot be shown."""
    if tool not in FILE_TOOLS:
        return None
    key = "notebook_path" if tool == "NotebookEdit" else "file_path"
    shown = params.get(key)
    if not isinstance(shown, str) or not shown:
        return None
    old = _read(os.path.join(cwd, os.path.expanduser(shown)))
    if tool == "Write":
        new = params.get("content")
        return _unified(old, new, shown) if isinstance(new, str) else None
    if tool == "NotebookEdit":
        return _notebook(old, params, shown)
    edits = [params] if tool == "Edit" else params.get("edits")
    if not isinstance(edits, list):
        return None
    return _edited(old, edits, shown)


def gate_pitch(tool: str, params: Mapping[str, Any], cwd: Path) -> Pitch | None:
    """The diff as the local gate made it, kept with the request (``diff_by: gate``)."""
    return make_pitch(diff=_safe_diff(tool, params, cwd), diff_by="gate")


def agent_pitch(sent: object) -> Pitch | None:
    """The diff the agent's side sent with a gate call (``diff_by: agent``); anything but
    text is dropped: the call is judged all the same, without a diff."""
    return make_pitch(diff=sent, diff_by="agent") if isinstance(sent, str) else None


def _safe_diff(tool: str, params: Mapping[str, Any], cwd: Path) -> str | None:
    """:func:`call_diff`, with a file that must not or cannot be read (a secret, a FIFO,
    a folder, no permission, not text) giving ``no diff: <why>``: the request is made all
    the same."""
    try:
        return call_diff(tool, params, cwd)
    except NoDiff as e:
        return f"no diff: {e}"
    except UnicodeDecodeError:
        return "no diff: the file is not UTF-8 text"
    except OSError as e:
        return f"no diff: the file cannot be read ({e.strerror or type(e).__name__})"
    except (ValueError, RecursionError):
        return "no diff: the notebook cannot be read"


def secret_path(path: str) -> bool:
    """Whether the absolute ``path`` (as named or as it lands) is a secrets path."""
    return _SECRETS.fullmatch(path) is not None


def _read(named: str) -> str | None:
    """The text of the regular file at ``named`` (absolute), None if there is no such
    file; :class:`NoDiff` for a secrets path or anything else, OSError if it cannot be
    opened, UnicodeDecodeError if it is not text. Never waits: a FIFO or a device is
    opened without blocking and refused before a byte is read."""
    lands = os.path.realpath(named)  # links and ".." followed
    if secret_path(os.path.normpath(named)) or secret_path(lands):
        raise NoDiff("a secrets path (the agent-secrets rule's list) is never shown")
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NOCTTY", 0)
    try:
        fd = os.open(lands, flags)  # O_NOFOLLOW: a link put there since is refused
    except FileNotFoundError:
        return None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise NoDiff("not a regular file")
        data = f.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise NoDiff(f"the file is over {MAX_FILE_BYTES:,} bytes")
    return data.decode("utf-8")


def _unified(old: str | None, new: str, shown: str) -> str | None:
    """The diff from ``old`` (None: a new file, so every line is added) to ``new``."""
    import difflib  # only once there is a diff to make

    before = [] if old is None else old.splitlines()
    lines = list(
        difflib.unified_diff(
            before,
            new.splitlines(),
            "/dev/null" if old is None else f"a/{shown}",
            f"b/{shown}",
            n=CONTEXT_LINES,
            lineterm="",
        )
    )
    return "\n".join(lines) if lines else None


def _edited(old: str | None, edits: list[Any], shown: str) -> str | None:
    """Each edit applied in order, as the tool applies them (``replace_all``: every
    occurrence, else the first); where ``old_string`` is not in the file as it is now,
    the diff is of the strings alone, and its header says so."""
    text = old
    for edit in edits:
        if not isinstance(edit, Mapping):
            return None
        before, after = edit.get("old_string"), edit.get("new_string")
        if not isinstance(before, str) or not isinstance(after, str):
            return None
        if text is None and not before:  # a new file, its content as the new string
            text = after
            continue
        if text is None or not before or before not in text:
            return _fragments(edits, shown)
        text = text.replace(before, after, -1 if edit.get("replace_all") is True else 1)
    return _unified(old, text or "", shown)


def _fragments(edits: list[Any], shown: str) -> str | None:
    """old_string → new_string of each edit, for a file that does not hold them."""
    lines = [f"--- a/{shown} (old_string not found in the file as it is now)", f"+++ b/{shown}"]
    for edit in edits:
        if isinstance(edit, Mapping):
            lines.append("@@ edit @@")
            lines += [f"-{line}" for line in str(edit.get("old_string", "")).splitlines()]
            lines += [f"+{line}" for line in str(edit.get("new_string", "")).splitlines()]
    return "\n".join(lines)


def _notebook(old: str | None, params: Mapping[str, Any], shown: str) -> str | None:
    """The diff of the one cell a NotebookEdit replaces, inserts or deletes."""
    source = params.get("new_source")
    mode = params.get("edit_mode") or "replace"
    cell_id = params.get("cell_id")
    loaded = json.loads(old) if old is not None else {}
    cells = loaded.get("cells") if isinstance(loaded, dict) else None
    cells = cells if isinstance(cells, list) else []
    found = next(
        (c for c in cells if isinstance(c, dict) and cell_id and c.get("id") == cell_id), None
    )
    was = _cell_source(found) if found is not None and mode != "insert" else None
    now = source if isinstance(source, str) and mode != "delete" else ""
    where = f"{shown} cell {cell_id}" if cell_id else f"{shown} new cell"
    if mode == "delete":
        return _unified(was or "", "", where)
    return _unified(was, now, where)


def _cell_source(cell: Mapping[str, Any]) -> str:
    source = cell.get("source", "")
    return "".join(map(str, source)) if isinstance(source, list) else str(source)
