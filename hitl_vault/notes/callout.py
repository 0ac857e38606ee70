"""The callout under a note's title: what the reader should know about its status, and how to
decide so that it counts."""

from __future__ import annotations

from datetime import datetime

from ..model import Status
from ..policy.quorum import former_ways, proven_channels, proven_ways
from ..text import inline
from .claims import unclaimed

# How the callout of a request decided by votes begins.
VOTES_CALLOUT = "> [!question] Waiting for approvals until "


def callout(
    status: Status,
    expires: datetime | None,
    rule: str,
    reason: str | None,
    edited: str | None = None,
    waiting: str | None = None,
    proven: frozenset[str] | None = None,
    inbox: str | None = None,
    *,
    marked: bool = True,
) -> list[str]:
    """The callout under the title: what the reader should know about this status.

    ``edited``: how the params were last edited while pending (``amount 1500 → 1000``),
    shown so that whoever decides later sees it before approving. ``waiting``: where the
    votes stand (``1 of 2 approvals; waiting for bob or carol``) for a request decided by
    votes. ``proven``: the channels its rules' ``authenticated:`` count an approval from
    (None: any decision counts), named with how to use them: under them, an approval
    written in the note counts for nothing, and the callout never says to write one;
    ``inbox``: the service's public URL, where its web inbox is, when the caller knows it.
    Someone's text in it (an edit's values, a rejection's reason) is :func:`unclaimed`
    (``marked=False``: as versions before the marking wrote it).
    """
    shown = unclaimed if marked else str
    ways = proven_ways(proven, inbox) if proven is not None else ""
    if not marked and proven is not None:  # before the web inbox was named beside others
        ways = former_ways(proven)
    if status is Status.PENDING and waiting is not None:
        until = expires.strftime("%Y-%m-%d %H:%M UTC") if expires else "it is decided"
        how = [
            "> Write `approved` or `rejected` after your own name under `votes:` (a reason",
            "> may follow after a comma); hitl-vault sets `status` once the votes decide.",
        ]
        if proven is not None:
            how = [
                f"> Its rules count only approvals proven through {proven_channels(proven)}:"
                f" approve with {ways}.",
                "> `approved` under `votes:` here approves nothing; `rejected` still rejects.",
            ]
        lines = [f"{VOTES_CALLOUT}{until}", *how, f"> Still needed: {inline(waiting)}"]
        if edited:
            lines.append(
                f"> **The params were edited since they were asked for:** {shown(inline(edited))}"
                " (votes before the edit no longer count)"
            )
        return lines
    if status is Status.PENDING:
        until = expires.strftime("%Y-%m-%d %H:%M UTC") if expires else "it is decided"
        lines = [
            f"> [!question] Waiting for your decision until {until}",
            "> Set `status` to `approved` or `rejected` (optionally fill `reason` and",
            "> `decided_by`), or move this note into Approved/ or Rejected/.",
        ]
        if proven is not None:
            lines[1:] = [
                f"> Its rules count only an approval proven through {proven_channels(proven)}:"
                f" approve with {ways}.",
                "> Setting `status` to `approved` here approves nothing; `rejected` still rejects.",
            ]
        if edited:
            lines.append(
                f"> **The params were edited since they were asked for:** {shown(inline(edited))}"
            )
        return lines
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
        title += f" (rule {inline(rule)})"
    lines = [f"> [!{kind}] {title}"]
    said = shown(inline(reason)) if reason and status is Status.REJECTED else ""
    if said:
        lines.append(f"> {said}")
    return lines


def callouts_written(
    status: Status,
    expires: datetime | None,
    rule: str,
    reason: str | None,
    edited: str | None = None,
    waiting: str | None = None,
    proven: frozenset[str] | None = None,
    inbox: str | None = None,
) -> list[list[str]]:
    """The callouts hitl-vault may have written for these values, to find one in a note
    and replace it: as :func:`callout` writes it now, without the inbox's address, and as
    versions before the marking of claims and the web inbox's naming wrote it."""
    found: list[list[str]] = []
    for lines in (
        callout(status, expires, rule, reason, edited, waiting, proven, inbox),
        callout(status, expires, rule, reason, edited, waiting, proven),
        callout(status, expires, rule, reason, edited, waiting, proven, marked=False),
    ):
        if lines not in found:
            found.append(lines)
    return found
