"""run executors that print without end, feed on big requests, or leave their process group."""

from __future__ import annotations

import json
import os
import pickle
import secrets
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from hitl_vault.execute.executor import ERROR_LIMIT, RESULT_LIMIT, payload, run_command
from hitl_vault.model import Request

from .test_executor import alive, make_request, script, wait_for

pytestmark = pytest.mark.process  # nearly every test here starts a real process

PY = sys.executable

# Runs run_command in a fresh Python, so its peak memory is measured apart from pytest's.
DRIVER = """
import json, pickle, resource, sys
from pathlib import Path
from hitl_vault.execute.executor import run_command

request = pickle.loads(Path(sys.argv[1]).read_bytes())
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = run_command([sys.executable, sys.argv[2]], request, cwd=Path(sys.argv[3]), timeout=60)
grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
print(json.dumps({"ok": outcome.ok, "result": outcome.result, "error": outcome.error,
                  "grew_kib": grew}))
"""


def fresh_request(**changes: Any) -> Request:
    """A request with an id of its own, so no other test's processes carry its tag."""
    return make_request(id=f"20240101T120000Z-pay-{secrets.token_hex(4)}", **changes)


def run_measured(tmp_path: Path, action: Path) -> dict[str, Any]:
    """Run ``action`` through run_command in a child Python; its outcome and peak RSS growth."""
    request_file = tmp_path / "request.pickle"
    request_file.write_bytes(pickle.dumps(fresh_request()))
    driver = script(tmp_path, DRIVER, name="driver.py")
    done = subprocess.run(
        [PY, str(driver), str(request_file), str(action), str(tmp_path)],
        capture_output=True,
        timeout=120,
        check=True,
    )
    outcome: dict[str, Any] = json.loads(done.stdout)
    return outcome


def test_huge_stdout_keeps_only_its_end_in_flat_memory(tmp_path: Path) -> None:
    """300 MiB on stdout gives the last 4000 chars as the result, and memory stays flat."""
    loud = script(
        tmp_path,
        """
        import sys
        chunk = b"progress line\\n" * ((1 << 20) // 14)
        for _ in range(300):
            sys.stdout.buffer.write(chunk)
            sys.stderr.write("warning: still going\\n")
        print("paid INV-7, 300 MiB of log above")
        """,
    )
    outcome = run_measured(tmp_path, loud)
    assert outcome["ok"], outcome["error"]
    result = outcome["result"]
    assert result.endswith("progress line\npaid INV-7, 300 MiB of log above")
    assert len(result) == RESULT_LIMIT and result.startswith("…")
    assert outcome["grew_kib"] < 50 * 1024, f"peak RSS grew {outcome['grew_kib']} KiB"


def test_huge_stderr_of_a_failure_keeps_only_its_end(tmp_path: Path) -> None:
    """A failure after 200 MiB of stderr reports the exit and the end of stderr, in flat memory."""
    failing = script(
        tmp_path,
        """
        import sys
        chunk = b"retrying the bank\\n" * ((1 << 20) // 18)
        for _ in range(200):
            sys.stderr.buffer.write(chunk)
            sys.stdout.write("attempt\\n")
        sys.stderr.write("card declined: insufficient funds\\n")
        sys.exit(4)
        """,
    )
    outcome = run_measured(tmp_path, failing)
    assert not outcome["ok"] and outcome["result"] is None
    error = outcome["error"]
    assert error.startswith("exit 4: …")
    assert error.endswith("retrying the bank\ncard declined: insufficient funds")
    assert len(error) == len("exit 4: ") + ERROR_LIMIT
    assert outcome["grew_kib"] < 50 * 1024, f"peak RSS grew {outcome['grew_kib']} KiB"


def test_big_request_reaches_a_program_that_prints_first(tmp_path: Path) -> None:
    """A ~900 KB request arrives whole at a program that prints a megabyte before reading stdin."""
    reader = script(
        tmp_path,
        """
        import json, sys
        sys.stdout.write("o" * 1_000_000 + "\\n")
        sys.stdout.flush()
        raw = sys.stdin.read()
        data = json.loads(raw)
        print(len(raw), len(data["params"]["blob"]), data["idempotency_key"])
        """,
    )
    request = fresh_request(params={"blob": "x" * 900_000})
    outcome = run_command([PY, str(reader)], request, cwd=tmp_path, timeout=30)
    assert outcome.ok, outcome.error
    sent = len(json.dumps(payload(request)))
    assert outcome.result is not None
    assert outcome.result.endswith(f"\n{sent} 900000 {request.id}")


