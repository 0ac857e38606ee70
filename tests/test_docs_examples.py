"""Every ``sh`` and ``python`` block in README.md and docs/*.md runs, and any output shown is
the output produced.

One test per page: its blocks run in order, in a fresh folder that holds ``vault/`` (made by
``hitl-vault init``, as the quick start leaves it), with this venv's ``bin`` first on PATH and
HOME set to that folder. Its quiet period is 200ms instead of the template's 2s, so that
``run --once`` does not wait for it (no output depends on it). A ``sh`` block runs with
``bash -euo pipefail`` and must exit 0; a ``python`` block runs in a namespace of its own
(each is a whole program a reader can copy).
An ``output`` block right after one of them is what it printed, with ids, times, the folder
and this venv's path written as a reader sees them. ``console``, ``text`` and other blocks are
shown only. ``<!-- skip: next "reason" -->`` before a block skips it, and must give a reason.

The human in the examples is a thread that approves, as alice, every pending request with
``amount: 1500`` (the amount the Python examples wait on); other amounts wait for nobody.
Blocks are parsed with sybil, the same lexers that read MyST and Markdown.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
import threading
import unittest
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sybil import Example, Sybil
from sybil.parsers.myst import CodeBlockParser, SkipParser

from hitl_vault import Status, Vault
from hitl_vault.cli.template import init_vault
from hitl_vault.errors import IllegalTransitionError

pytestmark = pytest.mark.process  # every test here starts a real process

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BIN = Path(sys.executable).parent

_ID = re.compile(r"\b\d{8}T\d{6}Z-([A-Za-z0-9_.]+(?:-[A-Za-z0-9_.]+)*?)-[0-9a-f]{6}\b")
_TIME = re.compile(r"\b\d{4}-\d\d-\d\d[T ]\d\d:\d\d(?::\d\d(?:[.,]\d+)?Z?)?\b")


@dataclass
class Page:
    """One page's run: its folder and environment, and what the last block printed."""

    cwd: Path
    env: dict[str, str]
    printed: str | None = None
    ran: int = 0
    skipped: list[str] = field(default_factory=list)
    human_leaves: threading.Event = field(default_factory=threading.Event)
    human: threading.Thread | None = None

    def dismiss_human(self) -> None:
        """Stop the stand-in human, and wait until it has."""
        self.human_leaves.set()
        if self.human is not None:
            self.human.join()

    def normalise(self, text: str) -> str:
        """The text as the docs show it: the folder is ~/code, this venv is the clone's."""
        text = text.replace(str(BIN), "/home/you/hitl-vault/.venv/bin")
        text = text.replace(str(self.cwd), "/home/you/code")
        text = _ID.sub(r"<id:\1>", text)
        text = _TIME.sub("<time>", text)
        return "\n".join(line.rstrip() for line in text.strip().splitlines())


def run_sh(example: Example) -> str | None:
    page: Page = example.namespace["page"]
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", str(example.parsed)],
        cwd=page.cwd,
        env=page.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    page.printed = proc.stdout
    page.ran += 1
    if proc.returncode != 0 or "Traceback" in proc.stderr:
        return f"exit {proc.returncode}:\n{proc.stdout}{proc.stderr}"
    return None


def run_python(example: Example) -> str | None:
    page: Page = example.namespace["page"]
    path = f"{example.path}:{example.line}"
    code = compile(str(example.parsed), path, "exec")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code, {"__name__": "__main__"})
    page.printed = out.getvalue()
    page.ran += 1
    return None


def check_output(example: Example) -> str | None:
    page: Page = example.namespace["page"]
    if page.printed is None:
        return "an output block must follow the sh or python block that prints it"
    shown, printed = page.normalise(str(example.parsed)), page.normalise(page.printed)
    page.printed = None
    if shown != printed:
        return f"the page shows:\n{shown}\n\nthe block printed:\n{printed}"
    return None


SYBIL = Sybil(
    parsers=[
        SkipParser(),
        CodeBlockParser("sh", run_sh),
        CodeBlockParser("python", run_python),
        CodeBlockParser("output", check_output),
    ]
)


def examples(path: Path) -> list[Example]:
    return list(SYBIL.parse(path).examples())


@pytest.fixture
def page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Page]:
    init_vault(tmp_path / "vault")
    rules = tmp_path / "vault" / "hitl-vault.yaml"
    text, n = re.subn(r"(?m)^(  quiet: )2s ", r"\g<1>200ms", rules.read_text(encoding="utf-8"))
    assert n == 1, "the template's quiet period moved: update this fixture"
    rules.write_text(text, encoding="utf-8")
    # The python blocks run in this process, the sh blocks in bash: both see the same.
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HITL_VAULT", raising=False)
    monkeypatch.chdir(tmp_path)
    page = Page(tmp_path, dict(os.environ))

    def human() -> None:
        with Vault(tmp_path / "vault") as vault:
            while not page.human_leaves.wait(0.02):
                for r in vault.list(status=Status.PENDING):
                    if r.params.get("amount") == 1500:
                        with contextlib.suppress(IllegalTransitionError):
                            vault.approve(r.id, by="alice")

    page.human = threading.Thread(target=human, name="docs-human")
    page.human.start()
    try:
        yield page
    finally:
        page.dismiss_human()


def _is_skip(example: Example) -> bool:
    return isinstance(example.parsed, tuple)


def _runs(path: Path) -> bool:
    return any(e.region.evaluator in (run_sh, run_python) for e in examples(path))


RUNNABLE = [path for path in PAGES if _runs(path)]


@pytest.mark.parametrize("path", RUNNABLE, ids=[str(p.relative_to(ROOT)) for p in RUNNABLE])
def test_the_examples_of_a_page_run(path: Path, page: Page) -> None:
    """Each sh and python block of the page runs, in order, and prints what the page shows;
    the vault the examples used still agrees with its journal afterwards."""
    for example in examples(path):
        example.namespace["page"] = page
        try:
            example.evaluate()
        except unittest.SkipTest as skip:
            page.skipped.append(f"line {example.line}: {skip}")
    page.dismiss_human()
    with Vault(page.cwd / "vault") as vault:
        vault.run(once=True)  # the notes catch up with the last decisions, as after a session
        assert vault.verify() == []
    if not page.ran:  # say why, as a skip, rather than pass having run nothing
        pytest.skip("; ".join(page.skipped))


@pytest.mark.parametrize("path", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_skip_says_why(path: Path) -> None:
    """A skipped block names its reason (root, a service manager, a second host, CI)."""
    for example in examples(path):
        if _is_skip(example):
            action, reason = example.parsed
            assert action == "next", f"{path.name} line {example.line}: use skip: next"
            assert reason and reason.strip("\"' "), f"{path.name} line {example.line}: no reason"
