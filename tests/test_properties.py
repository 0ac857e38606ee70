"""Property-based tests of the note parser and the line editor (hypothesis).

* Any bytes either parse or raise :class:`NoteError`, nothing else.
* Any note that parses, edited as the daemon edits it (its own keys set, the
  status callout swapped, history lines appended), either is refused with a
  NoteError or reads back with every other key unchanged and the daemon's keys
  as set; and no byte outside the lines the daemon owns changes.
* What the daemon writes (a scalar, a whole new note) reads back as written.
"""

from __future__ import annotations

import difflib
import os
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, event, example, given, settings
from hypothesis import strategies as st

from hitl_vault.errors import NoteError
from hitl_vault.model import Request, Risk, Status, Transition
from hitl_vault.notes.callout import callout
from hitl_vault.notes.edit import edit_note
from hitl_vault.notes.file import Note, parse_note
from hitl_vault.notes.render import history_line, render_new_note
from hitl_vault.notes.strict_yaml import yaml_scalar
from hitl_vault.text import one_line
from hitl_vault.times import parse_ts

# Examples each property tries in the suite; .ci/run tries 1,000 outside it (HITL_EXAMPLES).
EXAMPLES = int(os.environ.get("HITL_EXAMPLES", "100"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
OWNED = ("status", "decided_at", "executed_at", "result", "error", "decided_by", "reason")
HUMAN_KEYS = ("tags", "note", "aliases", "id", "action", "params", "summary", "my key", "x-1")
EXPIRES = datetime(2026, 11, 22, 11, 15, tzinfo=UTC)

# --- building notes ---------------------------------------------------------------------

TRICKY = st.sampled_from(
    [
        "",
        "pending",
        "approved",
        " Approve ",
        "NO",
        "yes",
        "01234",
        "1.10",
        "0x1F",
        "[[Other Note]]",
        '"quoted # not a comment"',
        "'single ''quoted'''",
        "2026-11-22T10:15:00Z",
        "2026-11-22",
        "~",
        "null",
        "true",
        "{a: 1, b: [x, y]}",
        "[a, b]",
        "text # a comment",
        "café ☕",
        "a: b",
        "- item",
        "&anchor value",
        "*alias",
        "!tag x",
        "|",
        ">-",
        "'unterminated",
        '"bad \\q escape"',
        "@reserved",
        "%percent",
        "tab\tinside",
        "2026-02-30",
        "2026-13-01T10:00:00Z",
        "9" * 5000,
        "!!binary '%%%'",
        "!!set {a, b}",
    ]
)
PLAIN_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x85\u2028\u2029"),
    max_size=20,
)
VALUE = st.one_of(TRICKY, PLAIN_TEXT)
KEY = st.sampled_from(OWNED + HUMAN_KEYS)


@st.composite
def frontmatter_item(draw: st.DrawFn) -> list[str]:
    """One key (maybe with continuation lines), a comment, or a blank line."""
    kind = draw(
        st.sampled_from(["scalar", "scalar", "scalar", "comment", "blank", "list", "map", "block"])
    )
    key = draw(KEY)
    sep = draw(st.sampled_from([": ", ":  ", " : ", ":"]))
    if kind == "comment":
        return ["# " + draw(PLAIN_TEXT)]
    if kind == "blank":
        return [""]
    if kind == "scalar":
        value = draw(VALUE)
        line = f"{key}{sep}{value}" if sep != ":" or not value else f"{key}: {value}"
        if draw(st.booleans()):
            line += "  # " + draw(PLAIN_TEXT)
        return [line]
    indent = draw(st.sampled_from(["", "  ", "    ", "\t"]))
    items = draw(st.lists(VALUE, min_size=1, max_size=3))
    if kind == "list":
        return [f"{key}:", *(f"{indent}- {v}" for v in items)]
    if kind == "map":
        subs = draw(
            st.lists(st.sampled_from(["amount", "to", "memo", "x"]), min_size=1, max_size=3)
        )
        return [
            f"{key}:",
            *(f"{indent or '  '}{s}: {v}" for s, v in zip(subs, items, strict=False)),
        ]
    style = draw(st.sampled_from(["|", ">", "|-", ">+"]))
    return [f"{key}: {style}", *(f"{indent or '  '}{v}" for v in items)]


BODY_LINE = st.one_of(
    st.sampled_from(
        [
            "",
            "# Pay $1500",
            "## Details",
            "## History",
            "## history",
            "### Notes",
            "---",
            "...",
            "- 2026-11-22T10:15:00Z · created → pending · by bot · rule r",
            "- a plain list item",
            "> quoted text",
            "Some text a human wrote.",
        ]
    ),
    PLAIN_TEXT,
)


@st.composite
def notes(draw: st.DrawFn) -> bytes:
    items = draw(st.lists(frontmatter_item(), max_size=10))
    fm = [line for item in items for line in item]
    body = draw(st.lists(BODY_LINE, max_size=12))
    if draw(st.booleans()):  # the callout exactly as hitl-vault writes it
        at = draw(st.integers(0, len(body)))
        body[at:at] = callout(Status.PENDING, EXPIRES, "large-payments", None)
    closing = draw(st.sampled_from(["---", "---", "...", "--- "]))
    all_lines = ["---", *fm, closing, *body]
    newline = draw(st.sampled_from(["\n", "\r\n", "mixed"]))
    endings = [
        ("\n" if draw(st.booleans()) else "\r\n") if newline == "mixed" else newline
        for _ in all_lines
    ]
    text = "".join(line + end for line, end in zip(all_lines, endings, strict=True))
    if draw(st.booleans()):  # no final newline
        text = text[: -len(endings[-1])]
    bom = "\ufeff" if draw(st.booleans()) else ""
    return (bom + text).encode("utf-8")


TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
).map(lambda d: d.replace(microsecond=0))
RESULT_TEXT = st.text(
    alphabet=st.characters(exclude_categories=["Cs"]), max_size=40
)  # may hold line breaks: stdout is free text


