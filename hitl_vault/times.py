"""Time as notes and the journal write it, and durations as people write them."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from .errors import UsageError

_TS_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utcnow() -> datetime:
    """Now, in UTC, to the second (what notes can show)."""
    return datetime.now(UTC).replace(microsecond=0)


def format_ts(value: datetime) -> str:
    """ISO 8601 UTC with ``T`` and ``Z``, to the second."""
    return value.astimezone(UTC).strftime(_TS_FORMAT)


def parse_ts(value: str | datetime) -> datetime:
    """A timestamp as notes and the journal store it (YAML may already have parsed it)."""
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


_DURATION_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|[smhd])")
# The longest duration read (100 years): anything longer overflows a date, and means "never".
MAX_DURATION = timedelta(days=36500)
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str | int | float | timedelta, argument: str = "duration") -> timedelta:
    """``90s``, ``15m``, ``1h``, ``2d`` (or ``1h30m``, ``500ms``); a bare number is seconds."""
    if isinstance(text, timedelta):
        return text
    if isinstance(text, bool):
        raise UsageError(
            argument, f"{text!r} is not a duration", "write it like 90s, 15m, 1h or 2d"
        )
    if isinstance(text, int | float):
        seconds = float(text)
    else:
        s = str(text).strip().lower()
        pos, seconds = 0, 0.0
        for m in _DURATION_RE.finditer(s):
            if s[pos : m.start()].strip():
                break
            seconds += float(m.group(1)) * _UNIT_SECONDS[m.group(2)]
            pos = m.end()
        if not s or pos == 0 or s[pos:].strip():
            raise UsageError(
                argument, f"{text!r} is not a duration", "write it like 90s, 15m, 1h or 2d"
            )
    if seconds <= 0:
        raise UsageError(argument, f"{text!r} is not a positive duration", "use e.g. 90s or 1h")
    if not seconds <= MAX_DURATION.total_seconds():  # also NaN and infinity
        shown = f"{str(text)[:20]!r}…" if len(str(text)) > 20 else repr(text)
        raise UsageError(argument, f"{shown} is longer than 100 years", "use at most 36500d")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest way to write a duration in the units ``parse_duration`` reads."""
    if value.total_seconds() < 1 or value.microseconds:
        return f"{round(value.total_seconds() * 1000)}ms"
    seconds = int(value.total_seconds())
    for unit in ("d", "h", "m"):
        size = _UNIT_SECONDS[unit]
        if seconds and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"
