"""What to say: the plain-text message for one event of one request, with what a human
needs to decide and a link that opens the note in Obsidian (by its name, so it still
opens the note once it has moved to another folder)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

from ..identity import proof_in
from ..model import Kind, Request, Status, Transition
from ..policy.pitch import Pitch
from ..text import NOT_PRINTABLE_ASCII, fenced, visible
from .config import DECIDE_EVENTS, Event
from .send import MESSAGE_LIMIT, Message


def obsidian_uri(vault_name: str, file_rel_path: str | PurePath) -> str:
    """``obsidian://open?vault=NAME&file=PATH``, each value percent-encoded (``/`` too).

    The path is vault-relative with ``/`` between folders and keeps its ``.md``
    (Obsidian accepts it with or without).
    """
    path = PurePath(file_rel_path).as_posix()
    return f"obsidian://open?vault={quote(vault_name, safe='')}&file={quote(path, safe='')}"


def note_link(vault_name: str, note: str | PurePath) -> str:
    """The Obsidian link to a request's note by its file name alone, no folder.

    A note moves (Pending_Approval/ to Approved/, then Done/ or Rejected/) after its
    message went out, so a link naming the folder would break. Obsidian's ``file=``
    takes "a file name or a vault-relative path" and finds a bare name the way it
    resolves a ``[[wikilink]]``; every note is named ``<request id>.md``, unique in the
    vault, so the name alone opens it wherever it rests now.
    """
    return obsidian_uri(vault_name, PurePath(note).name)


def _plain(text: object, limit: int) -> str:
    """Text from outside on one line: no format or control characters, at most ``limit``."""
    flat = " ".join(NOT_PRINTABLE_ASCII.sub(visible, str(text)).split())
    return _cut(flat, limit)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: max(limit - 1, 0)] + "…"


def _paragraphs(text: str) -> str:
    """Several lines of text from outside: line breaks kept, nothing invisible."""
    lines = [NOT_PRINTABLE_ASCII.sub(visible, line).rstrip() for line in text.splitlines()]
    return "\n".join(lines).strip()


def _minute(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%MZ")


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


# How many lines of a diff a message shows (the note has it whole).
DIFF_LINES = 20


def _proposal(pitch: Pitch | None) -> list[str]:
    """The requester's case: confidence, reasoning, alternatives, risk factors (bounded)."""
    if pitch is None or not pitch.proposed:
        return []
    lines = [""]
    if pitch.confidence is not None:
        lines.append(f"Confidence (the requester's own): {pitch.confidence:g}")
    if pitch.reasoning:
        lines.append(f"Reasoning: {_plain(pitch.reasoning, 600)}")
    for title, items in (
        ("Alternatives", pitch.alternatives),
        ("Risk factors", pitch.risk_factors),
    ):
        if items:
            lines.append(f"{title}:")
            lines += [f"- {_plain(item, 200)}" for item in items[:5]]
            if len(items) > 5:
                lines.append(f"…and {len(items) - 5} more")
    return lines


def _diff(pitch: Pitch | None) -> list[str]:
    """The first DIFF_LINES lines of the diff, fenced so no line of it can end the block."""
    if pitch is None or not pitch.diff:
        return []
    lines = pitch.diff.splitlines()
    by = "as the agent's side computed it" if pitch.diff_by == "agent" else "against the file"
    more = len(lines) - DIFF_LINES
    shown = [_cut(line, 200) for line in lines[:DIFF_LINES]]
    if more > 0:
        shown.append(f"… {more} more lines in the note")
    return ["", f"Diff ({by}):", *fenced("\n".join(shown), "diff")]


def _headline(event: Event, request: Request) -> str:
    by = f" by {_plain(request.decided_by, 60)}" if request.decided_by else ""
    return {
        Event.PENDING: "waiting for approval",
        Event.REMINDER: "still waiting for approval",
        Event.ESCALATED: "escalated, waiting for approval",
        Event.APPROVED: f"approved{by}",
        Event.REJECTED: f"rejected{by}",
        Event.TIMED_OUT: "timed out, nobody decided",
        Event.CANCELLED: f"cancelled{by}",
        Event.EXECUTED: "executed",
        Event.FAILED: "failed",
    }[event]


def _outcome(event: Event, request: Request) -> list[str]:
    """What came of the request: who decided, why, and what running it gave."""
    who = _plain(request.decided_by, 100) if request.decided_by else "unknown"
    when = f" at {_minute(request.decided_at)}" if request.decided_at else ""
    lines = []
    if event in (Event.APPROVED, Event.REJECTED, Event.CANCELLED):
        lines.append(f"Decided: {event} by {who}{when}")
    elif event in (Event.EXECUTED, Event.FAILED) and request.decided_by:
        lines.append(f"Decided: approved by {who}{when}")
    if request.reason:
        lines.append(f"Reason: {_plain(request.reason, 300)}")
    if event is Event.TIMED_OUT:
        until = f" before {_minute(request.expires)}" if request.expires else ""
        lines.append(f"Outcome: nobody decided{until}; it will never run")
    if event is Event.EXECUTED:
        lines.append(f"Result: {_plain(request.result or '(none)', 400)}")
    if event is Event.FAILED:
        lines.append(f"Error: {_plain(request.error or '(not recorded)', 400)}")
    return lines


