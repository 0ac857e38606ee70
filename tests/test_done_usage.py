"""``hitl-vault posttool`` never exits 2, whatever its command line: a PostToolUse hook's
exit 2 is a blocking error to Claude Code, and the call it reports on has run already."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

from hitl_vault.cli import entry


def run_entry(monkeypatch: pytest.MonkeyPatch, *argv: str) -> int:
    """The exit code of the ``hitl-vault`` entry point run with ``argv`` and an empty stdin."""
    monkeypatch.setattr(sys, "argv", ["hitl-vault", *argv])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    with pytest.raises(SystemExit) as ended:
        entry.main()
    code = ended.value.code
    return code if isinstance(code, int) else 0 if code is None else 1


@pytest.mark.parametrize(
    "argv",
    [
        ("posttool", "--format", "claude", "--wait", "9m"),  # the gate's --wait
        ("posttool", "--vault", "v"),  # a root option after the command
        ("posttool", "--format", "nosuch"),
        ("posttool", "--format"),
    ],
)
def test_a_posttool_command_line_click_rejects_exits_1(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    argv: tuple[str, ...],
) -> None:
    """A usage error of posttool exits 1 (never 2) with the problem on stderr."""
    code = run_entry(monkeypatch, "--vault", str(tmp_path / "v"), *argv)
    assert code == 1
    assert "Error" in capsys.readouterr().err


def test_posttool_help_and_other_commands_keep_their_exit_codes(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """--help still exits 0, and another command's usage error is still 2."""
    assert run_entry(monkeypatch, "posttool", "--help") == 0
    assert "PostToolUse" in capsys.readouterr().out
    assert run_entry(monkeypatch, "submit", "--nosuch", "posttool") == 2


def test_subcommand_skips_the_roots_options() -> None:
    """The command is the first word after the root's options and their values."""
    assert entry.subcommand(["--vault", "posttool", "gate"]) == "gate"
    assert entry.subcommand(["--server=http://x", "posttool"]) == "posttool"
    assert entry.subcommand(["submit", "posttool"]) == "submit"
