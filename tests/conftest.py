"""Shared fixtures: a vault from the real template, its scaffold, a stepped daemon, a real
daemon process, a guard on threads, and a watch on the processes a test starts.

A module that needs the vault set up differently (an executor of its own, a short
quiet period) overrides ``vault_path``; every fixture here then uses that vault.
"""

from __future__ import annotations

import atexit
import itertools
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from hitl_vault import Request, Vault
from hitl_vault.cli.template import init_vault
from hitl_vault.daemon.loop import Daemon

from .helpers import Clock, DaemonProcess, VaultHelper

# The real browser of the pages' tests (``browser``, ``tab``): see tests/browser.py.
pytest_plugins = ("tests.browser",)

# --- the processes a test starts share compiled bytecode ----------------------------------


def _share_bytecode() -> None:
    """With PYTHONDONTWRITEBYTECODE set (some sandboxes and CI images set it), each of the
    hundreds of processes the suite starts compiled hitl_vault afresh, and each worker
    rewrote every test module: a sixth of the CPU of a process-heavy file, seconds a
    worker. They keep their bytecode in one folder of this user's instead
    (PYTHONPYCACHEPREFIX), kept from run to run; nothing is written into the tree."""
    if os.environ.pop("PYTHONDONTWRITEBYTECODE", None) is None:
        return
    folder = Path(tempfile.gettempdir()) / f"hitl-vault-tests-pycache-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = folder.lstat()
        private = stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
    except OSError:
        private = False
    if not private:  # someone else's, or open to others: a folder for this run only
        folder = Path(tempfile.mkdtemp(prefix="hitl-vault-pycache-"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    os.environ["PYTHONPYCACHEPREFIX"] = str(folder)


_share_bytecode()


# --- real processes: the ``process`` marker --------------------------------------------
#
# A test that starts a process (a real daemon, the CLI as a user runs it, an action's
# program) is marked ``process``; ``-m "not slow and not process"`` leaves them out for a
# fast inner loop (docs/contributing.md). Python announces every process it starts as an audit
# event; a test that starts one unmarked fails when the run leaves process tests out (it
# would slow that loop), and is listed at the end of any other run.

_started: list[str] = []  # what the running test started, as the audit events named it
_unmarked: list[str] = []  # tests that started a process unmarked (gathered from the reports)
_UNMARKED = "started a process, not marked process"  # the user property that says so


def _on_audit(event: str, args: tuple[object, ...]) -> None:
    if event in ("subprocess.Popen", "os.posix_spawn", "os.fork", "os.exec"):
        _started.append(f"{event} {args[0]!r}" if args else event)


sys.addaudithook(_on_audit)


def _leaves_out_processes(config: pytest.Config) -> bool:
    return "process" in (config.getoption("markexpr", "") or "")


@pytest.fixture(autouse=True)
def process_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that starts a process is marked ``process`` (see above)."""
    _started.clear()
    yield
    if not _started or request.node.get_closest_marker("process") is not None:
        return
    request.node.user_properties.append((_UNMARKED, _started[0]))  # reaches the controller
    if _leaves_out_processes(request.config):
        pytest.fail(
            f"{request.node.nodeid} started a process ({_started[0]}) but is not marked "
            "process: add @pytest.mark.process, so the fast inner loop leaves it out",
            pytrace=False,
        )


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "teardown" and any(key == _UNMARKED for key, _ in report.user_properties):
        _unmarked.append(report.nodeid)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _unmarked:
        terminalreporter.write_sep("=", "tests that start a process but are not marked process")
        for nodeid in _unmarked:
            terminalreporter.write_line(nodeid)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The README's checks (its snippets run as processes, for seconds) are marked; then the
    slow tests are dealt out, one at a time, to the front of each worker's share."""
    for item in items:
        if item.path.name == "test_readme.py":  # the docs' file: its owner may mark them there
            item.add_marker(pytest.mark.process)
            item.add_marker(pytest.mark.slow)
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    items[:] = _dealt(items, workers)


def _dealt(items: list[pytest.Item], workers: int) -> list[pytest.Item]:
    """``items`` reordered so that each of ``workers`` starts its share with slow tests.

    pytest-xdist's worksteal gives worker k the k-th of ``workers`` contiguous shares
    (sizes as below) and lets an idle worker take from the end of a busy one's: slow
    tests at the front of every share start at once, side by side, and never end a run.
    Every worker computes the same order, as xdist requires.
    """
    slow = _units([item for item in items if item.get_closest_marker("slow") is not None])
    rest = iter([item for item in items if item.get_closest_marker("slow") is None])
    ordered: list[pytest.Item] = []
    remaining = len(items)
    for k in range(workers):
        size = remaining // (workers - k)
        remaining -= size
        mine = [item for unit in slow[k::workers] for item in unit]
        ordered += mine + list(itertools.islice(rest, max(0, size - len(mine))))
    ordered += list(rest)
    return ordered


def _units(slow: list[pytest.Item]) -> list[list[pytest.Item]]:
    """The slow tests, one by one, except that those of a module sharing a fixture set up
    once per module (a service, a PostgreSQL server, OS users) stay together: dealt apart,
    each worker that ran one of them set the fixture up again."""
    units: dict[object, list[pytest.Item]] = {}
    for item in slow:
        info = getattr(item, "_fixtureinfo", None)
        defs = info.name2fixturedefs.values() if info is not None else ()
        shared = any(d and d[-1].scope in ("module", "class") for d in defs)
        units.setdefault(item.path if shared else item, []).append(item)
    return list(units.values())


# --- reports ------------------------------------------------------------------------------


def _printable(text: str) -> str:
    """``text`` with each lone surrogate written as its escape (``\\udcff``), so UTF-8 holds it."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """Keep a test's report encodable as UTF-8.

    A test may make the code log text UTF-8 cannot hold (a handler failing on a file
    name that is not UTF-8 logs its lone surrogate). The captured log and output go
    into the report, and pytest-xdist sends each report from its worker as UTF-8: one
    such character crashed the worker, and with it the run. Escaping them here keeps
    the report readable and the run whole; what the test asserts is untouched.
    """
    report = yield
    report.sections = [(title, _printable(text)) for title, text in report.sections]
    if report.longrepr is not None:
        shown = str(report.longrepr)
        if _printable(shown) != shown:
            report.longrepr = _printable(shown)
    return report


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail any test that leaves a thread running (a watcher or worker nobody stopped)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL server's URL: ``$HITL_VAULT_TEST_PG`` (``.ci/run`` starts one), else a
    throwaway server started for this session (tests/pgserver.py). Where none can be
    started the tests that need one are skipped, saying why, except under ``CI=true``,
    where they fail: CI must test the PostgreSQL journal."""
    from . import pgserver

    given = os.environ.get(pgserver.TEST_PG_ENV)
    if given:
        yield given
        return
    why = ""
    try:
        import psycopg  # noqa: F401 - the postgres extra, which the test extra has too

        before = len(_started)
        server = pgserver.start()
        del _started[before:]  # the session's server, not a process of the test that asked
    except ImportError as e:
        why = f"psycopg is not installed ({e}): pip install -e '.[test]'"
    except (OSError, KeyError, subprocess.SubprocessError) as e:
        why = pgserver.why_not(e)
    if why:
        message = f"no PostgreSQL server could be started here: {why}"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    yield server.url
    server.stop()


@pytest.fixture
def vault_path(tmp_path: Path) -> Path:
    path = tmp_path / "vault"
    init_vault(path)
    return path


@pytest.fixture
def helper(vault_path: Path) -> VaultHelper:
    """The scaffold on ``vault_path``: executors, runs, attention, the CLI, raw SQL."""
    return VaultHelper(vault_path)


@pytest.fixture
def vault(vault_path: Path) -> Iterator[Vault]:
    with Vault(vault_path) as v:
        yield v


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ran() -> list[str]:
    """The ids the ``daemon`` fixture's ``payment`` executor ran, in order."""
    return []


@pytest.fixture
def clocked_vault(vault_path: Path, clock: Clock, ran: list[str]) -> Iterator[Vault]:
    """The template vault on the test's clock, with an in-process ``payment`` executor that
    records runs (the vault the ``daemon`` fixture watches)."""
    with Vault(vault_path, clock=clock) as vault:

        @vault.action("payment")
        def pay(request: Request) -> str:
            ran.append(request.id)
            return f"paid {request.params['amount']}"

        yield vault


@pytest.fixture
def daemon(clocked_vault: Vault, clock: Clock) -> Iterator[Daemon]:
    """A daemon on ``clocked_vault``, stepped by hand: ``daemon.run_once(clock.now)``.

    Modules that need a real ``hitl-vault run`` process use ``daemon_process``.
    """
    with Daemon(clocked_vault.engine, clock=clock) as d:
        yield d


@pytest.fixture
def daemon_process(vault_path: Path) -> Iterator[DaemonProcess]:
    """A real ``hitl-vault run`` watching ``vault_path``; killed at the end if still running."""
    with DaemonProcess(vault_path) as d:
        yield d