def compose(
    event: Event | str,
    request: Request,
    *,
    note: str,
    vault_name: str,
    why: str = "",
    context: str | None = None,
    lead: Sequence[str] = (),
    how: Sequence[str] | None = None,
    title_lead: str = "",
) -> Message:
    """The plain-text message for one event of one request, at most MESSAGE_LIMIT characters.

    ``note`` is the note's vault-relative path, ``why`` the rule's explanation and
    ``context`` what the agent said about it (by default the request's own
    ``context``). When it is too long, params are cut first (the last line then
    says "…and N more"), then the context. The message is marked ``cut`` whenever it
    does not show every param exactly as it would run: one left out, or a key or value
    shown otherwise (cut short, its whitespace folded onto one line, an invisible
    character left out).
    A message to one person puts ``lead`` lines first (never cut: the decision link),
    says ``how`` to decide instead of the note and CLI lines, and starts its title
    with ``title_lead``.
    """
    event = Event(str(event))
    summary = request.summary or request.action
    title = f"{title_lead}[{request.risk}] {_plain(summary, 150)} — {_headline(event, request)}"
    title = _cut(title, 250)
    rule = _plain(request.rule, 100) or "(none)"
    head = [*lead, *([""] if lead else [])]
    head += [_plain(summary, 300), "", f"Action: {_plain(request.action, 64)}"]
    # The note's form "Matched rule `x`: <why>" need not name the rule twice.
    reason = re.sub(rf"^Matched rule `{re.escape(request.rule)}`(?:: |\.$)", "", why.strip())
    tail = [f"Rule: {rule}" + (f" — {_plain(reason, 400)}" if reason else "")]
    if request.requested_by:
        tail.append(f"Requested by: {_plain(request.requested_by, 100)}")
    if event in DECIDE_EVENTS:
        tail.append(f"Decide by: {_minute(request.expires)}" if request.expires else "No expiry")
    tail += _outcome(event, request)
    tail += _diff(request.pitch) + _proposal(request.pitch)
    end = [""]
    if event in DECIDE_EVENTS and how is not None:
        end += list(how)
    elif event in DECIDE_EVENTS:
        end += [
            "To decide: set status: approved or status: rejected in the note, or run",
            f"  hitl-vault approve {request.id}",
            f"  hitl-vault reject {request.id}",
        ]
    end += [f"Note: {note}", f"Open in Obsidian: {note_link(vault_name, note)}"]
    shown = [(_plain(key, 60), _plain(_value(value), 200)) for key, value in request.params.items()]
    params = [f"- {key}: {value}" for key, value in shown]
    # A key or value shown otherwise than it runs (cut, whitespace folded, an invisible
    # character left out) makes the message one that does not show all that would run.
    altered = any(
        (key, value) != (str(k), _value(v))
        for (key, value), (k, v) in zip(shown, request.params.items(), strict=True)
    )
    story = _paragraphs((request.context or "") if context is None else context)

    def body(shown: int, context_text: str) -> str:
        lines = list(head)
        if params:
            lines.append("Params:")
            lines += params[:shown]
            if shown < len(params):
                lines.append(f"…and {len(params) - shown} more")
        lines += tail
        if context_text:
            lines += ["", "Context:", context_text]
        return "\n".join(lines + end)

    room = MESSAGE_LIMIT - len(title)
    if len(body(len(params), story)) <= room:
        return Message(title, body(len(params), story), cut=altered)
    low, high = 0, len(params)  # the most params that fit with the whole context
    while low < high:
        mid = (low + high + 1) // 2
        low, high = (mid, high) if len(body(mid, story)) <= room else (low, mid - 1)
    if len(body(low, story)) <= room:
        return Message(title, body(low, story), cut=altered or low < len(params))
    spare = room - len(body(0, ""))
    if story and spare > len("\n\nContext:\n") + 20:
        text = body(0, _cut(story, spare - len("\n\nContext:\n")))
    else:
        text = body(0, "")
    return Message(title, _cut(text, room), cut=altered or bool(params) or len(text) > room)


def in_your_name(request: Request, step: Transition, *, note: str, vault_name: str) -> Message:
    """What a person's own channels are told when a decision or a vote is recorded in
    their name (``step``): which request, which decision, through which channel, and
    from where when the service knew. A name nobody proved (a note edit, ``--by``, a
    script) says so, so that someone who did not decide learns it at once."""
    approve = step.to_status is Status.APPROVED
    if step.kind is Kind.VOTED:
        what = "a vote to approve" if approve else "a vote to reject"
        counted = _plain(step.details[0], 40) if step.details else ""
        decision = f"approved (vote {counted})" if approve else "rejected (a vote that rejects it)"
    else:
        what = "an approval" if approve else "a rejection"
        decision = str(step.to_status)
    who = _plain(step.by, 100)
    summary = request.summary or request.action
    title = f"hitl-vault: {what} in your name ({who}) — {_plain(summary, 120)}"
    proof = proof_in(step)
    if proof is not None:
        channel = f"via {proof.via}, proven by the service"
    else:
        channel = "not proven: a note edit, --by NAME or a script gave your name"
    lines = [
        f"{what[0].upper()}{what[1:]} was recorded in your name in the vault {vault_name!r}.",
        "",
        f"Request: {request.id}",
        f"Summary: {_plain(summary, 300)}",
        f"Action: {_plain(request.action, 64)}",
        f"Decision: {decision}",
    ]
    if step.reason:
        lines.append(f"Reason: {_plain(step.reason, 300)}")
    lines += [f"At: {_minute(step.at)}", f"Channel: {channel}"]
    if proof is not None and proof.client:
        lines.append(f"From: {_plain(proof.client, 200)}")
    lines += [
        "",
        "If this was not you, reject the request while it is pending and tell the service's owner.",
        f"Note: {note}",
        f"Open in Obsidian: {note_link(vault_name, note)}",
    ]
    return Message(title[:200], _cut("\n".join(lines), MESSAGE_LIMIT - len(title[:200])))
