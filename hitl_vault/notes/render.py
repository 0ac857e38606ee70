"""What hitl-vault writes into notes: YAML values that read back unchanged, and new notes."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from ..identity import proof_in
from ..model import Kind, Request, Status, Transition
from ..policy.pitch import Pitch
from ..text import fenced, history_text, inline, one_line
from ..times import format_ts
from .callout import callout
from .claims import unclaimed
from .strict_yaml import dump_params, yaml_scalar

# History lines kept rendered (see :func:`history_line`): a few hundred bytes each.
LINES_KEPT = 4096

# --- text from outside hitl-vault, in a note's body or Dashboard.md ---------------------


# A rule's name shown as code, as hitl-vault writes it, only when nothing in it needs escaping.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*(?: [A-Za-z0-9_.-]+)*")
# The sentences notestate.explanation and the note recreation write around a rule's name.
_MATCHED = re.compile(r"Matched rule `([^`]*)`(?:(\.)|: (.*))")
_NONE_MATCHED = re.compile(r"No rule matched; `([^`]*)` decided\.")


def _name(name: str) -> str:
    return f"`{name}`" if _PLAIN_NAME.fullmatch(name) else inline(name)


def _explained(explanation: str) -> list[str]:
    """The lines under the Details table, one per rule: hitl-vault's frame, the rest escaped.

    The rule names and sentences come from hitl-vault.yaml and from Python rules, and
    describe the submitted params, so only the fixed ``Matched rule `name`:`` frame is
    kept as Markdown. A line break inside a rule's sentence becomes a space.
    """
    lines: list[str] = []
    for line in explanation.splitlines():
        if m := _MATCHED.fullmatch(line):
            end = m.group(2) or ": " + unclaimed(inline(m.group(3)))
            lines.append(f"Matched rule {_name(m.group(1))}{end}")
        elif m := _NONE_MATCHED.fullmatch(line):
            lines.append(f"No rule matched; {_name(m.group(1))} decided.")
        elif text := inline(line):
            if lines:
                lines[-1] = f"{lines[-1]} {text}"
            else:
                lines.append(text)
    return lines


def _cell(value: Any) -> str:
    """A Details table cell: the text escaped (its ``|`` too), JSON for other values.
    A text of several lines keeps them: each line escaped on its own, joined by the
    ``<br>`` a table cell needs for a line break (escaped text holds no ``<`` of its own)."""
    if not isinstance(value, str):
        return unclaimed(inline(json.dumps(value, ensure_ascii=False)))
    lines = [unclaimed(inline(line)) for line in value.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "<br>".join(lines)


def details_table(params: Mapping[str, Any]) -> list[str]:
    """The lines under ``## Details``: the params that would run, one row each."""
    if not params:
        return ["No parameters."]
    rows = [f"| {_cell(k)} | {_cell(v)} |" for k, v in params.items()]
    return ["| param | value |", "|---|---|", *rows]


def context_section(context: str | None) -> list[str]:
    r"""The ``## Context`` section: what the requester said, as plain text; [] for none.

    Each line of the text is escaped on its own with :func:`inline`, and runs of blank
    lines become one, so its lines and paragraphs stay as the agent wrote them (reading
    view shows a line break per line), in the note's own font. A fenced code block would
    keep the text verbatim, but shows prose as code, needs a fence longer than any
    inside, and hitl-vault's own line-based readers (the ``## History`` heading, history
    lines, the status callout) would still see the lines inside it. Escaped, no line can
    be read as anything but text: not a ``---``, a heading (``\## History``), a history
    line (``\- 2026-…``), a callout, a list, a table, a link, HTML or a Dataview query.
    Like every text from outside, it is shown, never trusted: hitl-vault reads nothing
    back from this section (the journal keeps the context as given).
    """
    lines: list[str] = []
    for line in (context or "").splitlines():
        shown = unclaimed(inline(line))
        if shown or (lines and lines[-1]):
            lines.append(shown)
    while lines and not lines[-1]:
        lines.pop()
    return ["## Context", *lines] if lines else []


def proposal_section(pitch: Pitch | None) -> list[str]:
    """The ``## Proposal`` section: the requester's reasoning, confidence, alternatives and
    risk factors, escaped like the context (:func:`context_section`); [] for none."""
    if pitch is None or not pitch.proposed:
        return []
    lines = ["## Proposal"]
    if pitch.confidence is not None:
        lines.append(f"**Confidence:** {pitch.confidence:g} (as the requester asserts it)")
    if pitch.reasoning:
        lines += ["", "**Reasoning:**", *context_section(pitch.reasoning)[1:]]
    for title, items in (
        ("Alternatives", pitch.alternatives),
        ("Risk factors", pitch.risk_factors),
    ):
        if items:
            lines += ["", f"**{title}:**", *(f"- {unclaimed(inline(item))}" for item in items)]
    return lines


