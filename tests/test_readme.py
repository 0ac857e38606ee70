"""The README: short, its quick start the two commands CI runs, and its links into the docs.

Its sh and python blocks run in tests/test_docs_examples.py with the docs' own.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BLOCK = re.compile(r"(?ms)^```(\w+)\n(.*?)^```$")
# A Markdown link to a local file: [text](docs/page.md#anchor).
LINK = re.compile(r"\]\((?!https?:|#)([^)#\s]+)(?:#([^)\s]+))?\)")


def quick_start() -> str:
    return README.read_text(encoding="utf-8").split("## Quick start", 1)[1].split("\n## ", 1)[0]


def slug(heading: str) -> str:
    """The anchor MyST (and GitHub) make of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_the_readme_fits_on_a_few_screens() -> None:
    """The README is at most 15 KB: the rest lives in docs/."""
    assert len(README.read_bytes()) <= 15 * 1024


def test_the_quick_start_is_two_commands() -> None:
    """The quick start is two sh commands (install and serve; install and test), run by CI."""
    sh = [body for lang, body in BLOCK.findall(quick_start()) if lang == "sh"]
    install_and_run, install_and_test = sh
    assert install_and_run.strip().endswith("hitl-vault serve")
    assert "pip install '.[test]'" in install_and_test and "pytest" in install_and_test
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "## Quick start" in ci, ".ci/run must run the README's quick start commands"


def test_the_quick_start_commands_are_skipped_here_with_the_reason() -> None:
    """Each quick start command has a skip marker with a reason, since CI runs them instead."""
    markers = re.findall(r'<!-- skip: next "([^"]+)" -->\n```sh\n', quick_start())
    assert len(markers) == 2 and all(".ci/run" in reason for reason in markers)


def test_a_new_user_is_told_what_the_quick_start_leaves_unsaid() -> None:
    """Activate the venv; stop the daemon before `run --once`; install extras from the clone."""
    text = README.read_text(encoding="utf-8")
    assert ". .venv/bin/activate" in quick_start()
    stop = text.index("Stop the quick start's daemon first")
    assert stop < text.index("hitl-vault run --once")
    assert "pip install '.[mcp]'" in text
    assert "pip install 'hitl-vault[" not in text


PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_local_links_reach_a_page_and_a_heading(path: Path) -> None:
    """Every link to a local file reaches one that exists, and its #anchor a heading there."""
    text = re.sub(r"`[^`\n]*`", "", path.read_text(encoding="utf-8"))  # not links in code
    for target, anchor in LINK.findall(text):
        page = (path.parent / target).resolve()
        assert page.exists(), f"{path.name}: {target} does not exist"
        if anchor:
            headings = re.findall(r"(?m)^#{1,6} (.+)$", page.read_text(encoding="utf-8"))
            assert anchor in {slug(h) for h in headings}, f"{path.name}: no {target}#{anchor}"