def test_program_that_never_reads_stdin_is_fine(tmp_path: Path) -> None:
    """A program that exits without reading a big request is a success, not a broken pipe."""
    request = fresh_request(params={"blob": "x" * 900_000})
    outcome = run_command([PY, "-c", "print('done')"], request, cwd=tmp_path, timeout=30)
    assert outcome.ok, outcome.error
    assert outcome.result == "done"


def escaping_action(tmp_path: Path, child: str, *, then: str) -> tuple[Path, Path]:
    """An action that starts the Python code ``child``, waits for its pid file, then runs ``then``.

    Returns the action's path and the pid file's path.
    """
    pid_file = tmp_path / "escaped.pid"
    action = script(
        tmp_path,
        f"""
        import os, subprocess, sys, time
        pid_file = {str(pid_file)!r}
        subprocess.Popen([sys.executable, "-c", {child!r}, pid_file])
        deadline = time.monotonic() + 30
        while not os.path.exists(pid_file) and time.monotonic() < deadline:
            time.sleep(0.01)
        {then}
        """,
    )
    return action, pid_file


# The start of an escaping child: it leaves the group, then notes its pid (atomically).
ESCAPE = """
import os, sys

os.setsid()
with open(sys.argv[1] + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
"""


def test_timeout_kills_processes_that_left_the_group(tmp_path: Path) -> None:
    """Over the timeout a process that left the group (setsid) dies too, and the error says so."""
    child = ESCAPE + (
        "devnull = os.open(os.devnull, os.O_RDWR)\n"
        "for fd in (0, 1, 2):\n"
        "    os.dup2(devnull, fd)  # holding none of our pipes\n"
        "import time; time.sleep(1000)\n"
    )
    action, pid_file = escaping_action(tmp_path, child, then="time.sleep(30)")
    outcome = run_command([PY, str(action)], fresh_request(), cwd=tmp_path, timeout=2)
    assert outcome.error == (
        "timed out after 2s; work it started may still be running "
        "(killed 1 process that had left its process group)"
    )
    escaped = int(pid_file.read_text())
    assert wait_for(lambda: not alive(escaped), timeout=10), f"{escaped} outlived the timeout"


def test_timeout_kills_an_escaped_process_that_ignores_sigterm_and_holds_stderr(
    tmp_path: Path,
) -> None:
    """An escaped process that ignores SIGTERM and keeps stderr open is killed after the grace."""
    child = ESCAPE + (
        "import signal, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "sys.stderr.write('background sync running\\n'); sys.stderr.flush()\n"
        "time.sleep(1000)\n"
    )
    action, pid_file = escaping_action(tmp_path, child, then="print('started')")
    outcome = run_command([PY, str(action)], fresh_request(), cwd=tmp_path, timeout=1)
    assert outcome.error == (
        "timed out after 1s (the program exited, but something it started kept stdout or stderr "
        "open); work it started may still be running "
        "(killed 1 process that had left its process group): background sync running"
    )
    assert outcome.seconds < 20
    escaped = int(pid_file.read_text())
    assert wait_for(lambda: not alive(escaped), timeout=10), f"{escaped} outlived the timeout"


def test_timeout_spares_processes_of_other_requests(tmp_path: Path) -> None:
    """Only processes tagged with exactly this request's id are killed, not a look-alike's."""
    request = fresh_request()
    bystander = subprocess.Popen(
        [PY, "-c", "import time; time.sleep(1000)"],
        env={**os.environ, "HITL_REQUEST_ID": request.id + "-2"},
        start_new_session=True,
    )
    try:
        sleeper = [PY, "-c", "import time; time.sleep(30)"]
        outcome = run_command(sleeper, request, cwd=tmp_path, timeout=0.5)
        assert outcome.error == "timed out after 0.5s; work it started may still be running"
        assert bystander.poll() is None
    finally:
        bystander.send_signal(signal.SIGKILL)
        bystander.wait()


def test_timeout_of_a_plain_program_says_work_may_go_on(tmp_path: Path) -> None:
    """A program killed over its timeout fails saying that work it started may still be running."""
    sleeper = script(
        tmp_path, "import sys, time; print('calling the bank'); sys.stdout.flush(); time.sleep(30)"
    )
    outcome = run_command([PY, str(sleeper)], fresh_request(), cwd=tmp_path, timeout=0.5)
    assert not outcome.ok and outcome.result is None
    assert outcome.error == "timed out after 0.5s; work it started may still be running"
    assert 0.5 <= outcome.seconds < 10
