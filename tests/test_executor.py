"""The executor with real subprocesses and functions: what an action sees, what comes back."""

from __future__ import annotations

import json
import os
import secrets
import sys
import textwrap
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from hitl_vault.errors import UsageError
from hitl_vault.execute.executor import (
    RESULT_LIMIT,
    execute,
    load_handler,
    payload,
    run_command,
    run_handler,
)
from hitl_vault.model import Request, Risk, Status
from hitl_vault.policy.rules import ActionSpec

PY = sys.executable


def make_request(**changes: Any) -> Request:
    fields: dict[str, Any] = {
        # Unique: a timeout finds escaped processes by this id, so two runs of the suite at
        # once must never share one.
        "id": f"20240101T120000Z-pay-{secrets.token_hex(3)}",
        "status": Status.EXECUTING,
        "action": "pay",
        "summary": "Pay $1500 to vendor@example.com",
        "risk": Risk.HIGH,
        "rule": "payments",
        "requested_by": "agent",
        "created": datetime(2024, 1, 1, 12, 0, tzinfo=UTC),
        "expires": None,
        "params": {"amount": 1500, "to": "vendor@example.com"},
        "decided_by": "alice",
        "reason": "invoice checked",
    }
    fields.update(changes)
    return Request(**fields)


def script(tmp_path: Path, body: str, name: str = "action.py") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def alive(pid: int) -> bool:
    """A process that still runs (a zombie waiting to be reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_for(check: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# --- run: a program ------------------------------------------------------------------------


@pytest.mark.process
def test_request_arrives_as_json_on_stdin(tmp_path: Path) -> None:
    """Every payload field reaches the program on stdin, and idempotency_key is the id."""
    echo = script(tmp_path, "import sys; sys.stdout.write(sys.stdin.read())")
    request = make_request()
    outcome = run_command([PY, str(echo)], request, cwd=tmp_path, timeout=10)
    assert outcome.ok, outcome.error
    assert json.loads(outcome.result or "") == {
        "id": request.id,
        "action": "pay",
        "params": {"amount": 1500, "to": "vendor@example.com"},
        "decided_by": "alice",
        "reason": "invoice checked",
        "idempotency_key": request.id,
    }
    assert outcome.error is None
    assert outcome.seconds > 0


def test_payload_turns_params_into_plain_json() -> None:
    """Read-only mappings, tuples and dates in params become plain JSON values."""
    params = MappingProxyType({"when": date(2024, 5, 1), "tags": ("a", "b"), "n": {"x": 1}})
    data = payload(make_request(params=params, decided_by=None, reason=None))
    assert data["params"] == {"when": "2024-05-01", "tags": ["a", "b"], "n": {"x": 1}}
    assert data["decided_by"] is None and data["reason"] is None
    json.dumps(data)


@pytest.mark.process
def test_request_id_and_extra_env_in_environment(tmp_path: Path) -> None:
    """The program sees HITL_REQUEST_ID, the caller's extra env, and the inherited environment."""
    show = script(
        tmp_path,
        """
        import os
        print(os.environ["HITL_REQUEST_ID"], os.environ["EXTRA"], "PATH" in os.environ)
        """,
    )
    request = make_request()
    outcome = run_command([PY, str(show)], request, cwd=tmp_path, timeout=10, env={"EXTRA": "yes"})
    assert outcome.result == f"{request.id} yes True"


@pytest.mark.process
def test_relative_script_resolves_against_cwd(tmp_path: Path) -> None:
    """A relative path in the argv (scripts/pay.py) is found in the given folder."""
    (tmp_path / "scripts").mkdir()
    script(tmp_path / "scripts", "import os; print(os.getcwd())", name="pay.py")
    outcome = run_command([PY, "scripts/pay.py"], make_request(), cwd=tmp_path, timeout=10)
    assert outcome.ok, outcome.error
    assert Path(outcome.result or "").resolve() == tmp_path.resolve()


@pytest.mark.process
def test_stdout_is_trimmed_and_bounded(tmp_path: Path) -> None:
    """The result is stdout without surrounding whitespace, keeping only its last 4000 chars."""
    short = run_command(
        [PY, "-c", "print('\\n  paid INV-1  \\n\\n')"], make_request(), cwd=tmp_path, timeout=10
    )
    assert short.result == "paid INV-1"
    long = run_command(
        [PY, "-c", "print('x' * 10000 + 'THE END')"], make_request(), cwd=tmp_path, timeout=10
    )
    assert long.ok
    assert long.result is not None and len(long.result) == RESULT_LIMIT
    assert long.result.endswith("THE END") and long.result.startswith("…")


