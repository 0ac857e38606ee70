"""The note parser and the line editor: golden files, surgical edits, durable CAS writes."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from hitl_vault.durable import move_note, write_note
from hitl_vault.errors import ChangedUnderfootError, NoteError
from hitl_vault.model import Request, Risk, Status, Transition
from hitl_vault.notes.callout import callout
from hitl_vault.notes.edit import edit_note
from hitl_vault.notes.file import parse_note, read_note
from hitl_vault.notes.render import render_new_note
from hitl_vault.notes.strict_yaml import yaml_scalar

from .helpers import returns_within

DATA = Path(__file__).parent / "data"
GOLDEN = sorted(p for p in DATA.glob("*.md"))


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize("path", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_golden_notes(path: Path) -> None:
    """Each golden note parses to its expected data, or fails with its expected message and line."""
    expected = json.loads(path.with_suffix(".expected.json").read_text())
    raw = path.read_bytes()
    if "error" in expected:
        with pytest.raises(NoteError) as info:
            parse_note(raw, f"Pending_Approval/{path.name}")
        assert expected["error"] in str(info.value)
        assert info.value.line == expected["line"]
        assert str(info.value).startswith(f"Pending_Approval/{path.name} line {expected['line']}: ")
        assert "(" in str(info.value) and str(info.value).endswith(")"), "message names the fix"
        return
    note = parse_note(raw, path.name)
    assert _plain(dict(note.meta)) == expected["meta"]
    assert note.status_text == expected["status_text"]
    assert note.bom == expected["bom"]
    assert note.newline == expected["newline"]


def test_golden_set_covers_every_hostile_kind() -> None:
    """The golden files include each kind of broken note the README lists."""
    names = {p.stem for p in GOLDEN}
    for kind in ("no-closing", "yaml-error", "alias-bomb", "list-frontmatter",
                 "scalar-frontmatter", "non-utf8", "content-key", "nonstring-key",
                 "duplicate-key", "empty"):  # fmt: skip
        assert kind in names


def test_oversized_note_is_refused_before_parsing(tmp_path: Path) -> None:
    """A note over 1 MiB is an error naming the size limit, and the file is not read into YAML."""
    path = tmp_path / "big.md"
    path.write_bytes(b"---\nid: x\n---\n" + b"x" * (2 * 1024 * 1024))
    with pytest.raises(NoteError, match="1 MiB"):
        read_note(path, "Pending_Approval/big.md")


def test_symlink_is_refused(tmp_path: Path) -> None:
    """A symlink in a request folder is never followed."""
    outside = tmp_path / "secret.md"
    outside.write_text("---\nid: x\n---\n")
    link = tmp_path / "link.md"
    link.symlink_to(outside)
    with pytest.raises(NoteError, match="symbolic link"):
        read_note(link, "Pending_Approval/link.md")


def _request(**overrides: Any) -> Request:
    at = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
    fields: dict[str, Any] = dict(
        id="20261122T101500Z-payment-7f3a2c",
        status=Status.PENDING,
        action="payment",
        summary="Pay $1500 to vendor@example.com for INV-2024-001",
        risk=Risk.HIGH,
        rule="large-payments",
        requested_by="invoice-bot",
        created=at,
        expires=datetime(2026, 11, 22, 11, 15, tzinfo=UTC),
        params={"amount": 1500, "recipient": "vendor@example.com", "currency": "USD"},
        history=(
            Transition(at, None, Status.PENDING, "invoice-bot", details=("rule large-payments",)),
        ),
    )
    fields.update(overrides)
    return Request(**fields)


def test_new_note_matches_the_spec_layout() -> None:
    """A new request note is exactly the layout the README shows."""
    text = render_new_note(
        _request(), "Matched rule `large-payments`: payment with amount >= 500 needs approval."
    )
    assert text == (
        "---\n"
        "id: 20261122T101500Z-payment-7f3a2c\n"
        "status: pending\n"
        "action: payment\n"
        "summary: Pay $1500 to vendor@example.com for INV-2024-001\n"
        "risk: high\n"
        "rule: large-payments\n"
        "requested_by: invoice-bot\n"
        "created: 2026-11-22T10:15:00Z\n"
        "expires: 2026-11-22T11:15:00Z\n"
        "params:\n"
        "  amount: 1500\n"
        "  recipient: vendor@example.com\n"
        "  currency: USD\n"
        "decided_by:\n"
        "reason:\n"
        "---\n"
        "# Pay \\$1500 to vendor@example.com for INV-2024-001\n"
        "\n"
        "> [!question] Waiting for your decision until 2026-11-22 11:15 UTC\n"
        "> Set `status` to `approved` or `rejected` (optionally fill `reason` and\n"
        "> `decided_by`), or move this note into Approved/ or Rejected/.\n"
        "\n"
        "## Details\n"
        "| param | value |\n"
        "|---|---|\n"
        "| amount | 1500 |\n"
        "| recipient | vendor@example.com |\n"
        "| currency | USD |\n"
        "\n"
        "Matched rule `large-payments`: payment with amount >= 500 needs approval.\n"
        "\n"
        "## History\n"
        "- 2026-11-22T10:15:00Z · created → pending · by invoice-bot · rule large-payments\n"
    )


@pytest.mark.parametrize(
    "value",
    [
        "NO",
        "01234",
        "[[Other Note]]",
        "yes",
        "1.10",
        "a: b",
        "# not a comment",
        "",
        " x",
        "multi\nline",
        "tab\there",
        'quote"s',
        "null",
        "~",
        "2026-11-22",
    ],
)
def test_values_we_write_read_back_unchanged(value: str) -> None:
    """Values YAML would change (NO, 01234, [[Note]]...) are quoted and read back as written."""
    note = parse_note(f"---\nid: x\nresult: {yaml_scalar(value)}\n---\n".encode(), "n.md")
    assert note.meta["result"] == value


def test_params_that_yaml_would_change_survive_a_new_note() -> None:
    """Params like NO, 01234 and [[Note]] keep their exact values in a new note."""
    params = {"code": "NO", "zip": "01234", "link": "[[Other Note]]", "ver": "1.10", "n": 1.5,
              "flag": True, "list": [1, "two"], "nested": {"a": None}}  # fmt: skip
    text = render_new_note(_request(params=params), "")
    assert parse_note(text.encode(), "n.md").meta["params"] == params


def test_edit_changes_only_owned_lines() -> None:
    """An approval edit changes the status line, adds one history line, keeps every other byte."""
    raw = (DATA / "human-extras.md").read_bytes()
    note = parse_note(raw, "n.md")
    line = "- 2026-11-22T10:16:03Z · pending → approved · by alice"
    out = edit_note(note, {"status": "executing"}, [line])
    before = raw.decode().splitlines()
    after = out.decode().splitlines()
    assert after[3] == "status: executing   # checked with finance"
    assert after[:3] == before[:3] and after[4:-3] == before[4:]
    assert after[-3:] == ["", "## History", line], "a missing History heading is added at the end"
    assert parse_note(out, "n.md").meta["tags"] == ["finance", "urgent"]


def test_edit_keeps_bom_and_crlf() -> None:
    """A note saved with a BOM and CRLF keeps both through an edit, new lines included."""
    raw = (DATA / "bom-crlf.md").read_bytes()
    out = edit_note(
        parse_note(raw, "n.md"),
        {"status": "approved", "decided_at": datetime(2026, 1, 1, tzinfo=UTC)},
        ["- h"],
    )
    assert out.startswith(b"\xef\xbb\xbf---\r\n")
    assert b"\r\nstatus: approved\r\n" in out
    assert b"decided_at: 2026-01-01T00:00:00Z\r\n---\r\n" in out
    assert out.count(b"\n") == out.count(b"\r\n"), "no bare LF was introduced"
    assert out.endswith(b"Body\r\n\r\n## History\r\n- h\r\n")


def test_history_goes_at_the_end_of_its_section() -> None:
    """History lines are appended after the last history entry, before any later section."""
    text = (
        "---\nid: x\nstatus: pending\n---\n# T\n\n## History\n- one\n- two\n\n## My notes\nkeep\n"
    )
    out = edit_note(parse_note(text.encode(), "n.md"), {}, ["- three"]).decode()
    assert out.endswith("## History\n- one\n- two\n- three\n\n## My notes\nkeep\n")


def test_block_value_is_replaced_whole() -> None:
    """A key written as a multi-line block is replaced with all its lines, nothing else."""
    text = "---\nid: x\nresult: |\n  line one\n  line two\nafter: 1\n---\n"
    out = edit_note(parse_note(text.encode(), "n.md"), {"result": "done"}, []).decode()
    assert out == "---\nid: x\nresult: done\nafter: 1\n---\n"


def test_callout_is_swapped_only_when_untouched() -> None:
    """The status callout follows the status, unless the human edited it."""
    request = _request()
    text = render_new_note(request, "")
    olds = [callout(s, request.expires, request.rule, None) for s in Status]
    new = callout(Status.APPROVED, request.expires, request.rule, None)
    out = edit_note(parse_note(text.encode(), "n.md"), {"status": "approved"}, [], (olds, new))
    assert "> [!success] Approved" in out.decode() and "[!question]" not in out.decode()
    edited = text.replace("Waiting for your decision", "Waiting for Bob")
    out = edit_note(parse_note(edited.encode(), "n.md"), {"status": "approved"}, [], (olds, new))
    assert "Waiting for Bob" in out.decode()


def test_write_note_compare_and_swap(tmp_path: Path) -> None:
    """A write whose expected bytes no longer match leaves the human's version in place."""
    path = tmp_path / "n.md"
    path.write_bytes(b"human v2")
    with pytest.raises(ChangedUnderfootError):
        write_note(path, b"daemon", b"human v1", "n.md")
    assert path.read_bytes() == b"human v2"
    write_note(path, b"daemon", b"human v2", "n.md")
    assert path.read_bytes() == b"daemon"
    assert [p.name for p in tmp_path.iterdir()] == ["n.md"], "no temp file is left behind"


