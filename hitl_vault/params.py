"""Params as they travel: JSON-like data only, checked before anything is written."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date
from typing import Any

from .errors import NoteError, ParamsChangedError, UsageError

# Deeper than this is a mistake or an attack (JSON nested thousands deep), never an action's input.
MAX_DEPTH = 64
# Python writes and reads integers of at most 4,300 digits as text (JSON is text).
_MAX_INT_BITS = 14_000
_JSON_FIX = "pass numbers, text, booleans, lists or mappings (params travel as JSON)"


class _Refused(Exception):
    def __init__(self, problem: str, fix: str) -> None:
        self.problem = problem
        self.fix = fix


def _check(value: Any, where: str, depth: int) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate, as from a file name that is not UTF-8
            raise _Refused(f"{where} is not valid Unicode text", "pass it as UTF-8 text") from None
        return value
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if value.bit_length() > _MAX_INT_BITS:
            raise _Refused(f"{where} is a number too long to hold", "send it as text")
        return value
    if depth > MAX_DEPTH:
        raise _Refused(f"{where} is nested more than {MAX_DEPTH} levels deep", "flatten it")
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        raise _Refused(f"{where} is {value}, not a finite number", _JSON_FIX)
    if isinstance(value, list | tuple):
        return [_check(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise _Refused(f"key {k!r} in {where} is not text", "use text keys")
            out[k] = _check(v, f"{where}.{k}", depth + 1)
        return out
    if isinstance(value, date):  # YAML reads 2026-12-01 as a date: JSON has no dates
        text = value.isoformat().replace("+00:00", "Z")
        raise _Refused(f"{where} reads as a date ({text})", f'quote it to keep it: "{text}"')
    if isinstance(value, bytes | set | frozenset):  # YAML's !!binary and !!set
        kind = "binary data" if isinstance(value, bytes) else "a set"
        raise _Refused(f"{where} is {kind}", "quote it to keep it as text")
    raise _Refused(f"{where} is a {type(value).__name__}", _JSON_FIX)


def clean_params(params: Mapping[str, Any] | None, argument: str = "params") -> dict[str, Any]:
    """Params as JSON-like data (text keys; numbers, text, booleans, null, lists, mappings)."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise UsageError(argument, "is not a mapping", "pass a dict of name -> value")
    try:
        result: dict[str, Any] = _check(params, "params", 0)
    except _Refused as e:
        raise UsageError(argument, e.problem, e.fix) from None
    return result


def note_params(params: Any, where: str, line: int | None) -> dict[str, Any]:
    """A note's ``params`` as they would run; :class:`NoteError` naming the note and the fix."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise NoteError(where, "params is not a set of `key: value` lines", "fix params", line)
    try:
        result: dict[str, Any] = _check(params, "params", 0)
    except _Refused as e:
        raise NoteError(where, e.problem, e.fix, line) from None
    return result


def check_expected(request_id: str, sha: str, expect: str | None, edited: str) -> None:
    """Refuse to approve params other than those the approver saw (see ``Vault.approve``)."""
    if expect is None:
        raise ParamsChangedError(
            request_id,
            f"its params were edited ({edited}) since it was asked for",
            f"check them with `hitl-vault show {request_id}`, then approve with "
            f"--expect {sha[:16]}",
        )
    wanted = expect.strip().lower()
    if len(wanted) < 8 or not sha.startswith(wanted):
        what = f"edited since it was asked for: {edited}" if edited else "the params as asked for"
        raise ParamsChangedError(
            request_id,
            f"the params to run have the hash {sha[:16]}, not {wanted[:16]} ({what})",
            f"check them with `hitl-vault show {request_id}`, then approve with the hash it prints",
        )


def params_sha(params: Mapping[str, Any]) -> str:
    """SHA-256 of the params in canonical JSON (sorted keys, no spaces)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    import hashlib  # not at import: the agent gate loads this module before every call

    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def describe_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> str:
    """``amount 1500 → 1000, memo added: x``: how edited params differ from the requested ones."""

    def show(value: Any) -> str:
        return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)

    def same(a: Any, b: Any) -> bool:
        return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)

    parts = []
    for key in [*before, *(k for k in after if k not in before)]:
        if key not in after:
            parts.append(f"{key} removed")
        elif key not in before:
            parts.append(f"{key} added: {show(after[key])}")
        elif not same(before[key], after[key]):
            parts.append(f"{key} {show(before[key])} → {show(after[key])}")
    return ", ".join(parts)