@pytest.mark.process
def test_output_is_decoded_leniently(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are replaced, not an exception."""
    outcome = run_command(
        [PY, "-c", "import sys; sys.stdout.buffer.write(b'caf\\xe9 ok')"],
        make_request(),
        cwd=tmp_path,
        timeout=10,
    )
    assert outcome.ok and outcome.result == "caf\ufffd ok"


@pytest.mark.process
def test_nonzero_exit_fails_with_stderr_tail(tmp_path: Path) -> None:
    """A non-zero exit is a failure naming the code and ending with the end of stderr."""
    fail = script(
        tmp_path,
        """
        import sys
        print("partial work")
        sys.stderr.write("noise\\n" * 500 + "card declined\\n")
        sys.exit(3)
        """,
    )
    outcome = run_command([PY, str(fail)], make_request(), cwd=tmp_path, timeout=10)
    assert not outcome.ok and outcome.result is None
    assert outcome.error is not None
    assert outcome.error.startswith("exit 3: …")
    assert outcome.error.endswith("card declined")
    assert len(outcome.error) < 1100
    quiet = run_command([PY, "-c", "raise SystemExit(2)"], make_request(), cwd=tmp_path, timeout=10)
    assert quiet.error == "exit 2"


@pytest.mark.process
def test_killed_by_signal_is_named(tmp_path: Path) -> None:
    """A program killed by a signal fails with the signal's name."""
    outcome = run_command(
        [PY, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"],
        make_request(),
        cwd=tmp_path,
        timeout=10,
    )
    assert outcome.error == "killed by signal SIGKILL"


@pytest.mark.process
def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    """Over the timeout the program and its children die, even one that ignores SIGTERM."""
    pid_file = tmp_path / "child.pid"
    slow = script(
        tmp_path,
        f"""
        import signal, subprocess, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        with open({str(pid_file)!r}, "w") as f:
            f.write(str(child.pid))
        sys.stderr.write("still working\\n")
        sys.stderr.flush()
        time.sleep(30)
        """,
    )
    outcome = run_command([PY, str(slow)], make_request(), cwd=tmp_path, timeout=1)
    assert not outcome.ok
    assert outcome.error == (
        "timed out after 1s; work it started may still be running: still working"
    )
    assert 1 <= outcome.seconds < 10
    child = int(pid_file.read_text())
    assert wait_for(lambda: not alive(child)), f"child {child} outlived the timeout"


@pytest.mark.process
def test_shell_syntax_in_params_is_never_run(tmp_path: Path) -> None:
    """Params with shell syntax arrive as literal strings and nothing is executed."""
    evil = {"to": "$(touch PWNED)", "memo": "; touch PWNED2 && reboot", "x": "`touch PWNED3`"}
    echo = script(tmp_path, "import sys, json; print(json.dumps(json.load(sys.stdin)['params']))")
    outcome = run_command(
        [PY, str(echo), "$(touch PWNED4)"], make_request(params=evil), cwd=tmp_path, timeout=10
    )
    assert outcome.ok, outcome.error
    assert json.loads(outcome.result or "") == evil
    assert not list(tmp_path.glob("PWNED*"))


@pytest.mark.process
def test_missing_program_cannot_start(tmp_path: Path) -> None:
    """A program that does not exist fails with its name and the fix, without raising."""
    outcome = run_command(["python9-nope"], make_request(), cwd=tmp_path, timeout=10)
    assert not outcome.ok
    assert outcome.error == (
        "cannot start python9-nope: No such file or directory "
        "(fix the run: argv in hitl-vault.yaml)"
    )
    gone = run_command([PY, "-c", "pass"], make_request(), cwd=tmp_path / "nope", timeout=10)
    assert gone.error is not None and gone.error.startswith(f"cannot start in {tmp_path / 'nope'}")
    empty = run_command([], make_request(), cwd=tmp_path, timeout=10)
    assert empty.error is not None and empty.error.startswith("cannot start the action")


@pytest.mark.process
def test_large_output_does_not_deadlock(tmp_path: Path) -> None:
    """A megabyte on stdout and on stderr is read without blocking either side."""
    noisy = script(
        tmp_path,
        """
        import sys
        sys.stdout.write("o" * 1_000_000 + "\\ndone")
        sys.stderr.write("e" * 1_000_000)
        """,
    )
    outcome = run_command([PY, str(noisy)], make_request(), cwd=tmp_path, timeout=10)
    assert outcome.ok, outcome.error
    assert outcome.result is not None and outcome.result.endswith("\ndone")
    assert len(outcome.result) == RESULT_LIMIT


# --- python: a function --------------------------------------------------------------------


def test_handler_return_value_is_the_result() -> None:
    """A handler gets the request; str() of its return value is the result, None gives ""."""
    seen: list[Request] = []

    def handler(request: Request) -> int:
        seen.append(request)
        return 42

    request = make_request()
    assert run_handler(handler, request).result == "42"
    assert seen == [request]
    nothing = run_handler(lambda r: None, request)
    assert nothing.ok and nothing.result == "" and nothing.error is None


def test_handler_exception_is_a_failure() -> None:
    """An exception from a handler becomes the error "<Type>: <message>"."""

    def handler(request: Request) -> None:
        raise RuntimeError(f"bank down for {request.action}")

    outcome = run_handler(handler, make_request())
    assert not outcome.ok and outcome.result is None
    assert outcome.error == "RuntimeError: bank down for pay"


def test_handler_keyboard_interrupt_is_not_swallowed() -> None:
    """KeyboardInterrupt and SystemExit from a handler propagate."""

    def interrupted(request: Request) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_handler(interrupted, make_request())
    with pytest.raises(SystemExit):
        run_handler(lambda r: sys.exit(1), make_request())


def test_async_handler_runs_to_completion() -> None:
    """An async handler is awaited; its value or exception is the outcome."""
    import asyncio

    async def handler(request: Request) -> str:
        await asyncio.sleep(0)
        return f"paid {request.params['amount']}"

    async def broken(request: Request) -> str:
        await asyncio.sleep(0)
        raise ValueError("nope")

    assert run_handler(handler, make_request()).result == "paid 1500"
    assert run_handler(broken, make_request()).error == "ValueError: nope"


def test_async_handler_inside_a_running_loop() -> None:
    """Called from inside an event loop, an async handler still runs (on a thread of its own)."""
    import asyncio

    async def handler(request: Request) -> str:
        await asyncio.sleep(0)
        return "ok"

    async def main() -> str | None:
        return run_handler(handler, make_request()).result

    assert asyncio.run(main()) == "ok"


def test_load_handler_finds_a_function() -> None:
    """A "package.module:function" target (the function may be dotted) loads that very callable."""
    loaded: list[object] = [
        load_handler(target) for target in ("json:dumps", "os.path:join", "json:JSONDecoder.decode")
    ]
    assert loaded == [json.dumps, os.path.join, json.JSONDecoder.decode]


def test_load_handler_missing_module() -> None:
    """An unknown module is a UsageError naming the target and the fix."""
    with pytest.raises(UsageError, match=r"'no_such_mod\.pay:run'.*no module named.*check"):
        load_handler("no_such_mod.pay:run")


def test_load_handler_missing_or_uncallable_attribute() -> None:
    """A missing attribute, a value that is not callable, or no ':' is a UsageError."""
    with pytest.raises(UsageError, match=r"'json:nope'.*no attribute 'nope'"):
        load_handler("json:nope")
    with pytest.raises(UsageError, match=r"'os:sep'.*is a str, not a function"):
        load_handler("os:sep")
    with pytest.raises(UsageError, match=r"package\.module:function"):
        load_handler("json.dumps")


def test_load_handler_module_that_fails_to_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A module whose own import fails is reported as such, not as a missing module."""
    script(tmp_path, "import hitl_missing_dependency\n", name="hitl_broken_mod.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UsageError, match=r"importing hitl_broken_mod failed: ModuleNotFound"):
        load_handler("hitl_broken_mod:run")


# --- execute: choosing how --------------------------------------------------------------------


def test_execute_prefers_a_registered_handler(tmp_path: Path) -> None:
    """An in-process handler wins over the spec's run."""
    spec = ActionSpec(name="pay", run=("python9-nope",))
    outcome = execute(spec, make_request(), cwd=tmp_path, handler=lambda r: "in process")
    assert outcome.result == "in process"


@pytest.mark.process
def test_execute_runs_the_spec_with_its_timeout(tmp_path: Path) -> None:
    """spec.run runs in cwd and spec.timeout bounds it."""
    ok = execute(
        ActionSpec(name="pay", run=(PY, "-c", "print('ran')")), make_request(), cwd=tmp_path
    )
    assert ok.result == "ran"
    slow = ActionSpec(
        name="pay", run=(PY, "-c", "import time; time.sleep(30)"), timeout=timedelta(seconds=0.5)
    )
    assert execute(slow, make_request(), cwd=tmp_path).error == (
        "timed out after 0.5s; work it started may still be running"
    )


def test_execute_python_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """spec.python loads and calls the function; a load failure is a failed outcome."""
    script(tmp_path, "def run(request):\n    return request.id\n", name="hitl_pay_mod.py")
    monkeypatch.syspath_prepend(str(tmp_path))
    request = make_request()
    ok = execute(ActionSpec(name="pay", python="hitl_pay_mod:run"), request, cwd=tmp_path)
    assert ok.ok and ok.result == request.id
    bad = execute(ActionSpec(name="pay", python="hitl_pay_mod:nope"), request, cwd=tmp_path)
    assert not bad.ok and bad.error is not None and "no attribute 'nope'" in bad.error
    sys.modules.pop("hitl_pay_mod", None)


def test_execute_without_any_way_to_run(tmp_path: Path) -> None:
    """No spec and no handler is a caller bug (ValueError); an empty spec is a failed outcome."""
    with pytest.raises(ValueError, match="no executor"):
        execute(None, make_request(), cwd=tmp_path)
    outcome = execute(ActionSpec(name="pay"), make_request(), cwd=tmp_path)
    assert (
        not outcome.ok and outcome.error is not None and "neither run nor python" in outcome.error
    )