def test_write_note_create_is_exclusive(tmp_path: Path) -> None:
    """Creating a note never overwrites an existing file."""
    path = tmp_path / "n.md"
    path.write_bytes(b"mine")
    with pytest.raises(ChangedUnderfootError):
        write_note(path, b"new", None, "n.md")
    assert path.read_bytes() == b"mine"


def test_move_note_keeps_a_changed_source(tmp_path: Path) -> None:
    """A move aborts and removes its copy when the source changed: the human's edit survives."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    src, dest = tmp_path / "a" / "n.md", tmp_path / "b" / "n.md"
    src.write_bytes(b"edited by human")
    with pytest.raises(ChangedUnderfootError):
        move_note(src, b"as read", dest, b"new", "a/n.md")
    assert src.read_bytes() == b"edited by human" and not dest.exists()
    move_note(src, b"edited by human", dest, b"new", "a/n.md")
    assert dest.read_bytes() == b"new" and not src.exists()


def test_edit_refuses_to_change_other_keys() -> None:
    """If an edit would change how another key reads, it raises and nothing is produced."""
    # A key that only looks top-level inside a block scalar cannot be edited safely.
    text = "---\nid: x\nnote: |\n  text\nstatus: pending\n---\n"
    note = parse_note(text.encode(), "n.md")
    out = edit_note(note, {"status": "approved"}, [])
    assert parse_note(out, "n.md").meta["note"] == "text\n"


def test_pipes_devices_and_folders_are_refused_without_waiting(tmp_path: Path) -> None:
    """Nothing in a vault can make a read wait (a pipe with no writer) or never end (/dev/zero)."""
    pipe = tmp_path / "pipe.md"
    os.mkfifo(pipe)
    zero = tmp_path / "zero.md"
    zero.symlink_to("/dev/zero")
    folder = tmp_path / "folder.md"
    folder.mkdir()
    for path, problem in ((pipe, "pipe"), (zero, "symbolic link"), (folder, "folder")):
        where = f"Pending_Approval/{path.name}"
        with pytest.raises(NoteError, match=problem) as caught:
            returns_within(partial(read_note, path, where), f"reading {where}")
        assert where in str(caught.value)
