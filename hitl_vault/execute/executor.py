"""Carry out an approved request's action and say how it went.

``run`` executors get an argv, never a shell: the request reaches the program
only as JSON on stdin, so a param such as ``$(rm -rf ~)`` is just a string.
``python`` executors (``"package.module:function"``) are called with the Request.
Whatever the action does, a failure comes back as an :class:`Outcome` with
``ok=False``, never as an exception. Nothing here knows of folders or notes.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..model import Request
from ..policy.pyrules import untrusted
from ..policy.rules import ActionSpec
from ..times import format_duration
from .processes import (
    CREATION_FLAGS,
    NEW_SESSION,
    Pipes,
    Tail,
    request_tag,
    settle,
    stop,
    tail_text,
    tracked,
    watchdog,
)

log = logging.getLogger(__name__)

RESULT_LIMIT = 4000  # characters of stdout kept as the result (the end, where summaries go)
ERROR_LIMIT = 1000  # characters of stderr (or an exception message) kept in the error
RUN_FIX = "fix the run: argv in hitl-vault.yaml"


# A python executor: a plain or async function of the request; its return value is the result.
Handler = Callable[[Request], object]


@dataclass(frozen=True)
class Outcome:
    """How one run of an action went: ``ok`` means executed, otherwise failed with ``error``."""

    ok: bool
    result: str | None
    error: str | None
    seconds: float


def payload(request: Request) -> dict[str, object]:
    """The JSON a ``run`` executor reads on stdin; ``idempotency_key`` is the request id."""
    return {
        "id": request.id,
        "action": request.action,
        "params": _plain(request.params),
        "decided_by": request.decided_by,
        "reason": request.reason,
        "idempotency_key": request.id,
    }


def execute(
    spec: ActionSpec | None,
    request: Request,
    *,
    cwd: Path,
    handler: Handler | None = None,
    watched: bool = False,
) -> Outcome:
    """Run the request's action: an in-process ``handler`` first, else the spec's run or python.
    ``watched``: a ``run:`` program's timeout is kept by a process of its own as well.

    Raises ValueError only when there is nothing to run at all (a bug in the caller).
    """
    if handler is not None:
        return run_handler(handler, request)
    if spec is None:
        raise ValueError(f"request {request.id}: no executor for action {request.action!r}")
    if spec.run is not None:
        timeout = spec.timeout.total_seconds()
        return run_command(spec.run, request, cwd=cwd, timeout=timeout, watched=watched)
    if spec.python is not None:
        started = time.monotonic()
        try:
            loaded = load_handler(spec.python)
        except Exception as e:  # import-time errors of the user's module are its failure, too
            return _failed(_exception_text(e), started)
        return run_handler(loaded, request)
    fix = "give it one of them under actions: in hitl-vault.yaml"
    return _failed(f"action {spec.name} has neither run nor python ({fix})", time.monotonic())


# --- run: a program with the request on stdin --------------------------------------------


def run_command(
    argv: Sequence[str],
    request: Request,
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    watched: bool = False,
) -> Outcome:
    """Run ``argv`` in ``cwd`` with the request as JSON on stdin, never through a shell.

    The program starts in a session of its own (on Windows, a process group of
    its own), so a Ctrl-C in the daemon's terminal does not reach it. Only the
    tails of its stdout and stderr are kept, so memory stays flat whatever it
    prints. Over ``timeout`` its whole process group is terminated (then killed
    after a short grace), and so is every process it started that left the group
    (found by ``HITL_REQUEST_ID``). ``watched``: a process outside this one ends the
    group too, should this one freeze (:func:`~.processes.watchdog`; a shared journal).
    """
    started = time.monotonic()
    deadline = started + timeout
    program = str(argv[0]) if argv else ""
    # Set last, so every process the action starts carries the tag that finds it on a timeout.
    environment = {**os.environ, **(env or {}), "HITL_REQUEST_ID": request.id}
    try:
        if not argv:
            raise ValueError("the argv is empty")
        stdin = json.dumps(payload(request)).encode("ascii")
        log.debug("%s: running %s in %s", request.id, list(argv), cwd)
        proc = subprocess.Popen(
            list(argv),
            cwd=cwd,
            env=environment,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            shell=False,
            start_new_session=NEW_SESSION,  # True: a session (and process group) of its own
            creationflags=CREATION_FLAGS,  # 0, but a new process group on Windows
        )
    except OSError as e:
        where = f"in {cwd}" if e.filename is not None and str(e.filename) == str(cwd) else program
        return _failed(f"cannot start {where}: {e.strerror or e} ({RUN_FIX})", started)
    except (ValueError, TypeError) as e:
        return _failed(f"cannot start {program or 'the action'}: {e} ({RUN_FIX})", started)

    guarded = watchdog(proc, deadline, request.id) if watched else contextlib.nullcontext()
    with tracked(proc), guarded, Pipes(proc, stdin) as pipes:
        if not settle(proc, pipes, deadline):
            exited = proc.poll() is not None
            escaped = stop(proc, pipes, request_tag(request.id))
            return _failed(_with_tail(_timeout_text(timeout, exited, escaped), pipes.err), started)

    if proc.returncode == 0:
        result = pipes.out.text(RESULT_LIMIT)
        return Outcome(ok=True, result=result, error=None, seconds=time.monotonic() - started)
    return _failed(_with_tail(_exit_text(proc.returncode), pipes.err), started)


def _timeout_text(timeout: float, exited: bool, escaped: int) -> str:
    """Why a run over its timeout failed, not hiding that some of its work may go on."""
    why = f"timed out after {_seconds_text(timeout)}"
    if exited:
        why += " (the program exited, but something it started kept stdout or stderr open)"
    why += "; work it started may still be running"
    if escaped:
        noun = "process" if escaped == 1 else "processes"
        why += f" (killed {escaped} {noun} that had left its process group)"
    return why


def _exit_text(returncode: int) -> str:
    if returncode >= 0:
        return f"exit {returncode}"
    try:
        return f"killed by signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"killed by signal {-returncode}"


def _with_tail(why: str, stderr: Tail) -> str:
    tail = stderr.text(ERROR_LIMIT)
    return f"{why}: {tail}" if tail else why


def _seconds_text(seconds: float) -> str:
    """60 -> "60s", 1.5 -> "1.5s", 300 -> "5m", 7200 -> "2h" (as hitl-vault.yaml writes them)."""
    if seconds >= 120 and seconds == int(seconds):
        return format_duration(timedelta(seconds=seconds))
    return f"{seconds:g}s"


def _plain(value: Any) -> Any:
    """Params as plain JSON: mappings and sequences copied, dates in ISO 8601, the rest str."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(v) for v in value]
    if isinstance(value, date):  # datetime too
        return value.isoformat()
    return str(value)


