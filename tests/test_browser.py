"""The real browser the pages' tests use (tests/browser.py), against a real ``hitl-vault
serve``: it reaches the service, and it notices a dialog, so a test that finds none means
something."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from .browser import ARTIFACTS, Tab
from .servers import Server, serving

pytestmark = [pytest.mark.process]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(Path(tmp_path_factory.mktemp("browser")) / "vault") as running:
        yield running


def test_the_browser_reaches_the_service(server: Server, tab: Tab) -> None:
    """chromium loads a page of the running service over loopback."""
    answer = tab.page.goto(f"{server.url}/healthz")
    assert answer is not None and answer.status == 200
    assert json.loads(tab.page.inner_text("body"))["ok"] is True


def test_a_dialog_a_script_opens_is_recorded(tab: Tab) -> None:
    """A script's alert is caught: the tests that expect no dialog would see one."""
    tab.page.set_content("<p>page</p><script>alert('opened')</script>")
    tab.page.wait_for_function("true")
    assert tab.dialogs == ["alert: opened"]


def test_a_screenshot_is_kept_in_the_artifacts_folder_at_a_phones_width(tab: Tab) -> None:
    """Tab.screenshot writes a PNG, 360 px wide, to tests/artifacts/, which git ignores."""
    tab.page.set_content("<p>a page</p>")
    shot = tab.screenshot("browser-self-test")
    assert shot == ARTIFACTS / "browser-self-test.png"
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(png[16:20], "big") == 360  # the IHDR chunk's width
    ignored = subprocess.run(["git", "check-ignore", "-q", str(shot)], cwd=ARTIFACTS.parent)
    assert ignored.returncode == 0, "tests/artifacts/ is not in .gitignore"
