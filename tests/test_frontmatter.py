"""The frontmatter split through python-frontmatter's handlers: same notes, our errors, and
Inbox proposals in the TOML and JSON forms the library knows."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import frontmatter
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from hitl_vault import Status, Vault
from hitl_vault.daemon.inbox import Inbox
from hitl_vault.daemon.loop import Daemon
from hitl_vault.errors import NoteError
from hitl_vault.notes.file import (
    BOM,
    Note,
    _content,
    _line_of_key,
    load_yaml,
    parse_frontmatter,
    parse_note,
)

from .helpers import Clock, eventually
from .test_properties import SETTINGS, notes

WHERE = "Pending_Approval/x.md"


def _parse_note_before(raw: bytes, where: str) -> Note:
    """parse_note as it was before python-frontmatter did the split (line-by-line search)."""
    text = raw.decode("utf-8")  # the size cap and UTF-8 check are unchanged code
    bom = text.startswith(BOM)
    if bom:
        text = text[1:]
    lines = tuple(re.split(r"(?<=\n)", text)) if text else ()
    lines = tuple(part for part in lines if part)
    if not lines or _content(lines[0]).rstrip() != "---":
        raise NoteError(
            where, "has no frontmatter", "start the file with a line `---`, then the YAML keys", 1
        )
    newline = "\r\n" if lines[0].endswith("\r\n") else "\n"
    fm_end = next(
        (i for i in range(1, len(lines)) if _content(lines[i]).rstrip() in ("---", "...")), None
    )
    if fm_end is None:
        raise NoteError(
            where, "the frontmatter has no closing `---`", "add a line `---` after the last key", 1
        )
    yaml_text = "".join(_content(line) + "\n" for line in lines[1:fm_end])
    meta = load_yaml(yaml_text, where, first_line=2)
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise NoteError(
            where,
            f"the frontmatter is a {type(meta).__name__}, not a set of `key: value` lines",
            "write one `key: value` per line between the `---` lines",
            2,
        )
    for key in meta:
        if not isinstance(key, str):
            raise NoteError(
                where,
                f"the key {key!r} is not text",
                "quote it or rename it to a word",
                _line_of_key(lines, fm_end, str(key)),
            )
    if "content" in meta:
        raise NoteError(
            where,
            "the key `content` is reserved (frontmatter tools use it for the note body)",
            "rename the key",
            _line_of_key(lines, fm_end, "content"),
        )
    return Note(where, raw, bom, newline, lines, fm_end, meta)


def _outcome(parse: Any, raw: bytes) -> tuple[Any, ...]:
    try:
        note = parse(raw, WHERE)
    except NoteError as e:
        return ("error", e.problem, e.fix, e.line)
    return ("note", note.bom, note.newline, note.lines, note.fm_end, note.meta, note.body)


def _same_as_before(raw: bytes) -> None:
    assert _outcome(parse_note, raw) == _outcome(_parse_note_before, raw)


# --- our error, never python-frontmatter's empty metadata ------------------------------------


@pytest.mark.parametrize(
    ("text", "library_reads"),
    [
        ("---\nstatus: approved\naction: payment\n", {}),
        ("---\r\nstatus: approved\r\n", {}),
        ("---", {}),
        # python-frontmatter closes on any run of 3 or more dashes; a note closes on `---`.
        ("\ufeff---\nstatus: approved\n----\n", {"status": "approved"}),
    ],
)
def test_a_note_with_no_closing_boundary_is_an_error_not_empty_metadata(
    text: str, library_reads: dict[str, Any]
) -> None:
    """A note whose frontmatter never closes is refused with line 1 and the fix, never read
    as a note without keys (what python-frontmatter's own loads returns)."""
    assert frontmatter.loads(text.removeprefix(BOM)).metadata == library_reads
    with pytest.raises(NoteError) as info:
        parse_note(text.encode(), WHERE)
    assert info.value.problem == "the frontmatter has no closing `---`"
    assert info.value.line == 1
    assert str(info.value) == (
        f"{WHERE} line 1: the frontmatter has no closing `---` "
        "(add a line `---` after the last key)"
    )


@pytest.mark.parametrize(
    ("text", "closing"),
    [
        ("---\naction: payment\n", "---"),
        ('+++\naction = "payment"\n', "+++"),
        ('{\n  "action": "payment"\n', "}"),
    ],
)
def test_a_proposal_with_no_closing_boundary_is_an_error(text: str, closing: str) -> None:
    """A proposal whose YAML, TOML or JSON frontmatter never closes names the missing line."""
    with pytest.raises(NoteError) as info:
        parse_frontmatter(text.encode(), "Inbox/p.md")
    assert info.value.problem == f"the frontmatter has no closing `{closing}`"
    assert info.value.line == 1
    assert f"add a line `{closing}`" in str(info.value)


@pytest.mark.parametrize("text", ["", "action: payment\n", "----\naction: payment\n----\n"])
def test_a_proposal_without_frontmatter_says_which_openings_work(text: str) -> None:
    """A proposal with no frontmatter at all is refused, naming the three openings it may use."""
    with pytest.raises(NoteError, match=r"has no frontmatter.*`---`, `\+\+\+` or `\{`"):
        parse_frontmatter(text.encode(), "Inbox/p.md")


# --- YAML notes read exactly as before -------------------------------------------------------

RENDERED = (
    "---\nid: 20261130T021608Z-payment-86e4c2\nstatus: pending\naction: payment\n"
    "summary: Rent for December\nrisk: high\nrule: large-payments\nrequested_by: home-bot\n"
    "created: 2026-11-30T02:16:08Z\nexpires: 2026-11-30T03:16:08Z\nparams:\n  amount: 1500\n"
    "  recipient: landlord@example.com\ndecided_by:\nreason:\n---\n# Rent for December\n\n"
    "## History\n- 2026-11-30T02:16:08Z · created → pending · by home-bot\n"
)
REPRESENTATIVE = {
    "rendered": RENDERED,
    "crlf": RENDERED.replace("\n", "\r\n"),
    "bom": BOM + RENDERED,
    "bom-crlf": BOM + RENDERED.replace("\n", "\r\n"),
    "dots-closing": RENDERED.replace("reason:\n---\n", "reason:\n...\n"),
    "blanks-after-dashes": RENDERED.replace("---\n", "--- \t\n"),
    "blank-lines-in-frontmatter": RENDERED.replace("status:", "\n\nstatus:"),
    "yaml-error-after-blank-lines": "---\n\n\nstatus: [\n---\n",
    "duplicate-key-crlf": "---\r\nstatus: a\r\n\r\nstatus: b\r\n---\r\n",
    "empty-frontmatter": "---\n---\nbody\n",
    "four-dashes": "----\nstatus: x\n----\n",
    "content-key": "---\nstatus: x\ncontent: y\n---\n",
    "horizontal-rule-in-body": RENDERED + "\n---\n\nmore\n",
    "no-final-newline": "---\nstatus: x\n---",
    "lone-cr": "---\nstatus: a\rb\r\r\nother: c\n---\n",
}


@pytest.mark.parametrize("text", REPRESENTATIVE.values(), ids=REPRESENTATIVE.keys())
def test_a_yaml_note_parses_exactly_as_before(text: str) -> None:
    """A YAML note (as rendered, with CRLF, with a BOM, or broken) gives the same keys, lines,
    body and error line as the line-by-line reader did."""
    _same_as_before(text.encode())


def test_the_rendered_note_keeps_its_keys_lines_and_endings(vault: Vault) -> None:
    """A note hitl-vault wrote, saved again with CRLF and a BOM, reads the same and keeps both."""
    request = vault.submit("payment", {"amount": 1500, "recipient": "v@x.y"}, summary="Rent")
    assert request.path is not None
    raw = request.path.read_bytes()
    for data in (raw, BOM.encode() + raw.replace(b"\n", b"\r\n")):
        _same_as_before(data)
        note = parse_note(data, WHERE)
        assert note.meta["params"] == {"amount": 1500, "recipient": "v@x.y"}
        assert note.lines[note.fm_end].rstrip() == "---"
        assert note.key_line("status") is not None
        assert "".join(note.lines).encode() == data.removeprefix(BOM.encode())


LINE = st.sampled_from(
    ["---", "--- ", "---\t", "----", "...", ".. .", "status: x", "a: [", "  - y", "", " ", "\r",
     "k: v\r", "content: x", "1: one", "# c", "- list", "status: x\rother: y"]
)  # fmt: skip


@SETTINGS
@given(st.lists(LINE, max_size=10), st.sampled_from(["\n", "\r\n"]), st.booleans())
@example(["---", "\r", "---"], "\n", False)
def test_any_lines_split_exactly_as_before(lines: list[str], newline: str, bom: bool) -> None:
    """Whatever mix of boundaries, blanks and stray carriage returns a note has, it reads (or
    fails, on the same line) exactly as before."""
    _same_as_before(((BOM if bom else "") + newline.join(lines)).encode())


@SETTINGS
@given(notes())
def test_generated_notes_read_exactly_as_before(raw: bytes) -> None:
    """Notes as humans and editors leave them (comments, block values, CRLF) read as before."""
    _same_as_before(raw)


# --- Inbox proposals in TOML and JSON frontmatter ------------------------------------------

TOML_PROPOSAL = (
    '+++\naction = "payment"\nsummary = "Rent for December"\nrequested_by = "toml-bot"\n'
    'timeout = "30m"\n\n[params]\namount = 2000\nrecipient = "landlord@example.com"\n+++\n'
    "Please pay the rent.\n"
)
JSON_PROPOSAL = (
    '{\n  "action": "payment",\n  "summary": "Small one",\n  "requested_by": "json-bot",\n'
    '  "params": {"amount": 5, "recipient": "shop@example.com"}\n}\nA small payment.\n'
)


def _attention(daemon: Daemon, clock: Clock) -> str:
    """The dashboard's Needs attention section, once the daemon has rewritten it (at most 1/s)."""
    daemon.run_once(clock.advance(timedelta(seconds=1)))
    text = (daemon.engine.root / "Dashboard.md").read_text()
    return text.split("## Needs attention")[1].split("\n## ")[0]


def test_toml_and_json_frontmatter_proposals_become_requests(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """A proposal dropped in Inbox/ with `+++` TOML or `{` JSON frontmatter becomes a request
    like a YAML one, and leaves the Inbox."""
    vault = clocked_vault
    inbox = vault.root / "Inbox"
    (inbox / "rent.md").write_text(TOML_PROPOSAL)
    (inbox / "small.md").write_bytes(BOM.encode() + JSON_PROPOSAL.replace("\n", "\r\n").encode())
    daemon.run_once(clock.now)
    by_summary = {r.summary: r for r in vault.list()}
    rent = by_summary["Rent for December"]
    assert rent.status is Status.PENDING
    assert rent.requested_by == "toml-bot"
    assert rent.params == {"amount": 2000, "recipient": "landlord@example.com"}
    assert rent.expires is not None and rent.expires - rent.created == timedelta(minutes=30)
    small = by_summary["Small one"]
    assert small.requested_by == "json-bot"
    assert small.params == {"amount": 5, "recipient": "shop@example.com"}
    eventually(lambda: ran == [small.id])
    assert sorted(p.name for p in inbox.iterdir()) == ["_README.md"]
    assert "Inbox/" not in _attention(daemon, clock)


def test_the_inbox_api_takes_a_toml_proposal(vault: Vault, clock: Clock) -> None:
    """Inbox.take turns one TOML-fronted proposal file into one pending request."""
    path = vault.root / "Inbox" / "rent.md"
    path.write_text(TOML_PROPOSAL)
    [request] = Inbox(vault.root, vault.engine.journal, vault.engine.submit).take(path, clock.now)
    assert request.action == "payment"
    assert request.params == {"amount": 2000, "recipient": "landlord@example.com"}
    assert request.requested_by == "toml-bot"
    assert not path.exists()


def test_a_broken_toml_header_is_flagged_with_file_line_and_fix(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """A proposal whose TOML does not parse stays byte for byte, makes no request, and is
    listed under Needs attention with its file, line and fix."""
    vault = clocked_vault
    broken = vault.root / "Inbox" / "broken.md"
    broken.write_text('+++\naction = "payment"\nsummary = \n[params]\namount = 5\n+++\n')
    before = broken.read_bytes()
    daemon.run_once(clock.now)
    attention = _attention(daemon, clock).replace("\\`", "`")  # the dashboard escapes backticks
    assert "Inbox/broken.md line 3: TOML error: Invalid value" in attention
    assert "fix the TOML between the `+++` lines" in attention
    assert broken.read_bytes() == before
    assert vault.list() == [] and ran == []


@pytest.mark.parametrize(
    ("text", "problem", "line"),
    [
        ('+++\naction = "payment"\naction = "x"\n+++\n', "TOML error: Cannot overwrite", 3),
        ('+++\naction = "payment\n+++\n', "TOML error: Illegal character", 2),
        ('+++\r\naction = "payment"\r\n[params\r\n+++\r\n', "TOML error", 3),
        ("+++\nn = 1" + "9" * 5000 + "\n+++\n", "4300 digits", None),
        ('{\n  "action": "payment",\n}\n', "is not valid JSON", 3),
        ('{\n"params":\n{\n"amount": 5\n}\n}\n', "is not valid JSON", 3),
        ('{\n  "action": "payment",\n  "action": "x"\n}\n', "the key 'action' appears twice", None),
    ],
)
def test_broken_toml_and_json_headers_name_the_line_and_fix(
    text: str, problem: str, line: int | None
) -> None:
    """A TOML or JSON header that does not parse names the file, the line when known and a fix."""
    with pytest.raises(NoteError) as info:
        parse_frontmatter(text.encode(), "Inbox/p.md")
    assert problem in info.value.problem
    assert info.value.line == line
    assert str(info.value).startswith("Inbox/p.md")
    assert str(info.value).endswith(")"), "the message names the fix"


def test_a_json_proposal_file_with_a_key_twice_is_refused(
    clocked_vault: Vault, daemon: Daemon, clock: Clock, ran: list[str]
) -> None:
    """A `.json` proposal naming a key twice is flagged, not run with whichever came last."""
    vault = clocked_vault
    path = vault.root / "Inbox" / "twice.json"
    path.write_text('{"action": "payment", "params": {"amount": 5, "amount": 5000}}')
    daemon.run_once(clock.now)
    assert "Inbox/twice.json: the key 'amount' appears twice" in _attention(daemon, clock)
    assert vault.list() == [] and ran == [] and path.exists()


def test_yaml_proposals_read_exactly_like_notes() -> None:
    """A YAML proposal reads through the note parser: its keys and its errors are a note's."""
    good = b"---\naction: payment\nparams:\n  amount: 5\n---\n"
    assert parse_frontmatter(good, "Inbox/p.md") == {"action": "payment", "params": {"amount": 5}}
    bad = b"---\naction: payment\naction: x\n---\n"
    with pytest.raises(NoteError) as a:
        parse_frontmatter(bad, "Inbox/p.md")
    with pytest.raises(NoteError) as b:
        parse_note(bad, "Inbox/p.md")
    assert str(a.value) == str(b.value) and a.value.line == 3