@st.composite
def daemon_edits(draw: st.DrawFn) -> tuple[dict[str, Any], list[str], Any]:
    """What one daemon write sets: some of its keys, new history lines, the callout swap."""
    fields: dict[str, Any] = {}
    for key in draw(st.lists(st.sampled_from(OWNED), unique=True, max_size=len(OWNED))):
        if key == "status":
            fields[key] = str(draw(st.sampled_from(list(Status))))
        elif key in ("decided_at", "executed_at"):
            fields[key] = draw(TIMES)
        elif key in ("result", "error"):
            fields[key] = draw(RESULT_TEXT)
        else:
            fields[key] = draw(st.one_of(TRICKY, PLAIN_TEXT).filter(lambda s: s.strip() == s))
    moves = draw(st.lists(st.sampled_from(list(Status)), max_size=3))
    history = [
        history_line(Transition(draw(TIMES), Status.PENDING, to, "alice", draw(PLAIN_TEXT)))
        for to in moves
    ]
    new = draw(st.sampled_from(list(Status)))
    olds = [callout(s, EXPIRES, "large-payments", None) for s in Status]
    return fields, history, (olds, callout(new, EXPIRES, "large-payments", None))


# --- the properties ------------------------------------------------------------------------


def _normal(value: Any) -> Any:
    if isinstance(value, datetime):
        return parse_ts(value)
    return value


def _round_trips(value: Any) -> bool:
    try:
        loaded = yaml.safe_load(f"k: {yaml_scalar(value)}\n")
    except yaml.YAMLError:
        return False
    return bool(_normal(loaded["k"]) == _normal(value) or (value == "" and loaded["k"] is None))


def _parse_or_error(raw: bytes) -> Note | None:
    try:
        return parse_note(raw, "Pending_Approval/x.md")
    except NoteError:
        return None


@SETTINGS
@given(st.binary(max_size=400))
def test_any_bytes_parse_or_raise_note_error(raw: bytes) -> None:
    """Any bytes, with or without dashes around them, parse as a note or raise NoteError only."""
    _parse_or_error(raw)
    _parse_or_error(b"---\n" + raw)
    _parse_or_error(b"---\n" + raw + b"\n---\n")


@SETTINGS
@given(st.text(max_size=300))
def test_any_text_between_dashes_parses_or_raises_note_error(text: str) -> None:
    """Any text as frontmatter parses as a note or raises NoteError, never another error."""
    _parse_or_error(f"---\n{text}\n---\nbody\n".encode())


def _content(line: str) -> str:
    return line[:-2] if line.endswith("\r\n") else line[:-1] if line.endswith("\n") else line


def _split(data: bytes) -> list[str]:
    text = data.decode("utf-8").removeprefix("\ufeff")
    return [part for part in re.split(r"(?<=\n)", text) if part]


