"""Carry out an approved request's action and say how it went.

``run`` executors get an argv, never a shell: the request reaches the program
only as JSON on stdin, so a param such as ``$(rm -rf ~)`` is just a string.
``python`` executors (``"package.module:function"``) are called with the Request.
Whatever the action does, a failure comes back as an :class:`Outcome` with
``ok=False``, never as an exception. Nothing here knows of folders or notes.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import json
import logging
import os
import select
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from .errors import UsageError
from .model import ActionSpec, Request, format_duration

log = logging.getLogger("hitl_vault.executor")

RESULT_LIMIT = 4000  # characters of stdout kept as the result (the end, where summaries go)
ERROR_LIMIT = 1000  # characters of stderr (or an exception message) kept in the error
KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for an action over its timeout
TAIL_BYTES = 64 * 1024  # bytes of stdout and of stderr kept as they stream (ample for the limits)
RUN_FIX = "fix the run: argv in hitl-vault.yaml"

_PIPE_BUF = select.PIPE_BUF  # a write of this much to a pipe that polls writable never blocks
_READ_SIZE = 64 * 1024
_KILL_ROUNDS = 3  # scans for escaped processes to SIGKILL, should one start another as it dies
_UTF8_CONTINUATION = bytes(range(0x80, 0xC0))

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
    spec: ActionSpec | None, request: Request, *, cwd: Path, handler: Handler | None = None
) -> Outcome:
    """Run the request's action: an in-process ``handler`` first, else the spec's run or python.

    Raises ValueError only when there is nothing to run at all (a bug in the caller).
    """
    if handler is not None:
        return run_handler(handler, request)
    if spec is None:
        raise ValueError(f"request {request.id}: no executor for action {request.action!r}")
    if spec.run is not None:
        return run_command(spec.run, request, cwd=cwd, timeout=spec.timeout.total_seconds())
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
) -> Outcome:
    """Run ``argv`` in ``cwd`` with the request as JSON on stdin, never through a shell.

    The program starts in a session of its own, so a Ctrl-C in the daemon's
    terminal does not reach it. Only the tails of its stdout and stderr are kept,
    so memory stays flat whatever it prints. Over ``timeout`` its whole process
    group is terminated (then killed after a short grace), and so is every process
    it started that left the group (found by ``HITL_REQUEST_ID``).
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
            start_new_session=True,
        )
    except OSError as e:
        where = f"in {cwd}" if e.filename is not None and str(e.filename) == str(cwd) else program
        return _failed(f"cannot start {where}: {e.strerror or e} ({RUN_FIX})", started)
    except (ValueError, TypeError) as e:
        return _failed(f"cannot start {program or 'the action'}: {e} ({RUN_FIX})", started)

    with _Pipes(proc, stdin) as pipes:
        if not _settle(proc, pipes, deadline):
            exited = proc.poll() is not None
            escaped = _stop(proc, pipes, _tag(request.id))
            return _failed(_with_tail(_timeout_text(timeout, exited, escaped), pipes.err), started)

    if proc.returncode == 0:
        result = pipes.out.text(RESULT_LIMIT)
        return Outcome(ok=True, result=result, error=None, seconds=time.monotonic() - started)
    return _failed(_with_tail(_exit_text(proc.returncode), pipes.err), started)


