"""Markdown notes with YAML frontmatter: strict reading, surgical edits, safe writes.

A note is something a human may have open in an editor right now, so:

* reading is strict: anything we cannot understand exactly is a :class:`NoteError`
  with the line and the fix, never a silent empty result;
* editing changes only the lines hitl-vault owns (a frontmatter key, the status
  callout, one history line) and re-parses the result to prove nothing else moved.

The frontmatter is split from the body by python-frontmatter's handlers, with
our boundaries and our strict loaders plugged in; where it cannot split, the
error is ours (its ``loads`` would silently return empty metadata). Notes are
YAML; Inbox proposals may also use the ``+++`` TOML and ``{`` JSON forms the
library knows (:func:`parse_frontmatter`).

What we write is rendered in :mod:`hitl_vault.notes.render` and written durably by
:mod:`hitl_vault.durable`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import frontmatter
from frontmatter.default_handlers import BaseHandler, JSONHandler, YAMLHandler

from ..durable import MAX_NOTE_BYTES, read_file, too_big
from ..errors import NoteError
from .strict_yaml import StrictLoader, yaml_errors

BOM = "\ufeff"


class YAMLFrontmatter(YAMLHandler):
    """python-frontmatter's YAML handler with our boundaries and :class:`StrictLoader`.

    Its own boundary, ``^-{3,}\\s*$``, also takes ``----`` and lets ``\\s*`` run on over
    blank lines (the split would then eat them and shift every line number after
    them). Ours is a line ``---`` with nothing but blanks after it; the closing line
    may also be YAML's ``...``. ``[^\\S\\n]`` is ``str.rstrip``'s whitespace (``re``
    and ``str`` share it) except the line end, so the split lands exactly where
    the line-by-line check it replaces did.
    """

    FM_BOUNDARY = re.compile(r"^(?:---|\.\.\.)[^\S\n]*$", re.MULTILINE)
    OPENING = re.compile(r"---[^\S\n]*$", re.MULTILINE)

    def detect(self, text: str) -> bool:
        return self.OPENING.match(text) is not None

    def load(self, fm: str, **kwargs: object) -> Any:
        kwargs.setdefault("Loader", StrictLoader)
        return super().load(fm, **kwargs)


class TOMLFrontmatter(BaseHandler):
    """``+++`` TOML frontmatter, read with the standard library's :mod:`tomllib`.

    python-frontmatter's own TOMLHandler needs the third-party ``toml`` package
    (without it the handler is None); the boundary is tightened as for YAML.
    """

    FM_BOUNDARY = re.compile(r"^\+\+\+[^\S\n]*$", re.MULTILINE)
    START_DELIMITER = END_DELIMITER = "+++"

    def load(self, fm: str, **kwargs: object) -> Any:
        import tomllib  # here: few notes are TOML, and every command reads notes

        return tomllib.loads(fm)


class JSONFrontmatter(JSONHandler):
    """python-frontmatter's JSON frontmatter: a line ``{``, the keys, a line ``}``.

    Its boundary, ``^(?:{|})$``, misses a CRLF file (``$`` stops before ``\\n``, not
    ``\\r``) and would take a file starting with ``}``; ours allows trailing blanks
    and opens only on ``{``. The library splits at the first line that is only
    ``{`` or ``}``, so nested braces must be indented.
    """

    FM_BOUNDARY = re.compile(r"^[{}][^\S\n]*$", re.MULTILINE)
    OPENING = re.compile(r"\{[^\S\n]*$", re.MULTILINE)

    def detect(self, text: str) -> bool:
        return self.OPENING.match(text) is not None


YAML = YAMLFrontmatter()
TOML = TOMLFrontmatter()
JSON = JSONFrontmatter()
# The forms an Inbox proposal may take, tried in this order by ``frontmatter.detect_format``.
PROPOSAL_HANDLERS: tuple[BaseHandler, ...] = (YAML, TOML, JSON)


def load_yaml(text: str, where: str, first_line: int = 1) -> Any:
    """Parse YAML strictly; errors name ``where`` and the line (offset by ``first_line - 1``)."""
    with yaml_errors(where, first_line):
        return YAML.load(text)


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


def _text(raw: bytes, where: str) -> tuple[str, bool]:
    """A note's text without its BOM, and whether it had one; over the size cap or not
    UTF-8 is an error."""
    if len(raw) > MAX_NOTE_BYTES:
        raise too_big(where, len(raw))
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise NoteError(where, "is not valid UTF-8", "save it as UTF-8", line) from None
    bom = text.startswith(BOM)
    return (text[1:], True) if bom else (text, False)


_LINE_ENDS = re.compile(r"(?<=\n)")


# The hot path (the daemon parses every note it sees). Splitting with the handler's regex
# instead of a line-by-line search: a rendered request note (32 lines) took 106.3 us to
# parse before and 100.2 us after (median of 200 x 500 calls, CPython 3.11, libyaml); the
# split alone went from 20.2 to 14.0 us. The YAML load is the rest and did not change.
def parse_note(raw: bytes, where: str) -> Note:
    """Split and parse a note strictly; :class:`NoteError` for anything we would have to guess."""
    text, bom = _text(raw, where)
    if not YAML.detect(text):
        raise NoteError(
            where, "has no frontmatter", "start the file with a line `---`, then the YAML keys", 1
        )
    try:
        fm, _ = YAML.split(text)
    except ValueError:  # fewer than two boundaries; python-frontmatter would return no metadata
        raise NoteError(
            where, "the frontmatter has no closing `---`", "add a line `---` after the last key", 1
        ) from None
    # ``fm`` runs from the end of the opening `---` (its line end included) to the start of
    # the closing line, so it holds one line end per line before the closing one.
    fm_end = fm.count("\n")
    lines = tuple(part for part in _LINE_ENDS.split(text) if part)
    newline = "\r\n" if lines[0].endswith("\r\n") else "\n"
    # The keys with LF endings, from the line after `---` (line 2): `\r\n` only ever ends a line.
    meta = load_yaml(fm[1:].replace("\r\n", "\n"), where, first_line=2)
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


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _json_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose keys are all different (json.loads would keep the last silently)."""
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _RepeatedKey(key)
            seen.add(key)
    return result


def load_json(text: str, where: str, fix: str = "fix the JSON") -> Any:
    """Parse JSON; errors name ``where``, the line and ``fix``; a key given twice is refused."""
    try:
        return JSON.load(text, object_pairs_hook=_json_object)
    except _RepeatedKey as e:
        raise NoteError(where, f"the key {e.key!r} appears twice", "keep one of them") from None
    except json.JSONDecodeError as e:
        raise NoteError(where, f"is not valid JSON ({e.msg})", fix, e.lineno) from None
    except RecursionError:
        raise NoteError(where, "is JSON nested too deeply", "flatten it") from None
    except ValueError as e:  # a number of more than 4,300 digits
        raise NoteError(where, f"cannot be read ({e})", "quote long numbers") from None


# tomllib's messages end in "(at line L, column C)" or "(at end of document)".
_TOML_WHERE = re.compile(r"(.*) \(at (?:line (\d+), column \d+|end of document)\)", re.DOTALL)


def load_toml(text: str, where: str, last_line: int | None = None) -> dict[str, Any]:
    """Parse TOML (its line 1 is the file's); an error at its end is put on ``last_line``."""
    import tomllib

    try:
        data: dict[str, Any] = TOML.load(text)
    except tomllib.TOMLDecodeError as e:
        m = _TOML_WHERE.fullmatch(str(e))
        problem = m[1] if m else str(e)
        line = (int(m[2]) if m[2] else last_line) if m else None
        raise NoteError(
            where, f"TOML error: {problem}", "fix the TOML between the `+++` lines", line
        ) from None
    except RecursionError:
        raise NoteError(where, "the TOML is nested too deeply", "flatten it") from None
    except ValueError as e:  # a number of more than 4,300 digits
        raise NoteError(where, f"cannot be read ({e})", "quote long numbers") from None
    return data


def parse_frontmatter(raw: bytes, where: str) -> dict[str, Any]:
    """The frontmatter of a file in a form python-frontmatter knows (detected by its
    ``detect_format``): ``---`` YAML, read exactly as :func:`parse_note` reads a note;
    ``+++`` TOML; or JSON between a line ``{`` and a line ``}``. Inbox proposals use it."""
    return split_frontmatter(raw, where)[0]


def split_frontmatter(raw: bytes, where: str) -> tuple[dict[str, Any], str]:
    """:func:`parse_frontmatter`'s keys, and the text after the closing line (the body), as
    it is in the file, line endings included."""
    text, _ = _text(raw, where)
    handler = frontmatter.detect_format(text, PROPOSAL_HANDLERS)
    if handler is YAML:
        note = parse_note(raw, where)
        return dict(note.meta), note.body
    if handler is None:
        raise NoteError(
            where,
            "has no frontmatter",
            "start the file with a line `---`, `+++` or `{`, then the YAML, TOML or JSON keys",
            1,
        )
    closing = "+++" if handler is TOML else "}"
    try:
        fm, body = handler.split(text)
    except ValueError:  # python-frontmatter's loads would return empty metadata here
        raise NoteError(
            where,
            f"the frontmatter has no closing `{closing}`",
            f"add a line `{closing}` after the last key",
            1,
        ) from None
    # As with YAML, ``fm`` starts with the opening line's end: its line 1 is the file's.
    # ``body`` starts with the closing line's end.
    body = body[1:] if body.startswith("\n") else body
    if handler is TOML:
        return load_toml(fm, where, last_line=fm.count("\n") + 1), body
    data = load_json(
        fm,
        where,
        "fix the JSON between the `{` and `}` lines; the first line that is only `{` or `}` "
        "ends it, so indent nested braces",
    )
    if not isinstance(data, dict):  # cannot happen: the split wraps it in braces
        raise NoteError(where, "the frontmatter is not a JSON object", "write {...}", 1)
    return data, body


def read_note(path: Path, where: str) -> Note:
    """Read and parse a note; links, pipes and oversized files are refused before reading."""
    try:
        data = read_file(path, where)
    except FileNotFoundError:  # moved or deleted a moment ago
        raise NoteError(where, "does not exist", "nothing to do: it was moved or deleted") from None
    return parse_note(data, where)


def _strip_comment(value: str) -> str:
    m = re.search(r"\s#", value)
    return value[: m.start()] if m else value


def _find_key(lines: Sequence[str], fm_end: int, key: str) -> int | None:
    pattern = re.compile(rf"^{re.escape(key)}\s*:(\s|$)")
    return next((i for i in range(1, fm_end) if pattern.match(lines[i])), None)
