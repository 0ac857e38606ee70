"""YAML as notes hold it: read strictly (no aliases, no duplicate keys, every value Python
can hold, errors with their line), and written so it reads back exactly as meant."""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import yaml

from ..errors import NoteError
from ..times import format_ts

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


@contextmanager
def yaml_errors(where: str, first_line: int = 1) -> Iterator[None]:
    """Turn what YAML raises while reading into :class:`NoteError` naming ``where`` and the
    line (offset by ``first_line - 1``)."""
    try:
        yield
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


# --- writing ----------------------------------------------------------------------

_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_PLAIN_SAFE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9 _.@/$,()+=-]*")


def yaml_scalar(value: Any) -> str:
    """One-line YAML for a value we write: plain when YAML reads it back unchanged, else quoted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_ts(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"{value!r} cannot be written to a note")
        text = repr(value)
        if "e" in text and "." not in text:  # YAML 1.1 reads "1e-05" as text, "1.0e-05" as a float
            mantissa, exponent = text.split("e")
            text = f"{mantissa}.0e{exponent}"
        return text
    text = str(value)
    if text and text == text.strip() and _PLAIN_SAFE.fullmatch(text) and _reads_as(text, text):
        return text
    return _double_quoted(text)


# What a YAML double-quoted scalar must escape: the quote, the backslash, line breaks and
# tabs (kept on one line), Unicode line breaks, and what YAML cannot print (YAML 1.1, 5.1).
_MUST_ESCAPE = re.compile(
    '["\\\\\n\t\r]|[^\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]'
)
_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    ch = match.group()
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def _double_quoted(text: str) -> str:
    """A YAML double-quoted scalar that reads back as ``text``, whatever characters it holds."""
    return '"' + _MUST_ESCAPE.sub(_escape, text) + '"'


@functools.lru_cache(maxsize=4096)
def _reads_as(scalar: str, expected: str) -> bool:
    try:
        return bool(yaml.load(f"k: {scalar}\n", Loader=_Loader) == {"k": expected})
    except (yaml.YAMLError, ValueError, OverflowError):  # 2026-02-30: quote it
        return False


def dump_params(params: Mapping[str, Any]) -> str:
    if not params:
        return "params: {}\n"
    text: str = yaml.dump(
        {"params": dict(params)},
        Dumper=_Dumper,
        sort_keys=False,
        allow_unicode=True,
        default_flow_style=False,
        width=2**31 - 1,
    )
    return text


def reads_as(text: str, value: Any) -> bool:
    """Whether ``k: <text>`` reads back as ``value`` (a value YAML cannot hold never does)."""
    try:
        return bool(yaml.load(f"k: {text}\n", Loader=_Loader) == {"k": value})
    except (yaml.YAMLError, ValueError, OverflowError):  # 2026-02-30 reads as no value
        return False


def quoted_text(raw: str) -> str | None:
    """The text a YAML-quoted scalar (``"a b"``, ``'x'``) stands for; None if it is not one."""
    try:
        unquoted = yaml.safe_load(raw)
    except yaml.YAMLError:
        return None
    return unquoted if isinstance(unquoted, str) else None