DIFF_BY_AGENT = "Diff as the agent's side computed it (the service could not read the file):"
DIFF_BY_GATE = "Diff against the file as the gate read it:"


def diff_section(pitch: Pitch | None) -> list[str]:
    """The ``## Diff`` section: what the edit will change, in a fenced block no line of the
    diff can close; it says who made it. [] for none."""
    if pitch is None or not pitch.diff:
        return []
    label = DIFF_BY_AGENT if pitch.diff_by == "agent" else DIFF_BY_GATE
    return ["## Diff", label, "", *fenced(pitch.diff, "diff")]


def origin_line(request: Request) -> list[str]:
    """The line that says a request was asked through the service: the agent token that
    asked (its id), and the session and client the agent said (its word, escaped); [] for
    a request asked another way."""
    if request.credential is None:
        return []
    said = [
        f"{label} {inline(value)}"
        for label, value in (("session", request.session), ("client", request.client))
        if value
    ]
    token = inline(request.credential)
    line = (
        f"Asked through the service with the agent token {token} of {inline(request.requested_by)}"
    )
    return [line + (f" ({unclaimed(', '.join(said))})." if said else ".")]


def render_new_note(
    request: Request,
    explanation: str,
    votes: Sequence[str] = (),
    waiting: str | None = None,
    proven: frozenset[str] | None = None,
    inbox: str | None = None,
) -> str:
    """The whole text of a new request note, as the README shows one, with ``\\n`` endings.

    ``votes``: the names whose empty line the ``votes:`` map starts with, and ``waiting``
    what the votes still need, for a request decided by votes; ``proven``: the channels
    its rules' ``authenticated:`` accept, and ``inbox`` the service's public URL, where
    its web inbox is, if known (see :func:`callout`)."""
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
    out.append(dump_params(request.params).rstrip("\n"))
    out += [f"decided_by: {yaml_scalar(request.decided_by)}".rstrip()]
    out += [f"reason: {yaml_scalar(request.reason)}".rstrip()]
    if waiting is not None:
        out += ["votes:", *(f"  {yaml_scalar(name)}:" for name in votes)]
    out.append("---")
    out.append(f"# {unclaimed(inline(request.summary)) or inline(request.action)}")
    out.append("")
    out += callout(
        request.status, request.expires, request.rule, request.reason, None, waiting, proven,
        inbox,
    )  # fmt: skip
    out += ["", "## Details", *details_table(request.params)]
    explained = _explained(explanation)
    if explained:
        out += ["", *explained]
    asked = origin_line(request)
    if asked:
        out += ["", *asked]
    for section in (
        diff_section(request.pitch),
        proposal_section(request.pitch),
        context_section(request.context),
    ):
        if section:
            out += ["", *section]
    out += ["", "## History"]
    out += [history_line(t) for t in request.history]
    return "\n".join(out) + "\n"


# --- history lines ------------------------------------------------------------------

_HISTORY_RE = re.compile(
    # A vote first: its name (any a person may have, "Mary Ann" or "bob → x" too) up to
    # the count that always follows it (so a name holding "approved" is read whole), then
    # the vote; never past a separator, so no other line reads as one.
    r"^- (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ) · ((?:\S(?:(?! · ).)*? (?:approved|rejected)(?= \())"
    r"|(?:\w+ → \w+)|(?:kept \w+)|(?:params edited)|(?:escalated)"
    r"|(?:[A-Za-z0-9][\w.@+-]* (?:approved|rejected))"
    r"|(?:(?:retry of|retried as) \[\[[\w.-]+\]\]))(?=\s|$)"
)


_REFUSED_VOTE = re.compile(r"(.+?)'s vote \((approved|rejected)\) not counted: (.*)", re.S)


def refused_vote(name: str, vote: Status, why: str) -> str:
    """The history detail of a vote line that did not count (see :func:`read_refused_vote`)."""
    return f"{name}'s vote ({vote}) not counted: {why}"


def read_refused_vote(t: Transition) -> tuple[str, str, str] | None:
    """(name, vote, why) of an entry recording a vote line that did not count, else None."""
    if t.kind is not Kind.IGNORED or not t.details:
        return None
    m = _REFUSED_VOTE.fullmatch(t.details[0])
    return (m.group(1), m.group(2), m.group(3)) if m else None


