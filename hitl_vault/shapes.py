"""What a request looks like to a program or a terminal: the stable JSON shapes that the CLI's
``--json`` and the MCP tools print, and the one-line outcome a person reads."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .identity import proven_by
from .model import Kind, Request, Status
from .notes.render import history_line
from .policy.quorum import Count
from .policy.rules import Ruling
from .text import shown
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
        "credential": request.credential,
        "session": request.session,
        "client": request.client,
        "created": ts(request.created),
        "expires": ts(request.expires),
        "params": dict(request.params),
        "decided_by": request.decided_by,
        "decided_via": decided_via(request),
        "reason": request.reason,
        "decided_at": ts(request.decided_at),
        "executed_at": ts(request.executed_at),
        "result": request.result,
        "error": request.error,
        "path": str(request.path) if request.path else None,
        "context": request.context,
        "proposal": request.pitch.as_json() if request.pitch else None,
        **(votes_json(request, votes) if votes is not None else {}),
        "retry_of": request.retry_of,
        "retried_as": request.retried_as,
        "history": [history_line(t)[2:] for t in request.history],
    }


def decided_via(request: Request) -> str | None:
    """The channel the decision of one person was proven through (``api``), or None: a
    claimed name, votes (each says its own in ``votes_via``), or no decision yet."""
    for t in reversed(request.history):
        if t.kind is Kind.TRANSITION and t.from_status is Status.PENDING:
            return proven_by(t)
    return None


def votes_json(request: Request, votes: Count) -> dict[str, Any]:
    """``votes`` (name → approved | rejected | null), ``votes_via`` (name → the channel
    each recorded vote was proven through, or null), ``stage``, ``approvers`` still needed."""
    pending = request.status is Status.PENDING
    waiting = votes.waiting_for() if pending else []
    shown: dict[str, str | None] = dict.fromkeys(waiting or ())
    shown |= {t.by: str(t.to_status) for t in request.votes()}
    return {
        "votes": shown,
        "votes_via": {t.by: proven_by(t) for t in request.votes()},
        "stage": votes.stage_name if pending else None,
        "approvers": waiting,
    }


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


def decided_json(
    request_id: str, request: Request | None, votes: Count | None, error: str | None
) -> dict[str, Any]:
    """One ID given to ``approve`` or ``reject --json``: ``id`` (the whole id, or as given
    when it named none), ``ok`` (it counts as done for the exit code), ``error`` (why not,
    else null) and ``request`` (as :func:`request_json` prints it, null when it failed)."""
    return {
        "id": request_id,
        "ok": error is None,
        "error": error,
        "request": request_json(request, votes) if request is not None else None,
    }


def verified_json(problems: list[str], requests: int, at: datetime) -> dict[str, Any]:
    """``verify --json``: ``ok``, how many ``requests``, each of the ``problems`` (one line
    each, as ``verify`` prints them) and when it was ``checked_at``."""
    return {
        "ok": not problems,
        "requests": requests,
        "problems": problems,
        "checked_at": format_ts(at),
    }


def tested_json(results: list[tuple[str, str | None]]) -> dict[str, Any]:
    """``notify test --json``: ``ok`` (every target got it, and there is one) and per target
    its ``target`` (as written, secrets left as ${NAME}), ``delivered`` and ``error``."""
    targets = [{"target": t, "delivered": e is None, "error": e} for t, e in results]
    return {"ok": bool(targets) and all(t["delivered"] for t in targets), "targets": targets}


def ruling_json(
    ruling: Ruling, timeout: Any, would: tuple[str, str] | None = None
) -> dict[str, Any]:
    """What ``rules check --json`` prints: what the rules say (``decision``) and, given
    ``would`` (the decision in effect and why it differs), what ``submit`` would do."""
    applied, why = would if would is not None else (str(ruling.decision), "")
    return {
        "decision": str(ruling.decision),
        "would": str(applied),
        "would_reason": why,
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
