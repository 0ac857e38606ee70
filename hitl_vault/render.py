"""What hitl-vault writes into notes: YAML values that read back unchanged, and new notes."""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import yaml

from .model import Request, Status, format_ts

_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
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


def _dump_params(params: Mapping[str, Any]) -> str:
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


def callout(status: Status, expires: datetime | None, rule: str, reason: str | None) -> list[str]:
    """The callout under the title: what the reader should know about this status."""
    if status is Status.PENDING:
        until = expires.strftime("%Y-%m-%d %H:%M UTC") if expires else "it is decided"
        return [
            f"> [!question] Waiting for your decision until {until}",
            "> Set `status` to `approved` or `rejected` (optionally fill `reason` and",
            "> `decided_by`), or move this note into Approved/ or Rejected/.",
        ]
    kind = {
        Status.APPROVED: "success",
        Status.EXECUTING: "info",
        Status.EXECUTED: "success",
        Status.FAILED: "failure",
        Status.REJECTED: "failure",
        Status.TIMED_OUT: "warning",
        Status.CANCELLED: "abstract",
    }[status]
    title = status.value.replace("_", " ").capitalize()
    if status in (Status.APPROVED, Status.REJECTED) and rule and not reason:
        title += f" (rule {rule})"
    lines = [f"> [!{kind}] {title}"]
    if reason and status is Status.REJECTED:
        lines.append(f"> {' '.join(reason.split())}")
    return lines


def _cell(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return " ".join(text.split()).replace("|", "\\|")


def render_new_note(request: Request, explanation: str) -> str:
    """The whole text of a new request note (SPEC section 3), with ``\\n`` endings."""
    fields: list[tuple[str, Any]] = [
        ("id", request.id),
        ("status", str(request.status)),
        ("action", request.action),
        ("summary", request.summary),
        ("risk", str(request.risk)),
        ("rule", request.rule),
        ("requested_by", request.requested_by),
        ("created", request.created),
        ("expires", request.expires),
    ]
    out = ["---"]
    out += [f"{k}: {yaml_scalar(v)}".rstrip() for k, v in fields]
    out.append(_dump_params(request.params).rstrip("\n"))
    out += [f"decided_by: {yaml_scalar(request.decided_by)}".rstrip()]
    out += [f"reason: {yaml_scalar(request.reason)}".rstrip()]
    out.append("---")
    out.append(f"# {' '.join((request.summary or request.action).split())}")
    out.append("")
    out += callout(request.status, request.expires, request.rule, request.reason)
    out += ["", "## Details"]
    if request.params:
        out += ["| param | value |", "|---|---|"]
        out += [f"| {_cell(k)} | {_cell(v)} |" for k, v in request.params.items()]
    else:
        out.append("No parameters.")
    if explanation:
        out += ["", explanation]
    out += ["", "## History"]
    out += [t.history_line() for t in request.history]
    return "\n".join(out) + "\n"
