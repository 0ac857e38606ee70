"""A real browser for the pages' tests: Debian's chromium, driven by Playwright.

One chromium per test session (per worker), started headless with the flags this machine's
closed network needs, on a fresh profile (Playwright gives each launch a new empty
``--user-data-dir`` of its own and removes it at the end), with one page at a phone's
width that each test gets blank, without cookies, recording every JavaScript dialog it
shows. No browser is ever downloaded: ``/usr/bin/chromium`` comes from Debian (``.ci/run``
installs it as root).
Without it the browser tests skip and say why, except under ``CI=true``, where a missing
chromium fails them. Screenshots go to ``tests/artifacts/`` (git-ignored), and so does one
of the page a failing test left.

The fixtures are registered for the whole suite by ``tests/conftest.py``; Playwright itself
is imported only when a browser test runs.
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Dialog, Page, ViewportSize

CHROMIUM = Path(os.environ.get("HITL_VAULT_CHROMIUM", "/usr/bin/chromium"))
# As root chromium needs --no-sandbox; without the background-networking flags it keeps
# trying hosts this machine cannot reach. --headless is Playwright's too (headless=True).
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)
ARTIFACTS = Path(__file__).parent / "artifacts"
PHONE: ViewportSize = {"width": 360, "height": 740}  # the narrowest phone the pages are made for
TIMEOUT_MS = 10_000  # each wait in the browser: generous, never the assertion itself


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        return (
            f"no chromium at {CHROMIUM}: install Debian's (apt-get install chromium, as root; "
            ".ci/run does) or name another in HITL_VAULT_CHROMIUM"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright is not installed: pip install -e '.[test]'"
    return None


@contextmanager
def threads_end_with_it(timeout: float = 10.0) -> Iterator[None]:
    """Around a module's service: every thread started inside the block has ended soon after
    it. conftest's ``no_leaked_threads`` checks each test; a browser test module replaces
    that with this, because its service starts its workers (an action's, a notification
    channel's) as the first test needs them and keeps them as long as it runs."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + timeout
    while left := [t for t in threading.enumerate() if t not in before and t.is_alive()]:
        assert time.monotonic() < deadline, f"threads left running after the service: {left}"
        time.sleep(0.02)


@dataclass
class Tab:
    """The browser's page for one test, and every dialog (alert, confirm, prompt) a script
    opened in it meanwhile: a page that escapes what submitters wrote opens none."""

    page: Page
    dialogs: list[str] = field(default_factory=list)

    def _opened(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        dialog.dismiss()

    def screenshot(self, name: str) -> Path:
        """The whole page as ``tests/artifacts/NAME.png``, kept after the run."""
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', name)}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def scroll_width(self) -> int:
        """How wide the page is laid out (wider than the viewport: it scrolls sideways)."""
        return int(self.page.evaluate("document.documentElement.scrollWidth"))


@dataclass
class Chromium:
    """The session's browser, its one page (a new page costs a renderer process, a fifth of a
    second each), and the event loop of Playwright's sync API.

    Between two of its calls that API marks its loop as the one running on the thread, so
    that no other loop starts there; but the suite's asyncio tests (pytest-asyncio) share
    the worker, and each starts a loop of its own. So the loop is marked only while a
    browser test runs (:meth:`awake`) and cleared between them.
    """

    browser: Browser
    page: Page
    loop: asyncio.AbstractEventLoop

    @contextmanager
    def awake(self) -> Iterator[Page]:
        asyncio._set_running_loop(self.loop)
        try:
            yield self.page
        finally:
            asyncio._set_running_loop(None)


@pytest.fixture(scope="session")
def browser() -> Iterator[Chromium]:
    """Debian's chromium, started once for the session, headless."""
    if (why := missing()) is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the browser tests cannot run under CI: {why}", pytrace=False)
        pytest.skip(why)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=list(FLAGS), timeout=30_000
        )
        context = launched.new_context(viewport=PHONE)
        context.set_default_timeout(TIMEOUT_MS)
        chromium = Chromium(launched, context.new_page(), asyncio.get_running_loop())
        # Playwright writes screenshots on its loop's default executor: one thread, started
        # now, so that no test sees a thread appear (conftest's no_leaked_threads).
        files = ThreadPoolExecutor(1, thread_name_prefix="playwright-files")
        files.submit(lambda: None).result()
        chromium.loop.set_default_executor(files)
        asyncio._set_running_loop(None)  # Playwright marked its loop running (see Chromium)
        try:
            yield chromium
        finally:
            asyncio._set_running_loop(chromium.loop)  # marked again: Playwright ends it
            launched.close()


@pytest.fixture
def tab(browser: Chromium, request: pytest.FixtureRequest) -> Iterator[Tab]:
    """The session's page, blank, with no cookies and no dialogs recorded yet, at a phone's
    width. When the test fails, the page as it was is kept as
    ``tests/artifacts/failed-TEST.png``."""
    failed_before = request.session.testsfailed
    with browser.awake() as page:
        page.context.clear_cookies()
        page.goto("about:blank")
        opened = Tab(page)
        page.on("dialog", opened._opened)
        try:
            yield opened
            if request.session.testsfailed > failed_before:  # the call's report came first
                opened.screenshot(f"failed-{request.node.name}")
        finally:
            page.remove_listener("dialog", opened._opened)