def _check_only_owned_lines_changed(
    note: Note, out: bytes, fields: dict[str, Any], history: list[str], swap: Any
) -> None:
    """Diff the frontmatter and the body apart: whatever changed must be a line hitl-vault owns."""
    before, after = list(note.lines), _split(out)
    fm_end, after_fm_end = note.fm_end, parse_note(out, note.where).fm_end
    assert after[0] == before[0], "the opening --- changed"
    closing_kept = after[after_fm_end] == before[fm_end] or (
        fm_end == len(before) - 1 and after[after_fm_end] == before[fm_end] + note.newline
    )
    assert closing_kept, "the closing --- changed"
    assert out.startswith(b"\xef\xbb\xbf") is note.bom
    names = "|".join(re.escape(k) for k in fields) or "(?!)"
    key_line = re.compile(rf"^({names})\s*:")
    # The frontmatter: only the daemon's keys, with their continuation lines.
    fm_before, fm_after = before[1:fm_end], after[1:after_fm_end]
    matcher = difflib.SequenceMatcher(a=fm_before, b=fm_after, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        for index in range(i1, i2):
            owner = index
            while owner > 0 and not key_line.match(fm_before[owner]):
                if fm_before[owner].strip() and fm_before[owner][0] not in " \t-":
                    break
                owner -= 1
            assert key_line.match(fm_before[owner]), f"a human line changed: {fm_before[index]!r}"
        for line in fm_after[j1:j2]:
            assert key_line.match(line), f"a frontmatter line the daemon does not own: {line!r}"
    # The body: every human line kept, in order and byte for byte (the last one may gain
    # its line ending); every other line is the callout exactly as hitl-vault writes it,
    # a new history line, or the blank line and `## History` added with the first one.
    # (Matched in order, not by a diff: a diff is ambiguous when lines repeat.)
    olds, new = swap
    callout_lines = {line for block in olds for line in block} | set(new)
    body_before, body_after = before[fm_end + 1 :], after[after_fm_end + 1 :]
    human = [i for i, line in enumerate(body_before) if _content(line) not in callout_lines]
    kept = 0
    added: dict[int, str] = {}  # index in the edited body -> its text, for lines not kept
    for j, line in enumerate(body_after):
        if kept < len(human):
            index = human[kept]
            want = body_before[index]
            gains_ending = index == len(body_before) - 1 and not want.endswith("\n")
            if line == want or (gains_ending and _content(line) == want):
                kept += 1
                continue
        text = _content(line)
        assert text in callout_lines or text in history or text in ("", "## History"), (
            f"the daemon added a body line it does not own: {line!r}"
        )
        added[j] = text
    assert kept == len(human), f"a human body line changed: {body_before[human[kept]]!r}"
    # New history lines: one block, in the first History section (a new one at the end).
    appended = [j for j, text in added.items() if text in history and text not in callout_lines]
    if appended:
        start = appended[0]
        assert appended == list(range(start, start + len(appended))), "history lines were split up"
        above = [j for j in range(start) if re.match(r"#{1,2}\s", _content(body_after[j]))]
        first_history = next(
            j for j, line in enumerate(body_after)
            if re.fullmatch(r"##\s+History\s*", _content(line), re.IGNORECASE)
        )  # fmt: skip
        assert above and above[-1] == first_history, (
            "history lines were added outside the first History section"
        )


# Found by hypothesis: a repeated heading and a last line without its ending (a diff-based
# check took the moved history line for a changed human line).
_REPEATS = (
    b"---\n---\n\n" + "\n".join(callout(Status.PENDING, EXPIRES, "large-payments", None)).encode()
    + b"\n## History\n# Pay $1500\n## History\n# Pay $1500"
)  # fmt: skip
_REPEATS_EDIT: tuple[dict[str, Any], list[str], Any] = (
    {},
    [history_line(Transition(EXPIRES, Status.PENDING, Status.APPROVED, "alice", ""))],
    (
        [callout(s, EXPIRES, "large-payments", None) for s in Status],
        callout(Status.APPROVED, EXPIRES, "large-payments", None),
    ),
)


@pytest.mark.slow  # a long search: seconds of CPU
@SETTINGS
@given(notes(), daemon_edits())
@example(_REPEATS, _REPEATS_EDIT)
def test_a_daemon_edit_keeps_every_other_key_and_every_other_byte(
    raw: bytes, edit: tuple[dict[str, Any], list[str], Any]
) -> None:
    """The daemon's edit of a note changes only its own keys and lines; the rest stays as it was."""
    note = _parse_or_error(raw)
    event("parses" if note is not None else "NoteError on read")
    assume(note is not None)
    assert note is not None
    fields, history, swap = edit
    try:
        out = edit_note(note, fields, history, swap)
    except NoteError:
        event("edit refused (NoteError)")
        return
    event("edited")
    after = parse_note(out, note.where)  # what the daemon writes always parses
    for key, value in note.meta.items():
        if key not in fields:
            assert _normal(after.meta.get(key)) == _normal(value), key
    for key, value in fields.items():
        assert _normal(after.meta.get(key)) == _normal(value), key
    assert set(after.meta) == set(note.meta) | set(fields)
    _check_only_owned_lines_changed(note, out, fields, history, swap)


@pytest.mark.slow  # a long search: seconds of CPU
@SETTINGS
@given(notes(), daemon_edits())
def test_a_daemon_edit_of_a_plain_note_is_never_refused(
    raw: bytes, edit: tuple[dict[str, Any], list[str], Any]
) -> None:
    """Non-vacuity: when the daemon's keys are plain one-line values, the edit goes through."""
    note = _parse_or_error(raw)
    assume(note is not None)
    assert note is not None
    fields, history, swap = edit
    # Values the writer itself cannot express are the business of the test above.
    assume(all(_round_trips(v) for v in fields.values()))
    for key in fields:
        index = note.key_line(key)
        if index is not None:
            line = _content(note.lines[index])
            value = note.meta.get(key)
            assume(re.fullmatch(rf"{re.escape(key)}: [^#]*", line) is not None)
            assume(value is None or isinstance(value, str | int | float | datetime))
            assume(index + 1 >= note.fm_end or note.lines[index + 1][:1] not in (" ", "\t", "-"))
    out = edit_note(note, fields, history, swap)
    assert parse_note(out, note.where) is not None


@SETTINGS
@given(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                 st.booleans(), TIMES))  # fmt: skip
def test_every_value_the_daemon_writes_reads_back_unchanged(value: Any) -> None:
    """A result, an error, a name: whatever text it is, the note must read it back as it was."""
    written = yaml_scalar(value)
    try:
        loaded = yaml.load(f"k: {written}\n", Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as e:
        raise AssertionError(f"{value!r} written as {written} does not parse: {e}") from None
    assert _normal(loaded["k"]) == _normal(value), f"{value!r} written as {written}"


PARAM_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(10**12), 10**12),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=30),
        TRICKY,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.text(min_size=1, max_size=8), inner, max_size=3),
    ),
    max_leaves=6,
)


