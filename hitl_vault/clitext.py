"""What the CLI reads from the command line and prints, without click: ``-p`` values,
``--params-json``, ``--context-file``, the stable JSON shapes, one-line outcomes."""

from __future__ import annotations

import json
import math
import re
from datetime import datetime
from typing import Any, BinaryIO

from .asked import MAX_CONTEXT
from .errors import UsageError
from .model import Request, Status
from .noteyaml import quoted_text
from .quorum import Count
from .render import _NOT_PRINTABLE_ASCII, _visible, history_line
from .rules import Ruling
from .times import format_duration, format_ts


def request_json(request: Request, votes: Count | None = None) -> dict[str, Any]:
    """The stable JSON form used by ``--json`` (documented in the README).

    ``votes``: where its votes stand (:meth:`Vault.votes`), for ``votes``, ``stage`` and
    the ``approvers`` who may still approve (null: anyone)."""

    def ts(value: datetime | None) -> str | None:
        return format_ts(value) if value else None

    return {
        "id": request.id,
        "status": str(request.status),
        "action": request.action,
        "summary": request.summary,
        "risk": str(request.risk),
        "rule": request.rule,
        "requested_by": request.requested_by,
        "created": ts(request.created),
        "expires": ts(request.expires),
        "params": dict(request.params),
        "decided_by": request.decided_by,
        "reason": request.reason,
        "decided_at": ts(request.decided_at),
        "executed_at": ts(request.executed_at),
        "result": request.result,
        "error": request.error,
        "path": str(request.path) if request.path else None,
        "context": request.context,
        **(votes_json(request, votes) if votes is not None else {}),
        "retry_of": request.retry_of,
        "retried_as": request.retried_as,
        "history": [history_line(t)[2:] for t in request.history],
    }


def votes_json(request: Request, votes: Count) -> dict[str, Any]:
    """``votes`` (name → approved | rejected | null), ``stage``, ``approvers`` still needed."""
    pending = request.status is Status.PENDING
    waiting = votes.waiting_for() if pending else []
    shown: dict[str, str | None] = dict.fromkeys(waiting or ())
    shown |= {t.by: str(t.to_status) for t in request.votes()}
    return {
        "votes": shown,
        "stage": votes.stage_name if pending else None,
        "approvers": waiting,
    }


_NUMBER = re.compile(r"-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?")
_QUOTED = re.compile(r"""(".*"|'.*')""", re.S)


def parse_param(text: str) -> tuple[str, Any]:
    """``key=value``: a plain number, true/false or null is read as such, anything else is text.

    Not YAML 1.1's full reading, which would turn ``01234`` into 668, ``NO`` into
    false and ``12:30:00`` into 45000. A value in YAML quotes is that text.
    """
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise UsageError("-p", f"{text!r} is not key=value", "write e.g. -p amount=1500")
    return key.strip(), parse_scalar(raw)


def parse_scalar(raw: str) -> Any:
    word = raw.lower()
    if word in ("true", "false"):
        return word == "true"
    if word in ("null", "~"):
        return None
    if _NUMBER.fullmatch(raw):
        if raw.lstrip("-").isdigit():
            try:
                return int(raw)
            except ValueError:  # over Python's 4,300 digits: keep exactly what was typed
                return raw
        number = float(raw)
        return number if math.isfinite(number) else raw
    if _QUOTED.fullmatch(raw):
        unquoted = quoted_text(raw)
        return raw if unquoted is None else unquoted
    return raw


def parse_params(pairs: tuple[str, ...], as_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if as_json is not None:
        try:
            loaded = json.loads(as_json)
        except json.JSONDecodeError as e:
            raise UsageError("--params-json", f"not valid JSON: {e}", "fix the JSON") from None
        except RecursionError:
            raise UsageError("--params-json", "nested too deeply", "flatten it") from None
        except ValueError as e:  # a number of more than 4,300 digits
            raise UsageError("--params-json", str(e), "quote it") from None
        if not isinstance(loaded, dict):
            raise UsageError("--params-json", "must be a JSON object", 'write {"key": value, ...}')
        params.update(loaded)
    params.update(parse_param(p) for p in pairs)
    return params


def read_context(file: BinaryIO) -> str:
    """The text of ``--context-file``, read no further than a context may be long (a UTF-8
    character is at most 4 bytes), so ``/dev/zero`` or a huge file ends at once."""
    most = MAX_CONTEXT * 4
    try:
        data = file.read(most + 1)
    except OSError as e:
        raise UsageError(
            "--context-file", f"cannot read it: {e}", "name a file you may read"
        ) from None
    if len(data) > most:
        raise UsageError(
            "--context-file",
            f"is over the {MAX_CONTEXT:,} characters a context may hold",
            "give a shorter file",
        )
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise UsageError(
            "--context-file", f"is not UTF-8 (byte {e.start + 1})", "save it as UTF-8"
        ) from None


def shown(text: object) -> str:
    """Text from outside on one line for the terminal: no control or format characters
    (no escape sequence reaches the terminal), blanks collapsed."""
    return " ".join(_NOT_PRINTABLE_ASCII.sub(_visible, str(text)).split())


def outcome(request: Request) -> str:
    """Why a request that was waited for will not run: who decided, and their reason."""
    if request.status is Status.TIMED_OUT:
        until = f" by {format_ts(request.expires)}" if request.expires else ""
        return f"timed out: nobody decided{until}"
    if request.status is Status.FAILED:  # approved, run by the daemon, failed: all before we saw
        return f"failed after it was approved: {shown(request.error or '(no error recorded)')}"
    if request.status is Status.CANCELLED:
        who = request.history[-1].by if request.history else request.requested_by
        return f"cancelled by {shown(who)}"
    if request.decided_by:
        who = shown(request.decided_by)
    elif request.rule:  # refused by a block rule, not by a person
        who = f"rule {shown(request.rule)}"
    else:
        who = "unknown"
    reason = shown(request.reason or "")
    return f"{request.status} by {who}" + (f": {reason}" if reason else " (no reason given)")


def listed_json(request: Request, votes: Count | None = None) -> dict[str, Any]:
    data = request_json(request, votes)
    del data["history"]
    return data


def ruling_json(ruling: Ruling, timeout: Any) -> dict[str, Any]:
    return {
        "decision": str(ruling.decision),
        "risk": str(ruling.risk),
        "timeout": format_duration(timeout),
        "rule": ruling.rule,
        "reason": ruling.reason,
        "approvers": sorted(ruling.approvers) if ruling.approvers is not None else None,
        "editable": ruling.editable,
        "matches": [
            {"rule": m.rule, "decision": str(m.decision), "explanation": m.explanation}
            for m in ruling.matches
        ],
    }