def history_key(line: str) -> tuple[str, str]:
    """(timestamp, move) of a history line, or ("", "") for anything else."""
    m = _HISTORY_RE.match(line.strip())
    return (m.group(1), m.group(2)) if m else ("", "")


def history_line(t: Transition, separators_kept: bool = False, *, marked: bool = True) -> str:
    """The Markdown list item for a step, exactly as the note shows it.

    ``- <time> · <move>`` is hitl-vault's and starts every history line
    (:func:`history_key` finds them by it); who, why and the details come from
    outside, lose any `` · `` and ``→`` (:func:`history_text`) and are escaped as inline
    Markdown (:func:`inline`); a reason or a detail that claims a channel is
    :func:`unclaimed` (the ``by alice via api`` the service proved never is).
    ``separators_kept``: the line as versions before :func:`history_text` wrote it, and
    ``marked=False`` as versions before the marking did (notes keep what was written:
    :func:`history_lines_written`).

    A line is a function of its step alone, and the same steps are shown again and again
    (the note, the daemon's log line, every answer of the API, the dashboard each second):
    the lines of the last :data:`LINES_KEPT` steps are kept.
    """
    if type(t.details) is not tuple:  # (a step built by hand with a list: not hashable)
        return _history_line(t, separators_kept, marked)
    return _kept_history_line(t, separators_kept, marked)


def _history_line(t: Transition, separators_kept: bool, marked: bool) -> str:
    def outside(text: str, arrows: bool = True) -> str:
        return inline(one_line(text) if separators_kept else history_text(text, arrows=arrows))

    def said(text: str, arrows: bool = True) -> str:  # someone's words, beside no proof
        shown = outside(text, arrows)
        return unclaimed(shown) if marked and not separators_kept else shown

    parts = [format_ts(t.at), t.move]
    proof = proof_in(t)  # the service proved who: "by alice via api from 10.0.0.5"
    via = ""
    if proof is not None:
        via = f" via {proof.via}" + (f" from {outside(proof.client)}" if proof.client else "")
        t = replace(t, details=t.details[: -2 if proof.client else -1])
    if t.kind is Kind.VOTED and t.details:  # alice approved (1 of 2) [via api]
        parts[1] += f" ({outside(t.details[0])}){via}"
        t = replace(t, by="", details=t.details[1:])
    elif t.kind is Kind.ESCALATED and t.details:  # escalated to dave
        parts[1] += f" {outside(t.details[0])}"
        t = replace(t, by="", details=t.details[1:])
    by = outside(t.by)
    done = t.to_status in (Status.EXECUTED, Status.FAILED)  # "by executor" says nothing
    if by and (t.kind is Kind.LINKED or (t.kind is not Kind.IGNORED and not done)):
        parts.append(f"by {by}{via}")
    reason = said(t.reason)
    if reason:
        parts.append(f'"{reason}"')
    if t.kind is not Kind.LINKED:  # a link's detail is its move; an edit's arrows are ours
        parts.extend(text for text in (said(d, arrows=False) for d in t.details) if text)
    return "- " + " · ".join(parts)


_kept_history_line = functools.lru_cache(maxsize=LINES_KEPT)(_history_line)


def history_lines_written(t: Transition) -> tuple[str, ...]:
    """Each line hitl-vault's versions may have written for ``t`` in a note (``verify``
    holds a note's line against them): now, before the marking of claims, before
    :func:`history_text`, before the escaping."""
    return tuple(
        dict.fromkeys(
            (
                history_line(t),
                history_line(t, marked=False),
                history_line(t, True),
                unescaped_history_line(t),
            )
        )
    )


def unescaped_history_line(t: Transition) -> str:
    """The line as versions before the escaping wrote it (notes keep what was written)."""
    if t.kind in (Kind.VOTED, Kind.ESCALATED):  # no version before the escaping wrote these
        return history_line(t)
    move = f"{t.from_status or 'created'} → {t.to_status}"  # edits were written so too
    parts = [format_ts(t.at), f"kept {t.to_status}" if t.kind is Kind.IGNORED else move]
    if t.kind is not Kind.IGNORED and t.by and t.to_status not in (Status.EXECUTED, Status.FAILED):
        parts.append(f"by {one_line(t.by)}")
    if t.reason:
        parts.append(f'"{one_line(t.reason)}"')
    parts.extend(one_line(d) for d in t.details if d)
    return "- " + " · ".join(parts)
