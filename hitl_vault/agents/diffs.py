"""What a file tool will change: a unified diff of an ``Edit``, ``MultiEdit``, ``Write`` or
``NotebookEdit`` call against the file as it is now, for the approver to read.

Made where the file can be read: by the gate on the agent's machine (``hitl-vault gate``,
and ``hitl-vault gate --server`` before it asks the service, which sends it as
``agent_diff``). The service never reads the agent's disk: it keeps what the agent's side
sent, labelled as such (:data:`hitl_vault.pitch.DIFF_BY`). Loaded only when a request is
made, never for an allowed call.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..pitch import Pitch, make_pitch

# The tools whose input says what a file will hold.
FILE_TOOLS = frozenset({"Edit", "MultiEdit", "Write", "NotebookEdit"})
# Larger files are not read for a diff: the approver gets the params alone.
MAX_FILE_BYTES = 2 << 20
# Lines of context around each change.
CONTEXT_LINES = 3


def call_diff(tool: str, params: Mapping[str, Any], cwd: Path) -> str | None:
    """The unified diff ``tool`` with ``params`` makes of its file (a path relative to
    ``cwd``), or None: not a file tool, no change, or input that says no change."""
    if tool not in FILE_TOOLS:
        return None
    key = "notebook_path" if tool == "NotebookEdit" else "file_path"
    shown = params.get(key)
    if not isinstance(shown, str) or not shown:
        return None
    old = _read(cwd / Path(shown).expanduser())
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
    """:func:`call_diff`, with a file that cannot be read (a folder, no permission, not
    text) giving no diff: the request is made all the same."""
    try:
        return call_diff(tool, params, cwd)
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None


def _read(path: Path) -> str | None:
    """The file's text, None if there is no such file; OSError/ValueError when it cannot
    be shown (too large, not UTF-8)."""
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ValueError(f"{path} is over {MAX_FILE_BYTES} bytes")
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        return None


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