class _Tail:
    """The last ``TAIL_BYTES`` of one output stream, however much went through it."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._cut = False

    def add(self, chunk: bytes) -> None:
        """Append ``chunk``, dropping the oldest bytes beyond ``TAIL_BYTES``."""
        self._data += chunk
        excess = len(self._data) - TAIL_BYTES
        if excess > 0:
            del self._data[:excess]
            self._cut = True

    def text(self, limit: int) -> str:
        """The stripped end as text, at most ``limit`` characters, marked with … when cut."""
        data = bytes(self._data)
        if self._cut:  # the first bytes may be the rest of a character that was dropped
            data = data.lstrip(_UTF8_CONTINUATION)
        text = _tail(data.decode("utf-8", errors="replace"), limit)
        if self._cut and not text.startswith("…"):
            text = "…" + text  # _tail saw no cut: the bytes kept were mostly blank
        return text


class _Pipes:
    """A program's pipes, pumped on the calling thread: the request written, the output tailed.

    Like ``Popen.communicate`` (a selector, stdin in ``PIPE_BUF`` pieces, so a
    program that prints before it reads cannot deadlock us), but keeping only
    the tails of stdout and stderr and able to stop at a deadline and resume.
    """

    def __init__(self, proc: subprocess.Popen[bytes], stdin: bytes) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.out = _Tail()
        self.err = _Tail()
        self._stdin = proc.stdin
        self._pending = memoryview(stdin)
        self._selector = selectors.DefaultSelector()
        self._selector.register(proc.stdin, selectors.EVENT_WRITE)
        self._selector.register(proc.stdout, selectors.EVENT_READ, self.out)
        self._selector.register(proc.stderr, selectors.EVENT_READ, self.err)

    def __enter__(self) -> _Pipes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pump(self, deadline: float) -> bool:
        """Write and read until stdout and stderr are closed (True) or until ``deadline``."""
        while self._selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            for key, _ in self._selector.select(remaining):
                if key.data is None:
                    self._write()
                else:
                    self._read(key.fileobj, key.data)
        return True

    def stop_writing(self) -> None:
        """Give up on the rest of the request: the program gets end-of-file on stdin."""
        self._finish(self._stdin)

    def close(self) -> None:
        """Close every pipe still open and stop watching them."""
        for key in list(self._selector.get_map().values()):
            self._finish(key.fileobj)
        self._selector.close()

    def _write(self) -> None:
        try:
            written = os.write(self._stdin.fileno(), self._pending[:_PIPE_BUF])
        except BrokenPipeError:  # the program exited or closed stdin: what it read is its input
            written = len(self._pending)
        self._pending = self._pending[written:]
        if not self._pending:
            self._finish(self._stdin)

    def _read(self, pipe: Any, tail: _Tail) -> None:
        chunk = os.read(pipe.fileno(), _READ_SIZE)
        if chunk:
            tail.add(chunk)
        else:
            self._finish(pipe)

    def _finish(self, pipe: Any) -> None:
        if pipe.closed:
            return
        self._selector.unregister(pipe)
        with contextlib.suppress(OSError):  # a broken stdin may fail to flush: nothing is lost
            pipe.close()


def _settle(proc: subprocess.Popen[bytes], pipes: _Pipes, deadline: float) -> bool:
    """Pump the pipes until they close and the program exits (True), or until ``deadline``."""
    if not pipes.pump(deadline):
        return False
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def _stop(proc: subprocess.Popen[bytes], pipes: _Pipes, tag: bytes) -> int:
    """Stop an action over its timeout; return how many processes that left its group were hit.

    SIGTERM goes to the process group and to every process carrying ``tag`` that
    left it; after the grace, SIGKILL goes to whatever is left. Meanwhile stderr
    is still read, for the error.
    """
    pipes.stop_writing()
    escaped = _signal_escaped(tag, proc.pid, signal.SIGTERM)
    _signal_group(proc, signal.SIGTERM)
    grace = time.monotonic() + KILL_GRACE
    settled = _settle(proc, pipes, grace)
    _wait_gone(escaped, tag, grace)
    _signal_group(proc, signal.SIGKILL)  # whatever ignored SIGTERM or still lingers
    for _ in range(_KILL_ROUNDS):  # again, in case one started another as it was killed
        killed = _signal_escaped(tag, proc.pid, signal.SIGKILL)
        if not killed:
            break
        escaped |= killed
    if not settled and not _settle(proc, pipes, time.monotonic() + KILL_GRACE):
        # Something we could not find still holds our pipes: stop reading and move on.
        pipes.close()
        proc.wait()
    return len(escaped)


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(proc.pid, sig)  # the pgid is the pid: start_new_session made it a leader


def _tag(request_id: str) -> bytes:
    """The environ entry, as /proc/<pid>/environ has it, of every process the action starts."""
    return b"HITL_REQUEST_ID=" + os.fsencode(request_id) + b"\0"


def _signal_escaped(tag: bytes, group: int, sig: signal.Signals) -> set[int]:
    """Send ``sig`` to the processes carrying ``tag`` outside process group ``group``.

    Returns their pids; none where there is no /proc.
    """
    hit: set[int] = set()
    for pid in _tagged_pids(tag):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getpgid(pid) != group:
                os.kill(pid, sig)
                hit.add(pid)
    return hit


def _tagged_pids(tag: bytes) -> list[int]:
    """The pids, other than ours, whose environment holds the entry ``tag``."""
    try:
        names = os.listdir("/proc")
    except OSError:
        return []
    pids = (int(name) for name in names if name.isdigit())
    return [pid for pid in pids if pid != os.getpid() and _carries(pid, tag)]


def _carries(pid: int, tag: bytes) -> bool:
    """Whether process ``pid`` runs with the entry ``tag`` (a zombie's environment is empty)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:  # gone, or not ours to read
        return False
    return (b"\0" + environ).find(b"\0" + tag) >= 0


def _wait_gone(pids: set[int], tag: bytes, deadline: float) -> None:
    """Wait until none of ``pids`` runs with ``tag`` any more, or until ``deadline``."""
    while any(_carries(pid, tag) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


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


def _with_tail(why: str, stderr: _Tail) -> str:
    tail = stderr.text(ERROR_LIMIT)
    return f"{why}: {tail}" if tail else why


def _tail(text: str, limit: int) -> str:
    """The stripped end of ``text``, at most ``limit`` characters, marked with … when cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :].lstrip()


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
        result = "" if value is None else _tail(str(value), RESULT_LIMIT)
    except Exception as e:
        log.warning("%s: the %s handler raised", request.id, request.action, exc_info=True)
        return _failed(_exception_text(e), started)
    return Outcome(ok=True, result=result, error=None, seconds=time.monotonic() - started)


def _run_coroutine(coro: Any) -> object:
    """Run an async handler's coroutine; on a thread of its own if this one has a running loop."""
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
    return f"{name}: {_tail(message, ERROR_LIMIT)}" if message else name


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
