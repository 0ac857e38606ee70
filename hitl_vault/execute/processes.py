"""Running a program: its output kept to the tail as it streams, and stopping its work.

An action's program may print gigabytes: only the last ``TAIL_BYTES`` of its stdout
and stderr are kept, so the daemon's memory stays flat. Over its timeout its process
group is stopped, and so is every process it started that left the group: each one
carries ``HITL_REQUEST_ID=<id>`` in its environment, which is how it is found (on
Linux only, through ``/proc``). Importing it works everywhere.

On Windows the program gets a console process group of its own instead of a
session; over its timeout it gets ``CTRL_BREAK_EVENT``, then ``taskkill /T /F``
on its process tree. Escaped processes are not looked for there.
"""

from __future__ import annotations

import contextlib
import os
import select
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

KILL_GRACE = 2.0  # seconds between SIGTERM and SIGKILL for an action over its timeout
TAIL_BYTES = 64 * 1024  # bytes of stdout and of stderr kept as they stream (ample for the limits)
_PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # a write this size to a writable pipe never blocks
_READ_SIZE = 64 * 1024
_UTF8_CONTINUATION = bytes(range(0x80, 0xC0))  # bytes that only continue a character
_KILL_ROUNDS = 3  # scans for escaped processes to SIGKILL, should one start another as it dies
_TASKKILL_TIMEOUT = 30.0  # seconds taskkill may take to kill a process tree (Windows)

# How a program starts (subprocess.Popen's start_new_session and creationflags), so
# that its work can be stopped as a whole and a Ctrl-C in the daemon's terminal
# does not reach it.
if sys.platform == "win32":
    NEW_SESSION = False  # no sessions on Windows: a console process group instead
    CREATION_FLAGS = subprocess.CREATE_NEW_PROCESS_GROUP  # its pid is the group's id
else:
    NEW_SESSION = True  # a session of its own: its pid is its process group's id
    CREATION_FLAGS = 0


# The actions' programs this process runs now, so a leader that loses its lease can kill them.
_RUNNING: set[subprocess.Popen[bytes]] = set()
_RUNNING_LOCK = threading.Lock()


