"""Markdown notes with YAML frontmatter: strict reading, surgical edits, safe writes.

A note is something a human may have open in an editor right now, so:

* reading is strict: anything we cannot understand exactly is a :class:`NoteError`
  with the line and the fix, never a silent empty result;
* editing changes only the lines hitl-vault owns (a frontmatter key, the status
  callout, one history line) and re-parses the result to prove nothing else moved.

What we write is rendered in :mod:`hitl_vault.render` and written durably by
:mod:`hitl_vault.durable`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .durable import MAX_NOTE_BYTES, read_file, too_big
from .errors import NoteError
from .render import yaml_scalar
from .times import parse_ts

BOM = "\ufeff"

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
if TYPE_CHECKING:
    _Base = yaml.SafeLoader
else:  # libyaml's parser when it is there, with the Python constructor we extend
    _Base = _Loader


class _AliasFound(Exception):
    def __init__(self, mark: Any) -> None:
        self.mark = mark


class _BadValue(Exception):
    """A scalar YAML reads but Python cannot hold: ``2026-02-30``, an int of 5,000 digits."""

    def __init__(self, problem: str, mark: Any) -> None:
        self.problem = problem
        self.mark = mark


class _DuplicateKey(Exception):
    def __init__(self, key: str, mark: Any) -> None:
        self.key = key
        self.mark = mark


class StrictLoader(_Base):
    """A safe loader that refuses aliases (alias bombs) and duplicate keys (silent overrides)."""

    def construct_object(self, node: Any, deep: bool = False) -> Any:
        if node in self.constructed_objects or node in self.recursive_objects:
            raise _AliasFound(node.start_mark)
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as e:
            raise _BadValue(_bad_value(node, e), node.start_mark) from None

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: set[tuple[str, str]] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                ident = (key_node.tag, key_node.value)
                if ident in seen:
                    raise _DuplicateKey(str(key_node.value), key_node.start_mark)
                seen.add(ident)
        return super().construct_mapping(node, deep)


def _bad_value(node: Any, error: Exception) -> str:
    """Why YAML could not hold a scalar, in words: a date that does not exist, a huge number."""
    text = str(node.value)
    shown = repr(text) if len(text) <= 40 else f"{text[:20]!r}… ({len(text)} characters)"
    kind = str(node.tag).rsplit(":", 1)[-1]
    if kind == "timestamp":
        return f"{shown} reads as a date that does not exist ({error})"
    if kind == "int" and "digits" in str(error):
        return f"{shown} reads as a number too long to hold (at most 4,300 digits)"
    return f"{shown} cannot be read as a {kind} ({error})"


def load_yaml(text: str, where: str, first_line: int = 1) -> Any:
    """Parse YAML strictly; errors name ``where`` and the line (offset by ``first_line - 1``)."""
    try:
        return yaml.load(text, Loader=StrictLoader)
    except _AliasFound as e:
        raise NoteError(
            where,
            "YAML anchors and aliases are not allowed",
            "write each value out in full",
            e.mark.line + first_line,
        ) from None
    except _BadValue as e:
        raise NoteError(
            where, e.problem, "quote the value to keep it as text", e.mark.line + first_line
        ) from None
    except RecursionError:
        raise NoteError(where, "the YAML is nested too deeply", "flatten it") from None
    except _DuplicateKey as e:
        raise NoteError(
            where, f"the key {e.key!r} appears twice", "keep one of them", e.mark.line + first_line
        ) from None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + first_line if mark is not None else None
        problem = (e.problem or e.context or "invalid YAML").strip()
        raise NoteError(
            where, f"YAML error: {problem}", "fix the frontmatter syntax", line
        ) from None
    except yaml.YAMLError as e:
        raise NoteError(where, f"YAML error: {e}", "fix the frontmatter syntax") from None


@dataclass(frozen=True)
class Note:
    """A note as read from disk, parsed strictly; edits produce new bytes, never mutate this."""

    where: str
    raw: bytes
    bom: bool
    newline: str
    lines: tuple[str, ...]
    fm_end: int
    meta: Mapping[str, Any]

    @property
    def id(self) -> str | None:
        value = self.meta.get("id")
        return value if isinstance(value, str) else None

    @property
    def status_text(self) -> str:
        """What the human wrote after ``status:``, as text (YAML would turn ``yes`` into True)."""
        value = self.meta.get("status")
        if isinstance(value, str):
            return value
        if value is None:
            return ""
        index = self.key_line("status")
        if index is not None:
            raw = _content(self.lines[index]).split(":", 1)[1]
            return _strip_comment(raw).strip().strip("\"'")
        return str(value)

    @property
    def body(self) -> str:
        return "".join(self.lines[self.fm_end + 1 :])

    def key_line(self, key: str) -> int | None:
        return _find_key(self.lines, self.fm_end, key)


def _content(line: str) -> str:
    """A line without its ending."""
    if line.endswith("\r\n"):
        return line[:-2]
    if line.endswith("\n"):
        return line[:-1]
    return line


def parse_note(raw: bytes, where: str) -> Note:
    """Split and parse a note strictly; :class:`NoteError` for anything we would have to guess."""
    if len(raw) > MAX_NOTE_BYTES:
        raise too_big(where, len(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise NoteError(where, "is not valid UTF-8", "save it as UTF-8", line) from None
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


def _line_of_key(lines: Sequence[str], fm_end: int, key: str) -> int | None:
    for i in range(1, fm_end):
        if lines[i].startswith(key):
            return i + 1
    return None


def read_note(path: Path, where: str) -> Note:
    """Read and parse a note; links, pipes and oversized files are refused before reading."""
    try:
        data = read_file(path, where)
    except FileNotFoundError:  # moved or deleted a moment ago
        raise NoteError(where, "does not exist", "nothing to do: it was moved or deleted") from None
    return parse_note(data, where)


# --- surgical edits ---------------------------------------------------------------


def _strip_comment(value: str) -> str:
    m = re.search(r"\s#", value)
    return value[: m.start()] if m else value


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
        try:
            if yaml.load(f"k: {before}\n", Loader=_Loader) == {"k": parsed}:
                return line_value[m.start() :]
        except (yaml.YAMLError, ValueError, OverflowError):  # 2026-02-30 reads as no value
            continue
    return ""


def _normalise(value: Any) -> Any:
    return parse_ts(value) if isinstance(value, datetime) else value


def edit_note(
    note: Note,
    fields: Mapping[str, Any] | None = None,
    history: Iterable[str] = (),
    callouts: tuple[Sequence[list[str]], list[str]] | None = None,
    table: list[str] | None = None,
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
    lines = list(note.lines)
    fm_end = note.fm_end
    for key, value in fields.items():
        rendered = f"{key}: {yaml_scalar(value)}".rstrip()
        index = _find_key(lines, fm_end, key)
        if index is None:
            lines.insert(fm_end, rendered + nl)
            fm_end += 1
            continue
        stop = _field_span(lines, index, fm_end)
        old_value = _content(lines[index]).split(":", 1)[1]
        comment = _comment_of(old_value, note.meta.get(key)) if stop == index + 1 else ""
        ending = nl if lines[stop - 1].endswith("\n") else ""
        lines[index:stop] = [rendered + comment + (ending or nl)]
        fm_end -= stop - index - 1
    if callouts is not None:
        candidates, new = callouts
        for old in candidates:
            at = _find_block(lines, fm_end, old)
            if at is not None:
                if old != new:
                    lines[at : at + len(old)] = [text + nl for text in new]
                break
    if table is not None and (span := details_span(lines, fm_end)) is not None:
        start, stop = span
        if [_content(line) for line in lines[start:stop]] != table:
            lines[start:stop] = [text + nl for text in table]
    extra = [line + nl for line in history]
    if extra:
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
        else:
            end = next(
                (
                    i
                    for i in range(heading + 1, len(lines))
                    if re.match(r"#{1,2}\s", _content(lines[i]))
                ),
                len(lines),
            )
            last = heading
            for i in range(heading + 1, end):
                if _content(lines[i]).strip():
                    last = i
            lines[last + 1 : last + 1] = extra
    text = (BOM if note.bom else "") + "".join(lines)
    data = text.encode("utf-8")
    _check_edit(note, data, fields)
    return data


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


def _find_key(lines: Sequence[str], fm_end: int, key: str) -> int | None:
    pattern = re.compile(rf"^{re.escape(key)}\s*:(\s|$)")
    return next((i for i in range(1, fm_end) if pattern.match(lines[i])), None)


def _find_block(lines: Sequence[str], fm_end: int, block: Sequence[str]) -> int | None:
    if not block:
        return None
    for i in range(fm_end + 1, len(lines) - len(block) + 1):
        if all(_content(lines[i + k]) == block[k] for k in range(len(block))):
            return i
    return None


def _check_edit(note: Note, data: bytes, fields: Mapping[str, Any]) -> None:
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
    for key, value in note.meta.items():
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
