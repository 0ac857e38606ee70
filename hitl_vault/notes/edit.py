"""Surgical edits of a note: only the lines hitl-vault owns change (a frontmatter key, the
status callout, the Details table, history lines appended); the result is read back and
refused if anything else would read differently."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..errors import NoteError
from ..times import parse_ts
from .file import BOM, Note, _content, _find_key, parse_note
from .state import read_vote
from .strict_yaml import dump_params, reads_as, yaml_scalar


def _field_span(lines: Sequence[str], start: int, end: int) -> int:
    """The index after the last line that belongs to the key at ``start`` (continuations)."""
    j = start + 1
    last = start
    while j < end:
        text = _content(lines[j])
        if text.strip() == "":
            j += 1
            continue
        if text[0] in " \t" or text == "-" or text.startswith("- "):
            last = j
            j += 1
            continue
        break
    return last + 1


def _comment_of(line_value: str, parsed: Any) -> str:
    """A trailing ``# comment`` on a key line, kept when we change the value."""
    for m in re.finditer(r"\s+#", line_value):
        before = line_value[: m.start()]
        if reads_as(before, parsed):
            return line_value[m.start() :]
    return ""


def _normalise(value: Any) -> Any:
    return parse_ts(value) if isinstance(value, datetime) else value


# A vote line's key: quoted as hitl-vault writes a name holding ": " or " #" (``"a: b"``),
# or plain.
_VOTE_LINE = re.compile(
    r"""([ \t]+)("(?:[^"\\]|\\.)*"|'(?:[^']|'')*'|[^\s:#"'][^:#]*?)[ \t]*:(?:[ \t]|$)"""
)
# What hitl-vault appends to a vote line it did not count; the human deletes it to vote again.
NOT_COUNTED = "# not counted"


def _key(text: str) -> str:
    """A ``votes:`` line's key as written, without the quotes hitl-vault may put around it."""
    text = text.strip()
    if len(text) < 2 or text[0] != text[-1] or text[0] not in "\"'":
        return text
    if text[0] == "'":
        return text[1:-1].replace("''", "'")
    try:  # the escapes a name can need (a quote, a backslash) read as JSON reads them
        return str(json.loads(text))
    except ValueError:
        return text[1:-1]


def vote_lines(note: Note) -> dict[str, str]:
    """Each name's line under ``votes:`` as the note holds it (the raw text)."""
    index = _find_key(note.lines, note.fm_end, "votes")
    if index is None:
        return {}
    stop = _field_span(note.lines, index, note.fm_end)
    found: dict[str, str] = {}
    for line in note.lines[index + 1 : stop]:
        if m := _VOTE_LINE.match(_content(line)):
            found[_key(m.group(2))] = _content(line)
    return found


def _set_votes(
    note: Note,
    lines: list[str],
    fm_end: int,
    votes: Mapping[str, str],
    marks: Mapping[str, str],
) -> tuple[list[str], int]:
    """The ``votes:`` map showing ``votes`` (name: ``approved``/``rejected``/empty): a line
    whose vote reads differently is rewritten, a missing one added; other lines stay as the
    human wrote them, but for ``marks``: ``# not counted: <why>`` appended to those lines."""
    nl = note.newline
    index = _find_key(lines, fm_end, "votes")
    have = note.meta.get("votes")
    if index is None:
        lines[fm_end:fm_end] = ["votes:" + nl]
        index, fm_end = fm_end, fm_end + 1
    elif (flow := _content(lines[index]).split(":", 1)[1]).strip():  # votes: {} or one line
        comment = _comment_of(flow, have)
        kept = [
            f"  {yaml_scalar(str(k))}: {yaml_scalar(v)}".rstrip() + nl
            for k, v in (have or {}).items()
        ]
        lines[index : index + 1] = ["votes:" + comment + nl, *kept]
        fm_end += len(kept)
    stop = _field_span(lines, index, fm_end)
    indent = "  "
    at: dict[str, int] = {}
    for i in range(index + 1, stop):
        m = _VOTE_LINE.match(_content(lines[i]))
        if m:
            indent = m.group(1)
            at[_key(m.group(2))] = i
    current = have if isinstance(have, dict) else {}
    new: list[str] = []
    for name, value in votes.items():
        line = f"{indent}{yaml_scalar(name)}: {value}".rstrip() + nl
        if name not in at:
            new.append(line)
        elif value and (  # a recorded vote, shown (and no longer marked as not counted)
            not _same_vote(current.get(name), value) or NOT_COUNTED in lines[at[name]]
        ):
            lines[at[name]] = line
    for name, why in marks.items():
        if name in at and NOT_COUNTED not in lines[at[name]]:
            text = _content(lines[at[name]]).rstrip()
            lines[at[name]] = f"{text}  {NOT_COUNTED}: {why}".rstrip() + nl
    lines[stop:stop] = new
    return lines, fm_end + len(new)