@contextlib.contextmanager
def tracked(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """While inside, ``proc`` is one of the programs :func:`kill_all` kills."""
    with _RUNNING_LOCK:
        _RUNNING.add(proc)
    try:
        yield
    finally:
        with _RUNNING_LOCK:
            _RUNNING.discard(proc)


def kill_all() -> int:
    """Kill the process group of every action's program this process runs now, at once
    (a leader whose lease is over must stop acting); how many there were."""
    with _RUNNING_LOCK:
        running = list(_RUNNING)
    for proc in running:
        if sys.platform == "win32":
            _kill_tree(proc)
        else:
            _signal_group(proc, signal.SIGKILL)
    return len(running)


class Tail:
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
        text = tail_text(data.decode("utf-8", errors="replace"), limit)
        if self._cut and not text.startswith("…"):
            text = "…" + text  # _tail saw no cut: the bytes kept were mostly blank
        return text


class Pipes:
    """A program's pipes, pumped on the calling thread: the request written, the output tailed.

    Like ``Popen.communicate`` (a selector, stdin in ``PIPE_BUF`` pieces, so a
    program that prints before it reads cannot deadlock us), but keeping only
    the tails of stdout and stderr and able to stop at a deadline and resume.
    """

    def __init__(self, proc: subprocess.Popen[bytes], stdin: bytes) -> None:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        self.out = Tail()
        self.err = Tail()
        self._stdin = proc.stdin
        self._pending = memoryview(stdin)
        self._selector = selectors.DefaultSelector()
        self._selector.register(proc.stdin, selectors.EVENT_WRITE)
        self._selector.register(proc.stdout, selectors.EVENT_READ, self.out)
        self._selector.register(proc.stderr, selectors.EVENT_READ, self.err)

    def __enter__(self) -> Pipes:
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

    def _read(self, pipe: Any, tail: Tail) -> None:
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


def settle(proc: subprocess.Popen[bytes], pipes: Pipes, deadline: float) -> bool:
    """Pump the pipes until they close and the program exits (True), or until ``deadline``."""
    if not pipes.pump(deadline):
        return False
    try:
        proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return True


def stop(proc: subprocess.Popen[bytes], pipes: Pipes, tag: bytes) -> int:
    """Stop an action over its timeout; return how many processes that left its group were hit.

    SIGTERM goes to the process group and to every process carrying ``tag`` that
    left it; after the grace, SIGKILL goes to whatever is left. Meanwhile stderr
    is still read, for the error.
    """
    pipes.stop_writing()
    if sys.platform == "win32":
        return _stop_tree(proc, pipes)
    escaped = _signal_escaped(tag, proc.pid, signal.SIGTERM)
    _signal_group(proc, signal.SIGTERM)
    grace = time.monotonic() + KILL_GRACE
    settled = settle(proc, pipes, grace)
    _wait_gone(escaped, tag, grace)
    _signal_group(proc, signal.SIGKILL)  # whatever ignored SIGTERM or still lingers
    for _ in range(_KILL_ROUNDS):  # again, in case one started another as it was killed
        killed = _signal_escaped(tag, proc.pid, signal.SIGKILL)
        if not killed:
            break
        escaped |= killed
    if not settled and not settle(proc, pipes, time.monotonic() + KILL_GRACE):
        # Something we could not find still holds our pipes: stop reading and move on.
        pipes.close()
        proc.wait()
    return len(escaped)


@contextlib.contextmanager
def watchdog(proc: subprocess.Popen[bytes], deadline: float, request_id: str) -> Iterator[None]:
    """While inside, a process of its own (``deadline.py``) terminates ``proc``'s process
    group once ``deadline`` (by ``time.monotonic()``) and one ``KILL_GRACE`` have passed,
    and kills it after another: a daemon that froze still cannot let its action outlive its
    timeout. Ended on the way out. Only where process groups and /proc exist (Linux)."""
    if sys.platform != "linux":
        yield
        return
    script = os.path.join(os.path.dirname(__file__), "deadline.py")
    argv = [sys.executable, "-I", script, str(proc.pid), repr(deadline + KILL_GRACE)]
    try:
        guard = subprocess.Popen(
            [*argv, repr(KILL_GRACE), request_id],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # neither a Ctrl-C nor the group's own end reaches it
        )
    except OSError:  # the daemon's own timeout still holds while the daemon runs
        yield
        return
    try:
        yield
    finally:
        guard.kill()
        guard.wait()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if sys.platform == "win32":  # no process groups to signal: the process itself (stop()
        proc.terminate()  # uses _stop_tree there, which also ends what it started)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):  # the group is gone
        os.killpg(proc.pid, sig)  # the pgid is the pid: start_new_session made it a leader


def _stop_tree(proc: subprocess.Popen[bytes], pipes: Pipes) -> int:
    """Windows: stop an action over its timeout; return 0 (escaped processes are not sought).

    CTRL_BREAK_EVENT goes to its console process group; if it still runs after the
    grace, ``taskkill /T /F`` kills it and every process it started that still runs.
    CTRL_BREAK_EVENT needs a console shared with the daemon, so it may not arrive
    (best effort); taskkill does not. Meanwhile stderr is still read, for the error.
    """
    if sys.platform == "win32":  # CTRL_BREAK_EVENT exists only there
        with contextlib.suppress(OSError):  # gone, or no console to send it through
            proc.send_signal(signal.CTRL_BREAK_EVENT)
    if settle(proc, pipes, time.monotonic() + KILL_GRACE):
        return 0
    if proc.poll() is None:  # once it is gone, taskkill can no longer find its tree
        _kill_tree(proc)
    if not settle(proc, pipes, time.monotonic() + KILL_GRACE):
        # Something we could not find still holds our pipes: stop reading and move on.
        pipes.close()
        proc.wait()
    return 0


def _kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """``taskkill /T /F``: kill ``proc`` and the processes it started, by force (Windows)."""
    system = os.environ.get("SYSTEMROOT", r"C:\Windows")
    taskkill = os.path.join(system, "System32", "taskkill.exe")  # not whatever PATH finds
    with contextlib.suppress(OSError, subprocess.SubprocessError):  # missing, hung: see below
        subprocess.run(
            [taskkill, "/T", "/F", "/PID", str(proc.pid)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=_TASKKILL_TIMEOUT,
            check=False,
        )
    if proc.poll() is None:  # taskkill failed: at least the program itself (TerminateProcess)
        with contextlib.suppress(OSError):
            proc.kill()


def request_tag(request_id: str) -> bytes:
    """The environ entry, as /proc/<pid>/environ has it, of every process the action starts."""
    return b"HITL_REQUEST_ID=" + os.fsencode(request_id) + b"\0"


def _signal_escaped(tag: bytes, group: int, sig: signal.Signals) -> set[int]:
    """Send ``sig`` to the processes carrying ``tag`` outside process group ``group``.

    Returns their pids; none where there is no /proc.
    """
    if sys.platform != "linux":
        # Finding escaped processes reads /proc/<pid>/environ, which only Linux has
        # (macOS and the BSDs have no /proc, or one without environ; Windows has
        # neither it nor os.getpgid): elsewhere only the process group is stopped.
        return set()
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


def tail_text(text: str, limit: int) -> str:
    """The stripped end of ``text``, at most ``limit`` characters, marked with … when cut."""
    text = text.strip()
    if len(text) <= limit:
        return text
    return "…" + text[-(limit - 1) :].lstrip()