# --- python: a function called with the request ------------------------------------------


def run_handler(handler: Handler, request: Request) -> Outcome:
    """Call ``handler(request)``; an async handler is run to completion.

    Its return value becomes the result (None becomes ""); an Exception becomes
    the error. KeyboardInterrupt and SystemExit are not caught.
    """
    started = time.monotonic()
    try:
        value = handler(request)
        if inspect.iscoroutine(value):
            value = _run_coroutine(value)
        result = "" if value is None else tail_text(str(value), RESULT_LIMIT)
    except Exception as e:
        log.warning("%s: the %s handler raised", request.id, request.action, exc_info=True)
        return _failed(_exception_text(e), started)
    return Outcome(ok=True, result=result, error=None, seconds=time.monotonic() - started)


def _run_coroutine(coro: Any) -> object:
    """Run an async handler's coroutine; on a thread of its own if this one has a running loop."""
    import asyncio  # here: only an async handler needs it, and a daemon starts without it

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="hitl-async-handler") as pool:
        return pool.submit(asyncio.run, coro).result()


def _exception_text(e: BaseException) -> str:
    if isinstance(e, UsageError):
        return str(e)
    message = str(e).strip()
    name = type(e).__name__
    return f"{name}: {tail_text(message, ERROR_LIMIT)}" if message else name


def load_handler(target: str) -> Handler:
    """The function named by ``"package.module:function"`` (``function`` may be dotted).

    Raises UsageError naming the target and the fix when it cannot be imported,
    found, or called.
    """
    argument = f"python: {target!r}"
    module_name, sep, attr_path = str(target).partition(":")
    module_name, attr_path = module_name.strip(), attr_path.strip()
    if not sep or not module_name or not attr_path:
        raise UsageError(
            argument, "is not a function reference", 'write it as "package.module:function"'
        )
    problem = untrusted(module_name)  # run only what no one else may change
    if problem is not None:
        raise UsageError(argument, problem, "make the module and its folder yours alone")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as e:
        missing = getattr(e, "name", None) if isinstance(e, ModuleNotFoundError) else None
        if missing and (module_name + ".").startswith(missing + "."):
            problem = f"no module named {missing!r}"
            fix = "check the module name, and that the daemon's Python can import it"
        else:  # the module is there, but its own import failed
            problem = f"importing {module_name} failed: {_exception_text(e)}"
            fix = "fix the module (or install what it needs) so it imports cleanly"
        raise UsageError(argument, problem, fix) from e
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise UsageError(
                argument,
                f"{module_name} has no attribute {attr_path!r}",
                "check the function name after the ':'",
            ) from e
    if not callable(obj):
        raise UsageError(
            argument,
            f"{module_name}.{attr_path} is a {type(obj).__name__}, not a function",
            "point it at a function that takes the request",
        )
    handler: Handler = obj
    return handler


def _failed(error: str, started: float) -> Outcome:
    return Outcome(ok=False, result=None, error=error, seconds=time.monotonic() - started)