def _same_vote(have: Any, want: str) -> bool:
    try:
        return read_vote(have)[0] == read_vote(want)[0]
    except ValueError:
        return False


def edit_note(
    note: Note,
    fields: Mapping[str, Any] | None = None,
    history: Iterable[str] = (),
    callouts: tuple[Sequence[list[str]], list[str]] | None = None,
    table: list[str] | None = None,
    votes: Mapping[str, str] | None = None,
    marks: Mapping[str, str] | None = None,
) -> bytes:
    """New bytes for ``note``: ``fields`` set, ``history`` lines appended, nothing else changed.

    ``callouts`` is (candidates, new): the first candidate found in the body,
    exactly as hitl-vault wrote it, is replaced by ``new``; a callout the human
    edited is left alone. The result is re-parsed; if any
    key other than ``fields`` reads differently, :class:`NoteError` is raised and
    nothing should be written.
    """
    fields = dict(fields or {})
    nl = note.newline
    lines, fm_end = _set_fields(note, list(note.lines), note.fm_end, fields)
    if not isinstance(note.meta.get("votes", {}), dict | None):
        votes = None  # not a map: flagged under Needs attention, never written over
    if votes:
        lines, fm_end = _set_votes(note, lines, fm_end, votes, marks or {})
    if callouts is not None:
        _replace_callout(lines, fm_end, *callouts, nl)
    if table is not None and (span := details_span(lines, fm_end)) is not None:
        start, stop = span
        if [_content(line) for line in lines[start:stop]] != table:
            lines[start:stop] = [text + nl for text in table]
    _append_history(lines, fm_end, [line + nl for line in history], nl)
    text = (BOM if note.bom else "") + "".join(lines)
    data = text.encode("utf-8")
    _check_edit(note, data, fields, votes or {})
    return data


def _set_fields(
    note: Note, lines: list[str], fm_end: int, fields: Mapping[str, Any]
) -> tuple[list[str], int]:
    """``lines`` with each of ``fields`` set (a trailing comment on a one-line value kept),
    and where the frontmatter ends then."""
    nl = note.newline
    for key, value in fields.items():
        if isinstance(value, Mapping):  # params: a block of lines, as a new note has them
            block = dump_params(value).rstrip("\n").split("\n")
            block[0] = f"{key}:" + block[0].split(":", 1)[1]
        else:
            block = [f"{key}: {yaml_scalar(value)}".rstrip()]
        index = _find_key(lines, fm_end, key)
        if index is None:
            lines[fm_end:fm_end] = [text + nl for text in block]
            fm_end += len(block)
            continue
        stop = _field_span(lines, index, fm_end)
        old_value = _content(lines[index]).split(":", 1)[1]
        one = stop == index + 1 and len(block) == 1
        comment = _comment_of(old_value, note.meta.get(key)) if one else ""
        block[-1] += comment
        lines[index:stop] = [text + nl for text in block]
        fm_end -= stop - index - len(block)
    return lines, fm_end


