"""``hitl-vault posttool``: an agent's PostToolUse hook records how an approved call ended.

The gate hands an approved request to the agent as ``executing`` and leaves a mark in
``.hitl/handed/`` named by the call's identical-retry key (the same session, folder, tool
and input); the agent runs the tool, then its PostToolUse hook runs::

    hitl-vault --vault /abs/vault posttool --format claude

(for Claude Code on both ``PostToolUse`` and ``PostToolUseFailure``, matcher ``*``). It
reads the hook input (``tool_name``, ``tool_input``, ``session_id``, ``cwd`` and
``tool_response``, or ``error`` for a failure), finds the mark of exactly this call, and
records the request ``executed`` (a short result; never the tool's output, which may hold
secrets) or ``failed`` (the tool's error). A call without a mark (one the rules allowed
without recording it) costs a read of stdin and one ``stat``: no journal is opened, and
no sqlite3 or click is imported. With ``--server URL`` the gate client keeps the mark on
this machine and the outcome goes to ``POST /api/v1/requests/{id}/result``.

It never blocks the agent: it exits 0 (nothing to record, or recorded) or 1 with the
problem on stderr, never 2. A request whose outcome never comes is closed by the daemon
an hour after it was handed out (see :mod:`hitl_vault.daemon.timeouts`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .formats import HookFormat
from .hookio import BadInput, Call, Reply, read_object

HANDED = "handed"  # the folder of marks, under the vault's .hitl/ (or the client's state)
FAILURE_EVENTS = ("PostToolUseFailure",)
_ERROR_LIMIT = 300


def client_marks() -> Path:
    """Where ``gate --server`` keeps the marks of the calls the service handed out."""
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "state"
    )
    return Path(state) / "hitl-vault" / HANDED


def key_of(call: Call, params: dict[str, Any] | None = None) -> str:
    """The identical-retry key of ``call``, or of the same call with ``params`` instead."""
    if params is None:
        return call.key
    return Call(call.agent, call.session, call.tool, params, call.cwd, call.extra).key


def mark(folder: Path, keys: list[str], request_id: str) -> None:
    """Leave a mark per key that the request was handed out (a private folder)."""
    if not folder.is_dir():
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
    for key in dict.fromkeys(keys):
        tmp = folder / f".{key}.{os.getpid()}"
        tmp.write_text(request_id, encoding="utf-8")
        os.replace(tmp, folder / key)


def take_mark(folder: Path, call: Call) -> str | None:
    """The request the mark of ``call`` names (the mark is removed), or None if none."""
    path = folder / call.key
    try:
        with open(path, encoding="utf-8") as f:
            request_id = f.read(200).strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    return request_id or None


def outcome_of(data: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """(result, error) the hook input says of the call: one of the two is None."""
    from ..text import one_line

    event = data.get("hook_event_name")
    response = data.get("tool_response", data.get("tool_result"))
    said = data.get("error")
    if isinstance(response, dict):
        failed = response.get("success") is False or response.get("is_error") is True
        if failed or response.get("interrupted") is True:
            said = said or response.get("error") or response.get("stderr") or "the tool failed"
    if event in FAILURE_EVENTS or said:
        text = said if isinstance(said, str) and said.strip() else "the tool failed"
        if data.get("is_interrupt") is True:
            text = f"interrupted: {text}"
        return None, one_line(text, _ERROR_LIMIT)
    return f"run by the agent: {_size(response)}", None


def _size(response: Any) -> str:
    """What the tool answered, as a size (its text may hold secrets, so never the text)."""
    if isinstance(response, dict) and isinstance(response.get("stdout"), str):
        lines = len(response["stdout"].splitlines())
        return f"the tool succeeded ({lines} line{'s' if lines != 1 else ''} of output)"
    return "the tool succeeded"


def read(stdin: bytes, hook: HookFormat) -> tuple[Call, dict[str, Any]]:
    """The call the PostToolUse input describes (read as the gate read it before the call,
    so the two find the same key), and the input itself."""
    data = read_object(stdin)
    event = data.get("hook_event_name")
    if isinstance(event, str) and event.lower().startswith(("pre", "before")):
        raise BadInput(f"this is a {event!r} hook; hitl-vault posttool answers PostToolUse hooks")
    return hook.read(data, hook.agent), data


def run(vault: str | Path, hook: HookFormat, stdin: bytes) -> Reply:
    """(exit code, stdout, stderr): the whole of ``hitl-vault posttool`` on a vault."""
    from ..model import STATE_DIR

    try:
        call, data = read(stdin, hook)
    except BadInput as e:
        return 1, "", f"hitl-vault posttool: {e}\n"
    root = Path(vault).expanduser().absolute()
    with contextlib.suppress(OSError):
        root = root.resolve()
    request_id = take_mark(root / STATE_DIR / HANDED, call)
    if request_id is None:
        return 0, "", ""  # nothing the gate handed out: nothing to record
    result, error = outcome_of(data)
    from ..engine import Engine
    from ..errors import NotReportableError, VaultError

    try:
        with Engine(root) as engine:
            engine.done(request_id, result=result, error=error)
    except NotReportableError:
        return 0, "", ""  # reported already, or closed by the daemon's deadline
    except VaultError as e:
        return 1, "", f"hitl-vault posttool: could not record {request_id}: {e}\n"
    return 0, "", ""