@pytest.mark.slow  # a long search: seconds of CPU
@SETTINGS
@given(
    params=st.dictionaries(st.text(min_size=1, max_size=12), PARAM_VALUES, max_size=5),
    summary=st.text(max_size=80),
    requested_by=st.text(min_size=1, max_size=20),
)
def test_a_new_note_reads_back_as_the_request(
    params: dict[str, Any], summary: str, requested_by: str
) -> None:
    """The whole new note: params through the YAML dumper, the rest through yaml_scalar."""
    # Text the scalar writer cannot express is the business of the test above.
    assume(_round_trips(requested_by) and _round_trips(one_line(summary, 500)))
    created = datetime(2026, 11, 22, 10, 15, tzinfo=UTC)
    request = Request(
        id="20261122T101500Z-payment-7f3a2c",
        status=Status.PENDING,
        action="payment",
        summary=one_line(summary, 500) or "payment",
        risk=Risk.HIGH,
        rule="large-payments",
        requested_by=requested_by,
        created=created,
        expires=created + timedelta(hours=1),
        params=params,
        history=(Transition(created, None, Status.PENDING, requested_by, "", ("rule r",)),),
    )
    try:
        text = render_new_note(request, "Matched rule `large-payments`.")
    except ValueError:
        return  # a value that cannot be written is refused, never written wrong
    note = parse_note(text.encode("utf-8"), "Pending_Approval/x.md")
    assert note.meta["id"] == request.id
    assert note.meta["status"] == "pending"
    assert note.meta["summary"] == request.summary
    assert note.meta["requested_by"] == requested_by
    assert (note.meta["params"] or {}) == params
    assert parse_ts(note.meta["created"]) == created