def _replace_callout(
    lines: list[str], fm_end: int, candidates: Sequence[list[str]], new: list[str], nl: str
) -> None:
    """The first of ``candidates`` found in the body, exactly as hitl-vault wrote it,
    becomes ``new``; a callout the human edited is left alone."""
    for old in candidates:
        at = _find_block(lines, fm_end, old)
        if at is not None:
            if old != new:
                lines[at : at + len(old)] = [text + nl for text in new]
            return


def _append_history(lines: list[str], fm_end: int, extra: list[str], nl: str) -> None:
    """``extra`` lines after the last line under ``## History`` (the heading added if the
    note has none)."""
    if not extra:
        return
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += nl
    heading = next(
        (
            i
            for i in range(fm_end + 1, len(lines))
            if re.fullmatch(r"##\s+History\s*", _content(lines[i]), re.IGNORECASE)
        ),
        None,
    )
    if heading is None:
        if lines and _content(lines[-1]).strip():
            lines.append(nl)
        lines += ["## History" + nl, *extra]
        return
    end = next(
        (i for i in range(heading + 1, len(lines)) if re.match(r"#{1,2}\s", _content(lines[i]))),
        len(lines),
    )
    last = heading
    for i in range(heading + 1, end):
        if _content(lines[i]).strip():
            last = i
    lines[last + 1 : last + 1] = extra


def details_span(lines: Sequence[str], fm_end: int) -> tuple[int, int] | None:
    """Where the table hitl-vault wrote under ``## Details`` is: the rows right after the
    heading (or its ``No parameters.`` line); None when a human reshaped that part."""
    heading = next(
        (i for i in range(fm_end + 1, len(lines)) if _content(lines[i]) == "## Details"), None
    )
    if heading is None or heading + 1 >= len(lines):
        return None
    start = heading + 1
    if _content(lines[start]) == "No parameters.":
        return start, start + 1
    stop = start
    while stop < len(lines) and _content(lines[stop]).startswith("|"):
        stop += 1
    return (start, stop) if stop - start >= 2 else None


def _find_block(lines: Sequence[str], fm_end: int, block: Sequence[str]) -> int | None:
    if not block:
        return None
    for i in range(fm_end + 1, len(lines) - len(block) + 1):
        if all(_content(lines[i + k]) == block[k] for k in range(len(block))):
            return i
    return None


def _check_edit(
    note: Note, data: bytes, fields: Mapping[str, Any], votes: Mapping[str, str]
) -> None:
    """Re-parse an edit: the fields we set read back as set, every other key as before."""
    try:
        after = parse_note(data, note.where)
    except NoteError as e:
        raise NoteError(
            note.where,
            f"an update would not parse ({e.problem})",
            "check the frontmatter by hand; hitl-vault left the note as it was",
            e.line,
        ) from None
    shown: Any = after.meta.get("votes") if votes else None
    if votes and not (
        isinstance(shown, dict)
        and all(n in shown if not v else _same_vote(shown.get(n), v) for n, v in votes.items())
    ):
        raise NoteError(
            note.where,
            "the votes: map did not read back as written",
            "check the frontmatter layout near votes:; the note was left as it was",
        )
    for key, value in note.meta.items():
        if key == "votes" and votes and isinstance(shown, dict):
            before = value if isinstance(value, dict) else {}
            if any(shown.get(k) != v for k, v in before.items() if k not in votes):
                raise NoteError(
                    note.where,
                    "an update would change someone else's vote",
                    "check the frontmatter layout near votes:; the note was left as it was",
                )
            continue
        if key not in fields and _normalise(after.meta.get(key)) != _normalise(value):
            raise NoteError(
                note.where,
                f"an update would change the key {key!r}",
                "check the frontmatter layout near that key; the note was left as it was",
            )
    for key, value in fields.items():
        if _normalise(after.meta.get(key)) != _normalise(value):
            raise NoteError(
                note.where,
                f"the key {key!r} did not read back as written",
                "check the frontmatter layout near that key; the note was left as it was",
            )
