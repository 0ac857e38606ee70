"""Bodies in and errors out: a request's JSON body checked field by field (422 with the
CLI's words), and each hitl-vault error as the HTTP status it stands for."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.responses import JSONResponse

from ..errors import (
    BodyTooLargeError,
    DecisionRefusedError,
    ForbiddenError,
    IllegalTransitionError,
    JournalDamagedError,
    JournalUnavailableError,
    NotAuthenticatedError,
    NotReportableError,
    ParamsChangedError,
    RequestNotFoundError,
    TooManyAttemptsError,
    UsageError,
    VaultError,
)

log = logging.getLogger("hitl_vault.serve")

# A field's name → the JSON types it may have (``dict``: an object).
Fields = Mapping[str, "type | tuple[type, ...]"]
_KIND = {str: "text", dict: "an object", int: "a number", float: "a number", bool: "true or false"}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def parse_json(
    raw: bytes,
    fields: Fields | None,
    *,
    required: Sequence[str] = (),
    empty: bool = False,
) -> dict[str, Any]:
    """The body as a JSON object with only ``fields`` (None: any), each of its type
    (``empty``: no body at all is ``{}``)."""
    if empty and not raw.strip():
        return {}
    body = _loaded(raw)
    if fields is None:
        return body
    unknown = sorted(set(body) - set(fields))
    if unknown:
        names = ", ".join(fields) or "none"
        raise UsageError(unknown[0], "is not a field of this request", f"the fields are: {names}")
    for name in required:
        if name not in body:
            raise UsageError(name, "is missing", f"give {name}")
    for name, value in body.items():
        if value is None and name not in required:
            continue
        kind = fields[name]
        kinds: tuple[type, ...] = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            wanted = " or ".join(dict.fromkeys(_KIND[k] for k in kinds))
            raise UsageError(
                name, f"must be {wanted}, not {json.dumps(value)[:80]}", f"give {name} as {wanted}"
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(name, "is not a finite number", "give a number")
    return body


def _loaded(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object whose every text is valid Unicode."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except UnicodeDecodeError:
        raise UsageError("body", "is not UTF-8", "send JSON in UTF-8") from None
    except RecursionError:
        raise UsageError("body", "nested too deeply", "flatten it") from None
    except ValueError as e:  # JSONDecodeError, NaN, a number of more than 4,300 digits
        raise UsageError("body", f"not valid JSON: {e}", "fix the JSON") from None
    if not isinstance(body, dict):
        raise UsageError("body", "must be a JSON object", 'send {"key": value, ...}')
    for name, value in body.items():
        if not _unicode(name) or not _unicode(value):
            raise UsageError(
                name if _unicode(name) else "body",
                "holds text that is not valid Unicode (a lone surrogate, \\ud800 and the like)",
                "send UTF-8 text",
            )
    return body


def _unicode(value: Any) -> bool:
    """Whether every text in ``value`` (keys too) can be written as UTF-8."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return False
        elif isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list):
            stack += item
    return True


def _json_error(status: int, error: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": error, **extra}, status_code=status)


def error_response(e: Exception) -> JSONResponse | None:
    """The answer for an error a request may meet (None: a bug, raised on)."""
    if isinstance(e, NotAuthenticatedError):
        return JSONResponse(
            {"error": "unauthorized"}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    if isinstance(e, TooManyAttemptsError):
        return JSONResponse({"error": str(e)}, status_code=429, headers={"Retry-After": "60"})
    if isinstance(e, ForbiddenError | DecisionRefusedError):
        return _json_error(403, str(e))
    if isinstance(e, RequestNotFoundError):
        return _json_error(404, str(e), id=e.request_id)
    if isinstance(e, ParamsChangedError):
        return _json_error(409, str(e), id=e.request_id, type="params_changed")
    if isinstance(e, NotReportableError):
        return _json_error(409, str(e), id=e.request_id, current=str(e.current))
    if isinstance(e, IllegalTransitionError):
        extra = {"id": e.request_id, "current": str(e.current), "wanted": str(e.wanted)}
        return _json_error(409, str(e), **extra)
    if isinstance(e, BodyTooLargeError):
        return _json_error(413, str(e))
    if isinstance(e, UsageError):
        return _json_error(422, str(e))
    if isinstance(e, RecursionError):
        return _json_error(422, "params: nested too deeply (flatten them)")
    if isinstance(e, JournalUnavailableError | JournalDamagedError):
        log.error("the journal cannot be used: %s", e)
        return _json_error(503, str(e))
    if isinstance(e, VaultError):  # a rule that raised, a note it cannot write: it says why
        log.warning("refused: %s", e)
        return _json_error(503, str(e))
    return None
