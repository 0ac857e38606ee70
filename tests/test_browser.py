"""The real browser the pages' tests use (tests/browser.py): it notices a dialog, so a test
that finds none means something, and it keeps its screenshots where git does not look."""

from __future__ import annotations

import subprocess

import pytest

from .browser import ARTIFACTS, Tab

pytestmark = [pytest.mark.process]


def test_a_dialog_a_script_opens_is_recorded(tab: Tab) -> None:
    """An alert from a script and one from an image's onerror are both caught: the tests
    that expect no dialog would see one."""
    tab.page.set_content("<script>alert('script')</script><img src=x onerror=alert('onerror')>")
    assert sorted(tab.dialogs) == ["alert: onerror", "alert: script"]


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
