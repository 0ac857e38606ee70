"""Helpers for tests that edit notes as humans and editors do."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path


def set_status(path: Path, word: str, **extra: str) -> None:
    """Edit a note as a human would in VS Code: truncate and rewrite in place."""
    text = path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^status:.*$", f"status: {word}", text, count=1)
    for key, value in extra.items():
        text = re.sub(rf"(?m)^{key}:.*$", f"{key}: {value}", text, count=1)
    with open(path, "w", encoding="utf-8", newline="") as f:
        f.write(text)


def save_by_rename(path: Path, text: str) -> None:
    """Save as editors and sync tools do: write a temp file, then rename it over the note."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def eventually(check: Callable[[], object], timeout: float = 10.0) -> object:
    """Wait for a condition with a generous timeout (never a fixed sleep as the assertion)."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        time.sleep(0.01)
